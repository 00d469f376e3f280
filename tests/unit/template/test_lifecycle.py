"""Template install/remove/info on a tmp root: idempotence, check mode, no residue.

Tarball sources run for real; debootstrap and skopeo are mocked at the command boundary.
"""

import hashlib
import io
import json
import os
import shutil
import tarfile

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.template import lifecycle as _template
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import (
    ConflictError,
    NotFoundError,
    ValidationError,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout


def make_tarball(path, files, bad=None):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        if bad:
            info = tarfile.TarInfo(bad)
            tar.addfile(info, io.BytesIO(b""))
    return str(path)


def sha(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


@pytest.fixture
def root(tmp_path):
    return str(tmp_path / "tp-root")


@pytest.fixture
def tarball(tmp_path):
    return make_tarball(tmp_path / "tp-bb.tar.gz", {"bin/busybox": b"B" * 1000, "etc/hostname": b"tp\n"})


def _read(path):
    with open(path) as handle:
        return handle.read()


def entries(root):
    """Everything in the templates dir, hidden work dirs included."""
    path = Layout(root).templates_dir
    return sorted(os.listdir(path)) if os.path.isdir(path) else None


# ----------------------------------------------------------------------- sources

def test_exactly_one_source():
    with pytest.raises(ValidationError, match="exactly one of src, url, debootstrap, image or busybox is required"):
        _template.normalize_source()
    with pytest.raises(ValidationError, match=r"\(got src, image\)"):
        _template.normalize_source(src="/x", image="oci:/y")


def test_source_normalisation(tarball, tmp_path):
    hexd = sha(tarball)
    assert _template.normalize_source(src=tarball, checksum=hexd.upper()) == dict(
        type="src", src=tarball, checksum="sha256:" + hexd)
    assert _template.normalize_source(url="https://h/x.tgz", checksum="sha256:" + hexd) == dict(
        type="url", url="https://h/x.tgz", checksum="sha256:" + hexd)
    deb = _template.normalize_source(debootstrap=dict(suite="bookworm", include=["vim", "curl", "vim"]))
    assert deb == dict(type="debootstrap", suite="bookworm", mirror=None, variant="minbase",
                       include=["curl", "vim"])
    layout = tmp_path / "tp-layout"
    layout.mkdir()
    assert _template.normalize_source(image="oci:%s:tag" % layout)["image"] == "oci:%s:tag" % layout
    assert _template.normalize_source(image="docker://docker.io/library/busybox")["type"] == "image"


@pytest.mark.parametrize("kwargs, field, words", [
    (dict(url="https://h/x.tgz"), "checksum", "is required with url"),
    (dict(url="gopher://h/x", checksum="a" * 64), "url", "must start with one of"),
    (dict(src="relative.tar"), "src", "is not an absolute path"),
    (dict(src="/nonexistent/tp.tar"), "src", "does not exist"),
    (dict(debootstrap=dict(suite="bookworm", sute="x")), "debootstrap", "unknown key(s) sute"),
    (dict(debootstrap=dict(mirror="http://m")), "debootstrap.suite", "is required"),
    (dict(debootstrap=dict(suite="b", variant="max")), "debootstrap.variant", "'max' is not one of"),
    (dict(debootstrap=dict(suite="b", mirror="m")), "debootstrap.mirror", "is not an http"),
    (dict(debootstrap=dict(suite="b", include=["Bad Pkg"])), "debootstrap.include", "not a valid package"),
    (dict(image="busybox:latest"), "image", "must be an image reference"),
    (dict(image="oci-archive:/nonexistent/tp.tar"), "image", "does not exist"),
    (dict(image="docker://x", checksum="a" * 64), "checksum", "applies to src and url only"),
])
def test_bad_sources_name_the_field(kwargs, field, words):
    with pytest.raises(ValidationError) as err:
        _template.normalize_source(**kwargs)
    assert err.value.field == field and words in err.value.msg


# ----------------------------------------------------------------------- src

def test_check_mode_then_install_then_idempotent(root, tarball):
    check = _template.ensure(root, "tpbb", src=tarball, check_mode=True)
    assert check["changed"] is True
    assert check["diff"] == dict(before={}, after=dict(name="tpbb", sha256=sha(tarball),
                                                       source=dict(type="src", src=tarball)))
    assert not os.path.exists(root), "check mode must not create anything"

    real = _template.ensure(root, "tpbb", src=tarball)
    assert real["changed"] is True
    meta_path = Layout(root).template_meta("tpbb")
    with open(meta_path) as handle:
        meta = json.load(handle)
    assert meta["sha256"] == sha(tarball) == real["sha256"]
    assert meta["size"] == 1003 == real["size"]
    assert meta["source"] == dict(type="src", src=tarball)
    assert meta["created"].endswith("Z") and meta["duration"] >= 0
    with open(os.path.join(Layout(root).template_rootfs("tpbb"), "bin", "busybox"), "rb") as handle:
        assert handle.read() == b"B" * 1000
    assert real["diff"]["after"] == meta and real["diff"]["before"] == {}
    assert entries(root) == ["tpbb"]

    stamp = os.stat(meta_path)
    for check_mode in (True, False):
        again = _template.ensure(root, "tpbb", src=tarball, check_mode=check_mode)
        assert again["changed"] is False and again["sha256"] == meta["sha256"]
        assert again["diff"]["before"] == again["diff"]["after"]
    assert (os.stat(meta_path).st_ino, os.stat(meta_path).st_mtime_ns) == (stamp.st_ino, stamp.st_mtime_ns)

    # The same tarball under another path is the same template (content, not path).
    moved = tarball + ".copy.tar"
    shutil.copyfile(tarball, moved)
    again = _template.ensure(root, "tpbb", src=moved)
    assert again["changed"] is False
    assert (os.stat(meta_path).st_ino, os.stat(meta_path).st_mtime_ns) == (stamp.st_ino, stamp.st_mtime_ns)


def test_force_and_changed_content_reinstall(root, tarball, tmp_path):
    _template.ensure(root, "tpbb", src=tarball)
    first = Layout(root).template_meta("tpbb")
    ino = os.stat(first).st_ino
    assert _template.ensure(root, "tpbb", src=tarball, force=True)["changed"] is True
    assert os.stat(first).st_ino != ino
    make_tarball(tarball, {"bin/busybox": b"C" * 10})
    assert _template.ensure(root, "tpbb", src=tarball, check_mode=True)["changed"] is True
    res = _template.ensure(root, "tpbb", src=tarball)
    assert res["changed"] is True and res["diff"]["before"]["sha256"] != res["diff"]["after"]["sha256"]
    assert res["size"] == 10 and entries(root) == ["tpbb"]


def test_wrong_src_checksum_fails_before_anything(root, tarball):
    with pytest.raises(ValidationError, match="checksum: .* has sha256:[0-9a-f]{64}, expected sha256:0+"):
        _template.ensure(root, "tpbb", src=tarball, checksum="0" * 64)
    assert not os.path.exists(root)


def test_unsafe_tarball_leaves_no_residue_and_keeps_the_old_template(root, tarball, tmp_path):
    _template.ensure(root, "tpbb", src=tarball)
    meta = Layout(root).template_meta("tpbb")
    before = _read(meta)
    bad = make_tarball(tmp_path / "tp-bad.tar.gz", {"ok": b"x"}, bad="../../tp-escape")
    with pytest.raises(ValidationError, match="unsafe archive member '../../tp-escape'"):
        _template.ensure(root, "tpbb", src=bad, force=True)
    assert entries(root) == ["tpbb"]
    assert _read(meta) == before
    with pytest.raises(ValidationError):
        _template.ensure(root, "tpnew", src=bad)
    assert entries(root) == ["tpbb"]


@pytest.mark.parametrize("name", ["", "tp/x", "..", "tp x", "t" * 64])
def test_bad_names_leave_nothing(root, tarball, name):
    with pytest.raises(ValidationError) as err:
        _template.ensure(root, name, src=tarball)
    assert err.value.field == "name"
    assert not os.path.exists(root)


# ----------------------------------------------------------------------- url

def test_url_download_verify_and_checksum_idempotence(root, tarball, tmp_path):
    url = "file://" + tarball
    res = _template.ensure(root, "tpurl", url=url, checksum="sha256:" + sha(tarball))
    assert res["changed"] is True and res["commands"][0].startswith("download " + url)
    assert os.path.isfile(os.path.join(res["rootfs"], "etc", "hostname"))
    # The same url + checksum is up to date without downloading: the file may even be gone.
    gone = "file://" + str(tmp_path / "tp-gone.tar.gz")
    os.rename(tarball, gone[len("file://"):])
    same = _template.ensure(root, "tpurl", url=url, checksum=sha(gone[len("file://"):]))
    assert same["changed"] is False and same["commands"] == []
    # A different checksum in check mode is a change, computed without downloading.
    other = _template.ensure(root, "tpurl", url=url, checksum="1" * 64, check_mode=True)
    assert other["changed"] is True and other["diff"]["after"]["sha256"] == "1" * 64


def test_url_checksum_mismatch_unpacks_nothing(root, tarball):
    with pytest.raises(ValidationError) as err:
        _template.ensure(root, "tpurl", url="file://" + tarball, checksum="2" * 64)
    assert err.value.field == "checksum" and "nothing was unpacked" in err.value.msg
    assert entries(root) == []


def test_url_unreachable(root):
    with pytest.raises(ValidationError, match="url: download of file:///nonexistent/tp.tgz failed"):
        _template.ensure(root, "tpurl", url="file:///nonexistent/tp.tgz", checksum="3" * 64)
    assert entries(root) == []


# ----------------------------------------------------------------------- users, absent, info

def _use(root, container, template):
    path = os.path.join(Layout(root).container_dir(container), "spec.json")
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as handle:
        json.dump(dict(template=template), handle)


def test_absent_refuses_while_used_then_force_removes(root, tarball, tmp_path):
    _template.ensure(root, "tpbb", src=tarball)
    _use(root, "tpc1", "tpbb")
    _use(root, "tpc2", "tpbb")
    _use(root, "tpc3", "other")
    with pytest.raises(ConflictError) as err:
        _template.ensure(root, "tpbb", state="absent")
    assert "tpc1, tpc2" in err.value.msg and "tpc3" not in err.value.msg
    assert err.value.details["users"] == ["tpc1", "tpc2"]
    other = make_tarball(tmp_path / "tp-other.tar.gz", {"x": b"y"})
    for check_mode in (True, False):
        with pytest.raises(ConflictError, match="used by container.*tpc1, tpc2.*force=true"):
            _template.ensure(root, "tpbb", src=other, check_mode=check_mode)
    assert entries(root) == ["tpbb"]
    check = _template.ensure(root, "tpbb", state="absent", force=True, check_mode=True)
    assert check["changed"] is True and entries(root) == ["tpbb"]
    res = _template.ensure(root, "tpbb", state="absent", force=True)
    assert res["changed"] is True and res["diff"]["after"] == {} and res["diff"]["before"]["name"] == "tpbb"
    assert entries(root) == []
    assert _template.ensure(root, "tpbb", state="absent")["changed"] is False


def test_absent_of_a_never_installed_template(root):
    res = _template.ensure(root, "tpnone", state="absent", check_mode=True)
    assert res["changed"] is False and not os.path.exists(root)


def test_info(root, tarball):
    layout = Layout(root)
    assert _template.list_templates(layout) == []
    _template.ensure(root, "tpbb", src=tarball)
    _use(root, "tpc1", "tpbb")
    (info,) = _template.list_templates(layout)
    assert info["name"] == "tpbb" and info["users"] == ["tpc1"] and info["rootfs"] == layout.template_rootfs("tpbb")
    assert _template.get_template(layout, "tpbb")["sha256"] == sha(tarball)
    with pytest.raises(NotFoundError, match=r"template: template 'tpx' is not installed .*\(installed: tpbb\)"):
        _template.get_template(layout, "tpx")


# ----------------------------------------------------------------------- debootstrap (mocked)

DPKG_STATUS = """\
Package: base-files
Status: install ok installed
Architecture: amd64
Version: 12.4

Package: removed-one
Status: deinstall ok config-files
Architecture: amd64
Version: 1

Package: bash
Status: install ok installed
Architecture: amd64
Description: shell
 continued line: with a colon
Version: 5.2-2
"""


@pytest.fixture
def fake_debootstrap(monkeypatch):
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        rootfs = cmd[-2] if cmd[-1].startswith("http") else cmd[-1]
        os.makedirs(os.path.join(rootfs, "var", "lib", "dpkg"))
        with open(os.path.join(rootfs, "var", "lib", "dpkg", "status"), "w") as handle:
            handle.write(DPKG_STATUS)
        return _cli.Result(cmd, 0, "", "", 0.1)

    monkeypatch.setattr(_cli, "run", run)
    monkeypatch.setattr(_cli, "require", lambda name, purpose=None: "/usr/sbin/" + name)
    return calls


def test_debootstrap_command_manifest_and_idempotence(root, fake_debootstrap):
    opts = dict(suite="bookworm", mirror="http://mirror.invalid/debian", include=["procps", "iproute2"])
    check = _template.ensure(root, "tpdeb", debootstrap=opts, check_mode=True)
    assert check["changed"] is True and fake_debootstrap == [] and not os.path.exists(root)
    assert check["commands"][0].startswith("/usr/sbin/debootstrap --variant=minbase --include=iproute2,procps bookworm ")
    res = _template.ensure(root, "tpdeb", debootstrap=opts)
    (cmd,) = fake_debootstrap
    assert cmd[:4] == ["/usr/sbin/debootstrap", "--variant=minbase", "--include=iproute2,procps", "bookworm"]
    assert cmd[-1] == "http://mirror.invalid/debian" and ".tpdeb.tmp-" in cmd[-2]
    source = dict(type="debootstrap", suite="bookworm", mirror="http://mirror.invalid/debian",
                  variant="minbase", include=["iproute2", "procps"])
    manifest = json.dumps(dict(source=source, packages=["base-files:amd64=12.4", "bash:amd64=5.2-2"]),
                          sort_keys=True, separators=(",", ":"))
    assert res["sha256"] == hashlib.sha256(manifest.encode()).hexdigest()
    assert res["template"]["packages"] == 2
    assert _template.ensure(root, "tpdeb", debootstrap=opts)["changed"] is False
    assert len(fake_debootstrap) == 1
    assert _template.ensure(root, "tpdeb", debootstrap=dict(opts, variant="buildd"),
                            check_mode=True)["changed"] is True


def test_failed_debootstrap_leaves_no_residue(root, monkeypatch):
    def run(cmd, **kwargs):
        os.makedirs(os.path.join(cmd[-1], "var", "partial"))
        raise _cli.CommandError("debootstrap bookworm failed (rc=1)", cmd, 1, "", "E: no mirror")

    monkeypatch.setattr(_cli, "run", run)
    monkeypatch.setattr(_cli, "require", lambda name, purpose=None: name)
    with pytest.raises(_cli.CommandError, match="debootstrap bookworm failed"):
        _template.ensure(root, "tpdeb", debootstrap=dict(suite="bookworm"))
    assert entries(root) == []


def test_unreachable_mirror_names_the_field_and_the_way_out(root, monkeypatch):
    def run(cmd, **kwargs):
        os.makedirs(os.path.join(cmd[-2], "debootstrap"))
        raise _cli.CommandError("debootstrap bookworm failed (rc=1)", cmd, 1, "",
                                "I: Retrieving InRelease\nE: Failed getting release file "
                                "http://mirror.invalid/debian/dists/bookworm/Release")

    monkeypatch.setattr(_cli, "run", run)
    monkeypatch.setattr(_cli, "require", lambda name, purpose=None: name)
    with pytest.raises(ValidationError) as err:
        _template.ensure(root, "tpdeb", debootstrap=dict(suite="bookworm",
                                                         mirror="http://mirror.invalid/debian"))
    assert err.value.details["field"] == "debootstrap.mirror"
    assert "cannot reach http://mirror.invalid/debian" in err.value.msg
    assert "install its tarball here with src" in err.value.msg
    assert entries(root) == []
