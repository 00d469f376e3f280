"""ctrhost.fleet.template through ansible-playbook on localhost (connection local, tmp root).

Shape of each case: check mode -> nothing written -> apply -> verify by an independent path
(GNU tar listings, the source binary's hash, the OCI archive's own index) -> apply again,
changed=false.
"""

import glob
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import procfs as _procfs
from ansible_collections.ctrhost.fleet.plugins.module_utils.template import tarsafe as _tarsafe

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAYBOOK = os.path.join(REPO, ".venv", "bin", "ansible-playbook")
COLLECTIONS = os.path.join(REPO, ".cache", "pytest-collections")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="templates keep numeric ownership: needs root"),
    pytest.mark.skipif(not os.access(PLAYBOOK, os.X_OK), reason="no .venv/bin/ansible-playbook"),
]


def play(workdir, task, check=False, loop=None):
    """Run one ``ctrhost.fleet.template`` task (over ``loop`` when given, as ``item``);
    return (rc, registered result)."""
    book = os.path.join(workdir, "tp-play.yml")
    out = os.path.join(workdir, "tp-result.json")
    if os.path.exists(out):
        os.unlink(out)
    tasks = [
        dict({"ctrhost.fleet.template": task, "register": "r", "ignore_errors": True},
             **(dict(loop=loop) if loop is not None else {})),
        {"ansible.builtin.copy": dict(content="{{ r | to_json }}", dest=out), "check_mode": False,
         "diff": False},
        {"ansible.builtin.fail": dict(msg="task failed"), "when": "r is failed"},
    ]
    with open(book, "w") as handle:
        json.dump([dict(hosts="localhost", connection="local", gather_facts=False, tasks=tasks)],
                  handle)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR="1",
               ANSIBLE_RETRY_FILES_ENABLED="0")
    env.pop("ANSIBLE_CONFIG", None)  # the repository's config points at the lab inventory
    cmd = [PLAYBOOK, "-i", "localhost,", "--diff", "-e",
           json.dumps(dict(ansible_python_interpreter=sys.executable)), book]
    if check:
        cmd.append("--check")
    # cwd = workdir: the repository's ansible.cfg (lab inventory) does not apply here.
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=1800,
                          stdin=subprocess.DEVNULL, check=False)
    assert os.path.exists(out), "no task result\n--- stdout\n%s\n--- stderr\n%s" % (
        proc.stdout, proc.stderr)
    with open(out) as handle:
        return proc.returncode, json.load(handle)


def sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def residue(root):
    """Everything in the templates directory, hidden work directories included."""
    path = os.path.join(root, "templates")
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


