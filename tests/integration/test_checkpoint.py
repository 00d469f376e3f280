"""Checkpoint and restore with real runc + CRIU; effects read back through /proc,
the cgroup files and the container's upper layer."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

import _local

from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import store as _ckstore
from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import dump as _checkpoint
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import lifecycle as _container
from ansible_collections.ctrhost.fleet.plugins.module_utils.core import paths as _paths
from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import restore as _restore
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import driver as _runtime
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import store as _state
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CommandError, ConflictError

CRIU = shutil.which("criu", path="/usr/local/sbin:/usr/sbin:/usr/bin:/sbin")
COUNTER = ["/bin/sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/counter.new; mv /tmp/counter.new /tmp/counter; sleep 0.05; done"]

pytestmark = [
    pytest.mark.runtime,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not CRIU, reason="needs CRIU"),
    pytest.mark.skipif(not shutil.which("busybox"), reason="needs a static busybox"),
]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("crroot")
    _local.busybox_root(base, sha256="c" * 64)
    yield str(base)
    for name in os.listdir(base / "containers") if (base / "containers").exists() else ():
        _container.ensure(dict(root=str(base), name=name, state="absent"))


def read(path):
    with open(path) as handle:
        return handle.read()


def start(root, name, limits=None, command=None):
    """Create and start through the container lifecycle (the runtime gives the
    container's stdio a pipe drained by a detached logger, which CRIU can dump)."""
    _container.ensure(dict(root=root, name=name, template="busybox", command=command or COUNTER,
                           state="started", limits=limits or {}))
    layout = _paths.Layout(root)
    spec = _state.ContainerStore(layout).load(name)
    return layout, spec, _runtime.runtime_for(layout, spec.get("runtime"))


def counter(layout, name):
    for _ in range(50):
        text = read(layout.container_file(name, "upper/tmp/counter")).strip()
        if text:
            return int(text)
        time.sleep(0.01)
    raise AssertionError("no counter")


def gone(pid, timeout=2.0):
    """The process exited (or is a zombie waiting for its reaper) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if read("/proc/%d/stat" % pid).rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.01)
    return False


def pid_of(rt, name):
    st = rt.state(name)
    return st["pid"] if st and st["status"] == "running" else None


def test_counter_continues_file_and_limits_survive(root):
    layout, spec, rt = start(root, "crck1", limits={"memory": "96M", "pids": 40})
    time.sleep(0.5)
    with open(layout.container_file("crck1", "rootfs/root/before"), "w") as handle:
        handle.write("written before the checkpoint")
    res = _checkpoint.ensure(dict(root=root, name="crck1", id="one"))
    assert res["changed"] and res["stats"]["pages_written"] > 0 and res["stats"]["frozen_time"] > 0
    path = res["checkpoint_dir"]
    assert os.stat(path).st_mode & 0o777 == 0o700
    meta = json.loads(read(os.path.join(path, "checkpoint.json")))
    assert meta["template_sha256"] == "c" * 64 and meta["spec"]["limits"]["pids"] == 40
    assert meta["criu_version"] and meta["kernel"] == os.uname().release
    assert pid_of(rt, "crck1") is None  # dumped and stopped
    dumped = counter(layout, "crck1")
    time.sleep(0.3)
    assert counter(layout, "crck1") == dumped  # nothing runs
    again = _checkpoint.ensure(dict(root=root, name="crck1", id="one"))
    assert again["changed"] is False
    out = _restore.restore(root, "crck1", "one")
    assert out["changed"] and out["stats"]["pages_restored"] > 0
    pid = pid_of(rt, "crck1")
    assert pid and os.path.exists("/proc/%d" % pid)
    time.sleep(0.4)
    now = counter(layout, "crck1")
    assert dumped < now < dumped + 40, (dumped, now)  # continued, not restarted from 1
    assert read(layout.container_file("crck1", "rootfs/root/before")) == \
        "written before the checkpoint"
    cg = "/sys/fs/cgroup/memory" + spec["cgroups_path"]
    if os.path.isdir(cg):
        assert int(read(cg + "/memory.limit_in_bytes")) == 96 * 1024 * 1024
        with open("/proc/%d/cgroup" % pid) as handle:
            assert spec["cgroups_path"] in handle.read()
    assert _restore.restore(root, "crck1", "one")["changed"] is False  # already running


def test_leave_running_keep_and_delete(root):
    layout, _spec, rt = start(root, "crck2")
    pid = pid_of(rt, "crck2")
    ids = []
    for i in range(3):
        res = _checkpoint.ensure(dict(root=root, name="crck2", id="k%d" % i, leave_running=True,
                                      keep=2, rootfs=False))
        ids.append(res["id"])
        assert pid_of(rt, "crck2") == pid
    assert [m["id"] for m in _ckstore.list_checkpoints(layout, "crck2")] == ["k1", "k2"]
    assert _checkpoint.ensure(dict(root=root, name="crck2", id="k1", state="absent"),
                              check_mode=True)["changed"]
    assert os.path.isdir(layout.checkpoint_dir("crck2", "k1"))
    assert _checkpoint.ensure(dict(root=root, name="crck2", id="k1", state="absent"))["changed"]
    assert not os.path.exists(layout.checkpoint_dir("crck2", "k1"))
    before = counter(layout, "crck2")
    time.sleep(0.3)
    assert counter(layout, "crck2") > before


def test_failed_checkpoint_leaves_container_running(root):
    # The container's init holds an established TCP connection (over its own lo) and
    # tcp_established is not set: CRIU refuses to dump it.
    tcp = ["/bin/sh", "-c", "sleep 1000 | nc -l -p 7000 >/dev/null & sleep 0.2; "
           "sleep 1000 | nc 127.0.0.1 7000 >/dev/null & " + COUNTER[2]]
    layout, _spec, rt = start(root, "crck3", command=tcp)
    time.sleep(0.5)
    pid = pid_of(rt, "crck3")
    with pytest.raises(CommandError) as err:
        _checkpoint.ensure(dict(root=root, name="crck3", id="bad", leave_running=True))
    assert err.value.details["cause"] == "tcp_established", err.value.msg
    assert err.value.details["criu_log"]
    assert err.value.details["container_status"] == "running"
    assert pid_of(rt, "crck3") == pid
    before = counter(layout, "crck3")
    time.sleep(0.3)
    assert counter(layout, "crck3") > before  # not frozen
    assert not os.path.exists(layout.checkpoint_dir("crck3", "bad"))


# A container holding 48 MiB (more than _dumpwindow.STAGE_MIN) beside the counter.
HOLDING = ["/bin/sh", "-c", "dd if=/dev/urandom bs=48M count=1 iflag=fullblock 2>/dev/null | "
           "sleep 100000 & " + COUNTER[2]]
# The checkpoint in a private mount namespace whose run directory's image stage is a
# tmpfs (this machine's /run is not one); argv: root, name, id, and the size of a tmpfs
# put on the container's checkpoints directory ("" for none): a full disk for the move.
IN_STAGE = r"""
import json, os, subprocess, sys
from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import dump as _checkpoint
from ansible_collections.ctrhost.fleet.plugins.module_utils.core import paths as _paths
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CtrhostError
root, name, cid, full = sys.argv[1:5]
stage = os.path.join(_paths.RUN_DIR, "images")
os.makedirs(stage, exist_ok=True)
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1G", "crstage", stage], check=True)
if full:
    base = _paths.Layout(root).checkpoint_dir(name)
    os.makedirs(base, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + full, "crfull", base], check=True)
