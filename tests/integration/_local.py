"""Shared helpers of the integration tests that run on this machine (no lab):
a layout root with a busybox template, and playbooks run on localhost."""

import json
import os
import shutil
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
PLAYBOOK = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")
COLLECTIONS = os.path.join(ROOT, ".cache", "pytest-collections")
RUNC_ROOT = "/run/ctrhost/runtime/runc"


def passable(base):
    """``base`` and its parents searchable by others: an unprivileged container's root
    (a host uid of the range) must pass through them to reach its rootfs."""
    path = str(base)
    while path != "/":
        os.chmod(path, os.stat(path).st_mode | 0o001)
        path = os.path.dirname(path)


def busybox_root(base, sha256="0" * 64):
    """Write a busybox template directly into the layout root ``base`` (a pathlib.Path),
    whose parents others may pass through (an unprivileged container's root must reach
    its rootfs)."""
    passable(base)
    rootfs = base / "templates" / "busybox" / "rootfs"
    for d in ("bin", "sbin", "etc", "dev", "proc", "sys", "root", "tmp", "run"):
        (rootfs / d).mkdir(parents=True)
    busybox = shutil.which("busybox")
    shutil.copy2(busybox, rootfs / "bin" / "busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout
    for applet in applets.split():
        if applet != "busybox":
            os.symlink("busybox", rootfs / "bin" / applet)
    meta = dict(name="busybox", sha256=sha256, source=dict(type="src", src="test"), size=0,
                created="2000-01-01T00:00:00Z")
    (base / "templates" / "busybox" / "template.json").write_text(json.dumps(meta))
    return str(base)


def leftover_containers(base):
    return sorted(os.listdir(base / "containers")) if (base / "containers").exists() else []


# What a test module of real containers on this machine needs (its ``pytestmark``).
RUNTIME_MARKS = [
    pytest.mark.runtime,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not shutil.which("runc", path="/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/sbin"),
                       reason="needs runc"),
    pytest.mark.skipif(not shutil.which("busybox"), reason="needs a static busybox"),
]


def root_fixture(prefix):
    """A module-scoped ``root`` fixture: a layout root holding a busybox template written
    directly; the containers a test left are removed through the module afterwards."""
    @pytest.fixture(scope="module")
    def root(tmp_path_factory):
        base = tmp_path_factory.mktemp(prefix)
        yield busybox_root(base)
        for name in leftover_containers(base):
            play(str(base), [dict(name=name, state="absent")], "container", timeout=300)
    return root


def play(root, steps, module, timeout=600):
    """Run each step as a ``ctrhost.fleet.<module>`` task on localhost (ignore_errors, diff)
    and return the registered results. A step's ``_check`` runs it in check mode and its
    ``_module`` names another module."""
    tasks = []
    for i, step in enumerate(steps):
        step = dict(step)
        check = step.pop("_check", False)
        mod = step.pop("_module", module)
        tasks.append({"ctrhost.fleet.%s" % mod: dict(root=root, **step), "register": "r%d" % i,
                      "ignore_errors": True, "check_mode": check, "diff": True})
    out = os.path.join(root, ".results.json")
    tasks.append({"ansible.builtin.copy": {
        "dest": out, "content": "{{ [%s] | to_json }}" % ", ".join("r%d" % i for i in range(len(steps)))}})
    book = os.path.join(root, ".play.yml")
    with open(book, "w") as handle:
        json.dump([dict(hosts="localhost", connection="local", gather_facts=False, tasks=tasks)], handle)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR="1",
               ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_RETRY_FILES_ENABLED="False")
    proc = subprocess.run([PLAYBOOK, "-i", "localhost,", "-e", "ansible_python_interpreter=" + PYTHON, book],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out) as handle:
        return json.load(handle)


def gone(pid, timeout=5.0):
    """True once ``pid`` has exited (a zombie waiting for its reaper counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open("/proc/%d/status" % pid) as handle:
                state = [ln for ln in handle if ln.startswith("State:")]
        except OSError:
            return True
        if state and state[0].split()[1] in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


def mounted(path):
    with open("/proc/self/mountinfo") as handle:
        return any(line.split()[4] == path for line in handle)


def leftovers(root, name):
    """Everything a container could leave behind, as a list of descriptions."""
    found = []
    bundle = os.path.join(root, "containers", name)
    if os.path.exists(bundle):
        found.append("bundle " + bundle)
    if mounted(os.path.join(bundle, "rootfs")):
        found.append("rootfs mount")
    if os.path.lexists("/run/netns/ctrhost-" + name):
        found.append("netns")
    if os.path.exists(os.path.join(RUNC_ROOT, name)):
        found.append("runc state")
    if os.path.exists(os.path.join("/run/ctrhost", "locks", name + ".lock")):
        found.append("lock file")
    for hierarchy in os.listdir("/sys/fs/cgroup"):
        for dirpath, dirnames, _ in os.walk(os.path.join("/sys/fs/cgroup", hierarchy, "ctrhost")):
            if name in dirnames:
                found.append("cgroup " + os.path.join(dirpath, name))
    return found