@pytest.fixture(scope="module")
def busybox(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tp-bb") / "tp-busybox.tar.gz")
    proc = subprocess.run([os.path.join(REPO, "scripts", "make-busybox-template"), out],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == out
    return out


@pytest.fixture
def root(tmp_path):
    path = str(tmp_path / "tp-root")
    yield path
    _tarsafe.safe_rmtree(path)


def test_make_busybox_template_is_deterministic(busybox, tmp_path):
    again = str(tmp_path / "tp-again.tar.gz")
    subprocess.run([os.path.join(REPO, "scripts", "make-busybox-template"), again],
                   check=True, capture_output=True)
    assert sha256(again) == sha256(busybox)
    names = subprocess.run(["tar", "-tzf", busybox], capture_output=True, text=True,
                           check=True).stdout.split()
    for wanted in ("./bin/busybox", "./bin/sh", "./etc/passwd", "./etc/group", "./etc/hostname",
                   "./tmp/", "./proc/", "./sys/", "./dev/", "./root/"):
        assert wanted in names


def test_src_check_mode_apply_idempotent(busybox, root, tmp_path):
    task = dict(name="tpbb", src=busybox, root=root)
    rc, res = play(str(tmp_path), task, check=True)
    assert rc == 0 and res["changed"] is True
    assert res["diff"]["after"]["sha256"] == sha256(busybox) and res["diff"]["before"] == {}
    assert not os.path.exists(root), "check mode wrote something"

    rc, res = play(str(tmp_path), task)
    assert rc == 0 and res["changed"] is True, res
    rootfs = os.path.join(root, "templates", "tpbb", "rootfs")
    # Independent path: GNU tar's listing of the tarball == the tree on disk.
    listed = subprocess.run(["tar", "-tzf", busybox], capture_output=True, text=True,
                            check=True).stdout.split()
    listed = {n[2:].rstrip("/") for n in listed if n not in ("./",)}
    on_disk = set()
    for top, dirs, files in os.walk(rootfs):
        for leaf in dirs + files:
            on_disk.add(os.path.relpath(os.path.join(top, leaf), rootfs))
    assert on_disk == listed
    busybox_bin = subprocess.run(["dpkg", "-L", "busybox-static"], capture_output=True,
                                 text=True, check=False).stdout
    host_bin = next((p for p in busybox_bin.split() if p.endswith("/bin/busybox")), "/bin/busybox")
    assert sha256(os.path.join(rootfs, "bin", "busybox")) == sha256(host_bin)
    assert os.readlink(os.path.join(rootfs, "bin", "sh")) == "/bin/busybox"
    assert oct(os.stat(os.path.join(rootfs, "tmp")).st_mode & 0o7777) == "0o1777"
    with open(os.path.join(root, "templates", "tpbb", "template.json")) as handle:
        meta = json.load(handle)
    assert meta["sha256"] == sha256(busybox) == res["sha256"]
    assert meta["size"] == res["size"] >= os.path.getsize(host_bin)
    assert meta["source"] == dict(type="src", src=busybox)
    assert res["duration"] > 0 and res["diff"]["after"] == meta

    for check in (True, False):
        rc, res = play(str(tmp_path), task, check=check)
        assert rc == 0 and res["changed"] is False, res
    assert residue(root) == ["tpbb"]


@pytest.fixture(scope="module")
def oci_image(busybox, tmp_path_factory):
    """An OCI layout and an oci-archive made offline from the busybox rootfs."""
    for tool in ("umoci", "skopeo"):
        if shutil.which(tool) is None:
            pytest.skip("%s is not installed" % tool)
    base = tmp_path_factory.mktemp("tp-oci")
    layout, tree, archive = str(base / "layout"), str(base / "tree"), str(base / "tp-bb-oci.tar")
    os.mkdir(tree)
    subprocess.run(["tar", "-xzf", busybox, "-C", tree], check=True)
    for cmd in (["umoci", "init", "--layout", layout],
                ["umoci", "new", "--image", layout + ":tp"],
                ["umoci", "insert", "--image", layout + ":tp", tree, "/"],
                ["umoci", "config", "--image", layout + ":tp", "--config.cmd", "/bin/sh"],
                ["skopeo", "copy", "--quiet", "oci:%s:tp" % layout, "oci-archive:" + archive]):
        subprocess.run(cmd, check=True, capture_output=True)
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))
    digest = index["manifests"][0]["digest"].split(":", 1)[1]
    return dict(layout=layout, archive=archive, digest=digest)


@pytest.mark.parametrize("kind", ["oci-archive", "oci"])
def test_image_source(oci_image, root, tmp_path, kind):
    image = ("oci-archive:" + oci_image["archive"]) if kind == "oci-archive" else \
        "oci:%s:tp" % oci_image["layout"]
    task = dict(name="tpimg", image=image, root=root)
    rc, res = play(str(tmp_path), task, check=True)
    assert rc == 0 and res["changed"] is True and not os.path.exists(root)
    assert any("umoci unpack" in c for c in res["commands"])
    rc, res = play(str(tmp_path), task)
    assert rc == 0 and res["changed"] is True, res
    rootfs = os.path.join(root, "templates", "tpimg", "rootfs")
    assert sha256(os.path.join(rootfs, "bin", "busybox")) == sha256(
        os.path.join(oci_image["layout"], "..", "tree", "bin", "busybox"))
    assert os.readlink(os.path.join(rootfs, "bin", "sh")) == "/bin/busybox"
    # The digest recorded is the manifest digest the archive's own index names.
    assert res["sha256"] == oci_image["digest"]
    assert res["template"]["init"] == ["/bin/sh"]
    rc, res = play(str(tmp_path), task)
    assert rc == 0 and res["changed"] is False
    assert residue(root) == ["tpimg"]