try:
    out = _checkpoint.checkpoint(root, name, cid, rootfs=False)
    out = dict(ok=True, images=out["checkpoint"]["images"], size=out["size"],
               files=sorted(os.listdir(out["checkpoint_dir"])))
except CtrhostError as exc:
    out = dict(ok=False, msg=exc.msg, **exc.details)
out["stage_left"] = os.listdir(stage)
out["partial_left"] = [e for e in os.listdir(_paths.Layout(root).checkpoint_dir(name))
                       if e.startswith(".")]
print(json.dumps(out, default=str))
"""


def staged_checkpoint(root, name, cid, full=""):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run(["unshare", "--mount", "--propagation", "slave", sys.executable, "-c",
                           IN_STAGE, root, name, cid, full], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_staged_images_end_on_disk_and_the_container_restores(root):
    layout, _spec, rt = start(root, "crck7", command=HOLDING)
    time.sleep(2.0)  # dd has read its 48 MiB
    out = staged_checkpoint(root, "crck7", "st")
    assert out["ok"], out
    assert out["images"]["staged"] is True and out["images"]["frozen_first"] is True, out
    assert out["stage_left"] == [] and out["partial_left"] == []
    assert out["size"] > 48 * 1024 * 1024 and "inventory.img" in out["files"]
    assert any(f.startswith("pages-") for f in out["files"]) and "dump.log" in out["files"]
    assert pid_of(rt, "crck7") is None  # stopped once its images were on disk
    dumped = counter(layout, "crck7")
    res = _restore.restore(root, "crck7", "st")
    assert res["stats"]["pages_restored"] > 12000  # the 48 MiB came back from disk
    time.sleep(0.4)
    assert dumped < counter(layout, "crck7") < dumped + 40


def test_a_staged_checkpoint_whose_move_fails_leaves_it_running(root):
    layout, _spec, rt = start(root, "crck8", command=HOLDING)
    time.sleep(2.0)
    pid = pid_of(rt, "crck8")
    out = staged_checkpoint(root, "crck8", "full", full="8M")  # the images do not fit there
    assert not out["ok"] and out["cause"] == "no_space", out
    assert out["container_status"] == "running" and "could not be moved" in out["msg"], out
    assert out["stage_left"] == [] and out["partial_left"] == [], out
    assert pid_of(rt, "crck8") == pid  # the same processes, thawed
    before = counter(layout, "crck8")
    time.sleep(0.3)
    assert counter(layout, "crck8") > before


def test_template_checksum_mismatch_is_refused(root):
    layout, _spec, _rt = start(root, "crck4")
    _checkpoint.ensure(dict(root=root, name="crck4", id="t"))
    meta_path = os.path.join(layout.checkpoint_dir("crck4", "t"), "checkpoint.json")
    meta = json.loads(read(meta_path))
    meta["template_sha256"] = "d" * 64
    with open(meta_path, "w") as handle:
        json.dump(meta, handle)
    with pytest.raises(ConflictError, match="template: .*sha256"):
        _restore.restore(root, "crck4", "t")


def test_console_logger_survives_checkpoints_and_dies_with_the_container(root):
    talk = ["/bin/sh", "-c", "i=0; while true; do i=$((i+1)); echo line$i; sleep 0.05; done"]
    layout, _spec, rt = start(root, "crck5", command=talk)
    log = layout.container_file("crck5", "console.log")
    pid = pid_of(rt, "crck5")
    logger = rt.logger("crck5")
    assert logger, "no console logger recorded"
    lpid = logger[0]
    # the container's stdout is a pipe whose read end is the logger's stdin
    out = os.readlink("/proc/%d/fd/1" % pid)
    assert out.startswith("pipe:") and os.readlink("/proc/%d/fd/0" % lpid) == out
    # the logger lives in the caller's mount namespace and cgroups, pinning nothing
    for ns in ("mnt", "pid"):
        assert os.readlink("/proc/%d/ns/%s" % (lpid, ns)) == os.readlink("/proc/self/ns/" + ns)
    assert read("/proc/%d/cgroup" % lpid) == read("/proc/self/cgroup")
    assert os.readlink("/proc/%d/cwd" % lpid) == "/"
    time.sleep(0.3)
    assert "line3" in read(log)
    for cid in ("c1", "c2"):  # twice: the restored container is checkpointable again
        _checkpoint.ensure(dict(root=root, name="crck5", id=cid))
        assert gone(lpid)  # the pipe's writers are gone: the logger ended by itself
        size = os.path.getsize(log)
        _restore.restore(root, "crck5", cid)
        new = rt.logger("crck5")
        assert new and new[0] != lpid
        lpid = new[0]
        time.sleep(0.3)
        assert os.path.getsize(log) > size  # the restored process writes on
    # a writer outside the container keeps the pipe open: only delete's kill ends the logger
    with open("/proc/%d/fd/1" % pid_of(rt, "crck5"), "wb") as holder:
        _container.ensure(dict(root=root, name="crck5", state="absent"))
        assert gone(lpid, 0.5)
        holder.write(b"")
    assert rt.logger("crck5") is None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
