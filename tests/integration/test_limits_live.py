"""Live limit changes on a real runc container, proven by the cgroup files and /proc.

A minimal busybox bundle is built in a tmp dir; the container runs under the
cgroups path /ctrhost/lm-test/<id> with its own runc state root.
"""

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid

import pytest

import _local

from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.cgroups import Cgroup
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.limits import adjust
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import LimitError
from ansible_collections.ctrhost.fleet.plugins.module_utils.limits.live import apply_live
from ansible_collections.ctrhost.fleet.plugins.module_utils.limits.records import (
    host_facts,
    normalize,
    persist,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime.driver import Runtime

pytestmark = pytest.mark.runtime

BUSYBOX = "/bin/busybox"
RUNC = shutil.which("runc") or "/usr/sbin/runc"
MiB = 1024 * 1024

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists(RUNC) or not os.path.exists(BUSYBOX),
    reason="needs root, runc and a static busybox")


def _cgroup_file(controller, cg, name):
    with open(os.path.join(cg.dir(controller), name)) as handle:
        return handle.read().strip()


def _build_bundle(bundle, args, memory):
    rootfs = bundle / "rootfs"
    for sub in ("bin", "proc", "dev", "sys", "tmp"):
        (rootfs / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout
    for applet in applets.split():
        if applet != "busybox":
            os.symlink("busybox", rootfs / "bin" / applet)
    subprocess.run([RUNC, "spec"], cwd=bundle, check=True)
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = args
    cfg["process"]["env"] = ["PATH=/bin"]
    cfg["root"]["readonly"] = False
    cfg["hostname"] = "lm-test"
    cfg["linux"]["resources"].update(memory=dict(limit=memory, swap=-1))
    (bundle / "config.json").write_text(json.dumps(cfg))
    return bundle


@pytest.fixture
def lm_container(tmp_path):
    """A running busybox container holding ~60 MiB in its own /dev/shm tmpfs."""
    cid = "lm-" + uuid.uuid4().hex[:8]
    cgroups_path = "/ctrhost/lm-test/" + cid
    args = ["sh", "-c", "head -c 62914560 /dev/zero > /dev/shm/lmfill; exec sleep 100000"]
    bundle = _build_bundle(tmp_path / "root" / "containers" / cid, args, 256 * MiB)
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["linux"]["cgroupsPath"] = cgroups_path
    (bundle / "config.json").write_text(json.dumps(cfg))
    runtime = Runtime("runc", path=RUNC, state_root=str(tmp_path / "run" / "runtime" / "runc"))
    runtime.run(cid, str(bundle), str(tmp_path / "lm.log"))
    cg = Cgroup(cgroups_path)
    try:
        deadline = time.monotonic() + 10
        while (cg.usage()["memory_current"] or 0) < 60 * MiB and time.monotonic() < deadline:
            time.sleep(0.05)
        yield runtime, cid, cg, bundle
    finally:
        subprocess.run([RUNC, "--root", runtime.state_root, "delete", "--force", cid],
                       capture_output=True)
        for path in ("/ctrhost/lm-test", "/ctrhost"):
            for controller in os.listdir("/sys/fs/cgroup"):
                leaf = os.path.join("/sys/fs/cgroup", controller, path.lstrip("/"))
                if os.path.isdir(leaf) and not os.path.islink(leaf):
                    with contextlib.suppress(OSError):  # still used by someone else
                        os.rmdir(leaf)
        assert not cg.exists()


def _start_time(pid):
    with open("/proc/%d/stat" % pid) as handle:
        return handle.read().rsplit(")", 1)[1].split()[19]


def _pid(runtime, cid):
    return runtime.state(cid)["pid"]


@needs_root
def test_live_change_keeps_pid_and_shows_in_cgroup_files(lm_container):
    runtime, cid, cg, bundle = lm_container
    facts = host_facts()
    pid = _pid(runtime, cid)
    start_time = _start_time(pid)
    old = normalize({"memory": "256M"}, facts["cpus"], facts["memory"], facts["cpuset"], facts["mems"])
    new = normalize({"memory": "512M", "cpus": "0.5", "pids": 64, "cpu_weight": 200},
                    facts["cpus"], facts["memory"], facts["cpuset"], facts["mems"])

    planned = apply_live(runtime, cid, cg, old, new, check_mode=True)
    assert planned["changed"] is True
    assert _cgroup_file("memory", cg, "memory.limit_in_bytes") == str(256 * MiB)  # untouched

    result = apply_live(runtime, cid, cg, old, new, check_mode=False)
    assert result["changed"] is True
    assert set(result["changes"]) == {"memory", "cpus", "pids", "cpu_weight"}
    assert _cgroup_file("memory", cg, "memory.limit_in_bytes") == str(512 * MiB)
    assert _cgroup_file("cpu", cg, "cpu.cfs_quota_us") == "50000"
    assert _cgroup_file("cpu", cg, "cpu.cfs_period_us") == "100000"
    assert _cgroup_file("pids", cg, "pids.max") == "64"
    assert result["after"]["memory"] == 512 * MiB and result["after"]["pids"] == 64
    assert result["after"]["cpu_weight"] == 200
    # the same process, not a restart
    assert _pid(runtime, cid) == pid
    assert _start_time(pid) == start_time
    assert str(pid) in _cgroup_file("memory", cg, "cgroup.procs").split()

    again = apply_live(runtime, cid, cg, new, new, check_mode=False)
    assert again["changed"] is False

    # removing cpus/pids resets them to unlimited
    back = {"memory": 512 * MiB}
    reset = apply_live(runtime, cid, cg, new, back, check_mode=False)
    assert set(reset["changes"]) == {"cpus", "pids", "cpu_weight"}
    assert _cgroup_file("cpu", cg, "cpu.cfs_quota_us") == "-1"
    assert _cgroup_file("pids", cg, "pids.max") == "max"
    assert _cgroup_file("cpu", cg, "cpu.shares") == "1024"

    # persisted for a restore: config.json carries the new resources, devices kept
    assert persist(str(bundle), new) is True
    cfg = json.loads((bundle / "config.json").read_text())
    assert cfg["linux"]["resources"]["memory"]["limit"] == 512 * MiB
    assert cfg["linux"]["resources"]["cpu"]["quota"] == 50000
    assert cfg["linux"]["resources"]["devices"]
    assert persist(str(bundle), new) is False


@needs_root
def test_io_throttle_and_swap_live(lm_container):
    runtime, cid, cg, _bundle = lm_container
    disk = next((d for d in ("/dev/vda", "/dev/sda", "/dev/nvme0n1") if os.path.exists(d)), None)
    if disk is None:
        pytest.skip("no disk block device")
    st = os.stat(disk)
    majmin = "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
    old = {"memory": 256 * MiB}
    new = {"memory": 300 * MiB, "memory_swap": 400 * MiB,
           "io_read_bps": [{"device": disk, "rate": 10 * MiB}]}
    apply_live(runtime, cid, cg, old, new)
    assert _cgroup_file("blkio", cg, "blkio.throttle.read_bps_device") == "%s %d" % (majmin, 10 * MiB)
    assert _cgroup_file("memory", cg, "memory.memsw.limit_in_bytes") == str(400 * MiB)
    # raising memory above the old memory+swap: the order of the two writes matters
    newer = {"memory": 600 * MiB, "memory_swap": 700 * MiB}
    result = apply_live(runtime, cid, cg, new, newer)
    assert set(result["changes"]) == {"memory", "memory_swap", "io_read_bps"}
    assert _cgroup_file("memory", cg, "memory.limit_in_bytes") == str(600 * MiB)
    assert _cgroup_file("memory", cg, "memory.memsw.limit_in_bytes") == str(700 * MiB)
    assert _cgroup_file("blkio", cg, "blkio.throttle.read_bps_device") == ""


@needs_root
def test_lowering_memory_below_usage_fails_cleanly(lm_container):
    runtime, cid, cg, _bundle = lm_container
    pid = _pid(runtime, cid)
    usage = cg.usage()["memory_current"]
    assert usage >= 60 * MiB  # the tmpfs file is charged to the container
    kills = cg.usage()["oom_kills"]
    with pytest.raises(LimitError) as info:
        apply_live(runtime, cid, cg, {"memory": 256 * MiB}, {"memory": 16 * MiB})
    msg = str(info.value)
    assert "limits.memory" in msg and "16M" in msg and "uses" in msg
    assert info.value.details["requested"] == 16 * MiB
    assert info.value.details["usage"] >= 60 * MiB
    # previous limit restored, workload alive and not OOM-killed
    assert _cgroup_file("memory", cg, "memory.limit_in_bytes") == str(256 * MiB)
    assert _pid(runtime, cid) == pid and os.path.exists("/proc/%d" % pid)
    assert runtime.state(cid)["status"] == "running"
    assert cg.usage()["oom_kills"] == kills
    # lowering to a value the workload fits in works, with the same pid
    result = apply_live(runtime, cid, cg, {"memory": 256 * MiB}, {"memory": 100 * MiB})
    assert result["changed"] and _cgroup_file("memory", cg, "memory.limit_in_bytes") == str(100 * MiB)
    assert _pid(runtime, cid) == pid


@needs_root
def test_container_limits_task_applies_live_and_persists(lm_container, tmp_path):
    runtime, cid, cg, bundle = lm_container
    spec_path = bundle / "spec.json"
    spec_path.write_text(json.dumps({"name": cid, "runtime": "runc", "limits": {"memory": 256 * MiB},
                                     "cgroups_path": "/ctrhost/lm-test/" + cid}))
    pid = _pid(runtime, cid)
    params = dict(name=cid, root=str(tmp_path / "root"), run_dir=str(tmp_path / "run"),
                  limits={"memory": "300M", "pids": 32}, replace=False, runtime=None,
                  runtime_path=RUNC)
    planned = adjust(params, check_mode=True)
    assert planned["changed"] is True
    assert json.loads(spec_path.read_text())["limits"] == {"memory": 256 * MiB}
    assert _cgroup_file("pids", cg, "pids.max") == "max"

    done = adjust(params)
    assert done["changed"] is True and done["running"] is True and done["pid"] == pid
    assert done["after"] == {"memory": 300 * MiB, "pids": 32}
    assert done["diff"]["before"]["limits"] == {"memory": 256 * MiB}
    assert done["usage"]["memory_current"] >= 60 * MiB and done["usage"]["pids_current"] >= 1
    assert _cgroup_file("memory", cg, "memory.limit_in_bytes") == str(300 * MiB)
    assert _cgroup_file("pids", cg, "pids.max") == "32"
    assert json.loads(spec_path.read_text())["limits"] == {"memory": 300 * MiB, "pids": 32}
    cfg = json.loads((bundle / "config.json").read_text())
    assert cfg["linux"]["resources"]["pids"] == {"limit": 32}
    assert _pid(runtime, cid) == pid

    again = adjust(dict(params, limits={"memory": "300M"}))
    assert again["changed"] is False
    assert adjust(dict(params, limits={"memory": "300M"}), check_mode=True)["changed"] is False

    # a failed lowering changes nothing, stored or live
    with pytest.raises(LimitError):
        adjust(dict(params, limits={"memory": "8M"}))
    assert json.loads(spec_path.read_text())["limits"]["memory"] == 300 * MiB
    assert _cgroup_file("memory", cg, "memory.limit_in_bytes") == str(300 * MiB)
    assert _pid(runtime, cid) == pid


# -- through ansible-playbook: container creates, container_limits changes ------------
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAYBOOK = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")
COLLECTIONS = os.path.join(ROOT, ".cache", "pytest-collections")


def _play(root, tasks):
    out = os.path.join(root, ".lm-results.json")
    body = [{"ctrhost.fleet." + mod: dict(args, root=root), "register": "r%d" % i,
             "ignore_errors": True, "check_mode": check, "diff": True}
            for i, (mod, check, args) in enumerate(tasks)]
    body.append({"ansible.builtin.copy": {"dest": out, "content": "{{ [%s] | to_json }}"
                                          % ", ".join("r%d" % i for i in range(len(tasks)))}})
    book = os.path.join(root, ".lm-play.yml")
    with open(book, "w") as handle:
        json.dump([dict(hosts="localhost", connection="local", gather_facts=False, tasks=body)], handle)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([PLAYBOOK, "-i", "localhost,", "-e",
                           "ansible_python_interpreter=" + os.path.join(ROOT, ".venv", "bin", "python"),
                           book], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out) as handle:
        return json.load(handle)


@needs_root
def test_container_limits_module_playbook(tmp_path):
    root = str(tmp_path / "root")
    rootfs = tmp_path / "root" / "templates" / "lmbox" / "rootfs"
    _local.passable(tmp_path)  # the container is unprivileged (the default)
    _build_bundle(tmp_path / "lmtmp", ["true"], 0)
    shutil.copytree(tmp_path / "lmtmp" / "rootfs", rootfs, symlinks=True)
    (rootfs.parent / "template.json").write_text(json.dumps(dict(
        name="lmbox", sha256="0" * 64, source=dict(type="src", src="test"), size=0,
        created="2000-01-01T00:00:00Z")))
    name = "lmpb%d" % (os.getpid() % 100000)
    create = dict(name=name, template="lmbox", state="started", limits=dict(memory="128M"),
                  command=["sh", "-c", "exec sleep 100000"])
    try:
        r = _play(root, [("container", False, create)])[0]
        assert not r.get("failed"), r
        change = dict(name=name, limits=dict(memory="192M", pids=48, cpus=0.25))
        plan, done, again, check_again, keep, bad = _play(root, [
            ("container_limits", True, change), ("container_limits", False, change),
            ("container_limits", False, change), ("container_limits", True, change),
            ("container", False, dict(name=name, template="lmbox", state="started")),
            ("container_limits", False, dict(name=name, limits=dict(memroy="1G")))])
        assert plan["changed"] is True and done["changed"] is True, (plan, done)
        assert again["changed"] is False and check_again["changed"] is False
        assert done["pid"] == plan["pid"] and done["after"]["pids"] == 48
        assert done["diff"]["after"]["limits"]["memory"] == 192 * MiB
        assert done["usage"]["pids_current"] >= 1
        assert keep["changed"] is False, keep  # container without limits keeps them
        cg = Cgroup(json.loads((tmp_path / "root" / "containers" / name / "spec.json").read_text())
                    ["cgroups_path"])
        assert _cgroup_file("memory", cg, "memory.limit_in_bytes") == str(192 * MiB)
        assert _cgroup_file("pids", cg, "pids.max") == "48"
        assert _cgroup_file("cpu", cg, "cpu.cfs_quota_us") == "25000"
        assert str(done["pid"]) in _cgroup_file("pids", cg, "cgroup.procs").split()
        assert bad["failed"] and "limits.memroy" in bad["msg"] and "memory" in bad["msg"]
    finally:
        _play(root, [("container", False, dict(name=name, state="absent"))])