def test_removal_refused_while_a_container_uses_it(busybox, root, tmp_path):
    rc, _res = play(str(tmp_path), dict(name="tpbb", src=busybox, root=root))
    assert rc == 0
    spec = os.path.join(root, "containers", "tpc1", "spec.json")
    os.makedirs(os.path.dirname(spec))
    with open(spec, "w") as handle:
        json.dump(dict(template="tpbb", command=["/bin/sh"]), handle)
    for check in (True, False):
        rc, res = play(str(tmp_path), dict(name="tpbb", state="absent", root=root), check=check)
        assert rc != 0 and res.get("failed") is True
        assert "tpc1" in res["msg"] and "force=true" in res["msg"] and res["users"] == ["tpc1"]
    assert os.path.isfile(os.path.join(root, "templates", "tpbb", "rootfs", "bin", "busybox"))
    os.unlink(spec)
    rc, res = play(str(tmp_path), dict(name="tpbb", state="absent", root=root), check=True)
    assert rc == 0 and res["changed"] is True and residue(root) == ["tpbb"]
    rc, res = play(str(tmp_path), dict(name="tpbb", state="absent", root=root))
    assert rc == 0 and res["changed"] is True and residue(root) == []
    rc, res = play(str(tmp_path), dict(name="tpbb", state="absent", root=root))
    assert rc == 0 and res["changed"] is False


def test_crafted_tarball_fails_and_leaves_nothing(root, tmp_path):
    bad = str(tmp_path / "tp-evil.tar.gz")
    with tarfile.open(bad, "w:gz") as tar:
        link = tarfile.TarInfo("etc")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc"
        tar.addfile(link)
        payload = b"tp-evil\n"
        info = tarfile.TarInfo("etc/tp-template-probe")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    rc, res = play(str(tmp_path), dict(name="tpevil", src=bad, root=root))
    assert rc != 0 and res["failed"] is True
    assert res["msg"] == ("src: unsafe archive member 'etc/tp-template-probe': it would be written "
                          "through the symbolic link 'etc' (-> /etc); nothing was extracted")
    assert res["field"] == "src" and res["member"] == "etc/tp-template-probe"
    assert not os.path.exists("/etc/tp-template-probe")
    assert residue(root) == []


def test_bad_names_fail_and_leave_nothing(busybox, root, tmp_path):
    names = ["tp/x", "tp..x", "tp x", "", "t" * 64]
    rc, res = play(str(tmp_path), dict(name="{{ item }}", src=busybox, root=root), loop=names)
    assert rc != 0 and [r["item"] for r in res["results"]] == names
    for one in res["results"]:
        assert one["failed"] is True and one["field"] == "name", one
        assert one["msg"].startswith("name: "), one
    assert not os.path.exists(root)


def test_option_rules_come_from_the_argument_spec(busybox, root, tmp_path):
    rc, res = play(str(tmp_path), dict(name="tpx", src=busybox, image="oci:/x", root=root))
    assert rc != 0 and "mutually exclusive" in res["msg"]
    rc, res = play(str(tmp_path), dict(name="tpx", url="file:///x.tgz", root=root))
    assert rc != 0 and "checksum" in res["msg"]
    rc, res = play(str(tmp_path), dict(name="tpx", debootstrap=dict(suite="b", colour="x"), root=root))
    assert rc != 0 and "colour" in res["msg"]
    assert not os.path.exists(root)


# ----------------------------------------------------------------------- debootstrap

def _apt_mirrors():
    """Binary archive URIs of the host's apt sources (one-line and deb822 formats)."""
    found = []
    files = glob.glob("/etc/apt/sources.list") + sorted(
        glob.glob("/etc/apt/sources.list.d/*.list") + glob.glob("/etc/apt/sources.list.d/*.sources"))
    for path in files:
        with open(path, errors="replace") as handle:
            text = handle.read()
        found += re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(https?://\S+)", text, re.M)
        for stanza in re.split(r"\n\s*\n", text):
            if re.search(r"^Types:(.*\s)?deb(\s|$)", stanza, re.M) and \
                    not re.search(r"^Enabled:\s*no", stanza, re.M | re.I):
                found += re.findall(r"^URIs:\s*(https?://\S+)", stanza, re.M)
    return found


def _debian_mirror(suite):
    """A reachable Debian archive serving ``suite``: the environment's, else the host's own."""
    candidates = [os.environ["CTRHOST_TEST_DEBIAN_MIRROR"]] \
        if os.environ.get("CTRHOST_TEST_DEBIAN_MIRROR") else _apt_mirrors()
    reasons = []
    for mirror in candidates:
        url = "%s/dists/%s/Release" % (mirror.rstrip("/"), suite)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                head = resp.read(4096).decode("utf-8", "replace")
        except OSError as exc:
            reasons.append("%s: %s" % (url, exc))
            continue
        if re.search(r"^Origin: Debian$", head, re.M):
            return mirror, None
        reasons.append("%s: not a Debian archive" % url)
    return None, "; ".join(reasons) or "no apt sources (set CTRHOST_TEST_DEBIAN_MIRROR)"


def _suite():
    if os.environ.get("CTRHOST_TEST_DEBIAN_SUITE"):
        return os.environ["CTRHOST_TEST_DEBIAN_SUITE"]
    with open("/etc/os-release") as handle:
        match = re.search(r"^VERSION_CODENAME=(\S+)", handle.read(), re.M)
    return match.group(1) if match else "bookworm"


@pytest.mark.slow
def test_debootstrap_minbase(root, tmp_path):
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed")
    suite = _suite()
    mirror, why = _debian_mirror(suite)
    if mirror is None:
        pytest.skip("no reachable Debian mirror for %s: %s" % (suite, why))
    task = dict(name="tpdeb", root=root, debootstrap=dict(suite=suite, mirror=mirror))
    rc, res = play(str(tmp_path), task, check=True)
    assert rc == 0 and res["changed"] is True and not os.path.exists(root)
    rc, res = play(str(tmp_path), task)
    assert rc == 0 and res["changed"] is True, res
    rootfs = os.path.join(root, "templates", "tpdeb", "rootfs")
    assert os.path.isfile(os.path.join(rootfs, "etc", "debian_version"))
    # Independent path: dpkg inside the tree counts the installed packages.
    out = subprocess.run(["chroot", rootfs, "dpkg-query", "-W", "-f", "${db:Status-Status}\\n"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out.count("installed") == res["template"]["packages"] > 50
    assert res["template"]["source"]["variant"] == "minbase"
    assert res["size"] > 50 * 1024 * 1024
    assert _procfs.mounts_below(root) == []
    rc, res = play(str(tmp_path), task)
    assert rc == 0 and res["changed"] is False
    assert residue(root) == ["tpdeb"]


# ----------------------------------------------------------------------- url (Ansible's open_url)

@pytest.fixture
def tarball_server(busybox):
    """The busybox tarball on 127.0.0.1, only for requests with the header X-Token: t0k and
    basic auth fleet:s3cret; every request's headers are recorded."""
    import base64
    import http.server
    import threading

    seen = []
    with open(busybox, "rb") as handle:
        body = handle.read()
    wanted = "Basic " + base64.b64encode(b"fleet:s3cret").decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(dict(self.headers))
            if self.headers.get("X-Token") != "t0k" or self.headers.get("Authorization") != wanted:
                self.send_response(403)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d/busybox.tar.gz" % server.server_address[1], seen
    server.shutdown()
    server.server_close()


def test_url_with_headers_auth_and_no_proxy(busybox, root, tarball_server, tmp_path, monkeypatch):
    url, seen = tarball_server
    # a proxy that does not exist: the download only works because use_proxy=false is honoured
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    task = dict(name="tpurl", url=url, checksum="sha256:" + sha256(busybox), root=root, use_proxy=False,
                url_username="fleet", url_password="s3cret", force_basic_auth=True)
    rc, res = play(str(tmp_path), dict(task, headers={"X-Token": "wrong"}))
    assert rc != 0 and res["field"] == "url" and "403" in res["msg"], res
    assert residue(root) == []  # nothing left by the failed download
    rc, res = play(str(tmp_path), dict(task, headers={"X-Token": "t0k"}))
    assert rc == 0 and res["changed"] and res["sha256"] == sha256(busybox), res
    assert os.path.isfile(os.path.join(root, "templates", "tpurl", "rootfs", "bin", "busybox"))
    assert seen[-1]["X-Token"] == "t0k" and seen[-1]["User-Agent"] == "ctrhost.fleet-template"
    recorded = json.dumps(res["template"])
    assert "s3cret" not in recorded and "t0k" not in recorded  # credentials never stored
