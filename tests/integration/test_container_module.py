"""ctrhost.fleet.container / container_info through ansible-playbook against real runc.

Every effect is checked by an independent path: /proc/<pid>, the cgroup files,
/proc/self/mountinfo, /run/netns and the runtime's state directory.
"""

import json
import os
import subprocess

import pytest

import _local
from _local import gone, leftovers, mounted

RUN_DIR = "/run/ctrhost"
RUNC_ROOT = os.path.join(RUN_DIR, "runtime", "runc")
LOOP = ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]

pytestmark = _local.RUNTIME_MARKS + [pytest.mark.slow]
root = _local.root_fixture("ctroot")  # a layout root holding a busybox template


# -- helpers ---------------------------------------------------------------------------


def play(root, steps, module="container"):
    return _local.play(root, steps, module, timeout=300)


def one(root, **step):
    return play(root, [step])[0]


def runc(*args, check=True):
    return subprocess.run(["runc", "--root", RUNC_ROOT] + list(args), capture_output=True,
                          text=True, check=check, timeout=60)


def cgroup_file(pid, controller, v1_name, v2_name):
    """The file holding a limit of process ``pid``, found through /proc/<pid>/cgroup."""
    lines = read("/proc/%d/cgroup" % pid).splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return os.path.join("/sys/fs/cgroup", controller, path.lstrip("/"), v1_name)
    path = [ln.split(":", 2)[2] for ln in lines if ln.startswith("0::")][0]
    return os.path.join("/sys/fs/cgroup", path.strip().lstrip("/"), v2_name)


def read(path):
    with open(path) as handle:
        return handle.read().strip()


# -- tests -----------------------------------------------------------------------------
def test_lifecycle(root):
    name = "ctlife%d" % (os.getpid() % 100000)
    base = dict(name=name, template="busybox", command=LOOP)
    bundle = os.path.join(root, "containers", name)

    # check mode: a change is reported, nothing is created
    r = one(root, _check=True, **base)
    assert r["changed"] and not r.get("failed"), r
    assert any(" run " in c and " --detach " in c for c in r["commands"]), r["commands"]
    assert leftovers(root, name) == []

    # create + start, then the same task again (and in check mode): no change
    r, again, again_check = play(root, [dict(base), dict(base), dict(base, _check=True)])
    assert [again["changed"], again_check["changed"]] == [False, False], (again, again_check)
    assert r["changed"] and r["container"]["state"] == "running", r
    pid = r["container"]["pid"]
    assert os.path.exists("/proc/%d" % pid)
    assert read("/proc/%d/comm" % pid) == "sh"
    assert os.readlink("/proc/%d/ns/net" % pid) != os.readlink("/proc/self/ns/net")
    assert os.stat("/proc/%d/ns/net" % pid).st_ino == os.stat("/run/netns/ctrhost-" + name).st_ino
    assert mounted(os.path.join(bundle, "rootfs"))
    assert "/ctrhost/" in read("/proc/%d/cgroup" % pid)

    # isolation
    probe = runc("exec", name, "sh", "-c",
                 "ls /dev; mknod /dev/sdx b 8 0 && echo MKNOD-OK; grep -E 'Seccomp:|CapEff' /proc/self/status",
                 check=False)
    assert not any(d.startswith(("sd", "vd", "nvme", "hd", "xvd", "loop", "mem")) for d in probe.stdout.split()), probe.stdout
    assert "MKNOD-OK" not in probe.stdout and "not permitted" in probe.stderr, probe
    assert "Seccomp:\t2" in probe.stdout
    cap_eff = int([ln for ln in probe.stdout.splitlines() if ln.startswith("CapEff")][0].split()[1], 16)
    assert not cap_eff & (1 << 27) and not cap_eff & (1 << 21)  # no CAP_MKNOD, no CAP_SYS_ADMIN
    for masked in ("/proc/kcore", "/proc/keys", "/proc/timer_list"):
        if os.path.exists(masked):
            st = runc("exec", name, "stat", "-c", "%F %t,%T %s", masked).stdout.strip()
            assert st == "character special file 1,3 0", (masked, st)

    # write a file inside (runc exec, not detached)
    runc("exec", name, "sh", "-c", "echo kept > /root/marker")

    # limits change live: check mode first, then for real; same pid; cgroup files show them
    limits = dict(memory="128M", pids=64, cpus=0.5)
    mem_file = cgroup_file(pid, "memory", "memory.limit_in_bytes", "memory.max")
    pids_file = cgroup_file(pid, "pids", "pids.max", "pids.max")
    old_mem = read(mem_file)
    r = one(root, _check=True, limits=limits, **base)
    assert r["changed"] and read(mem_file) == old_mem, r
    r, same = play(root, [dict(base, limits=dict(memory="131072K", pids=64, cpus=0.5)),
                          dict(base, limits=limits)])
    assert r["changed"] and r["container"]["pid"] == pid, r
    assert same["changed"] is False, same  # 128M == 131072K
    assert read(mem_file) == str(128 * 1024 * 1024)
    assert read(pids_file) == "64"
    quota = cgroup_file(pid, "cpu", "cpu.cfs_quota_us", "cpu.max")
    assert read(quota).split()[0] == "50000"
    cfg = json.loads(read(os.path.join(bundle, "config.json")))
    assert cfg["linux"]["resources"]["memory"]["limit"] == 128 * 1024 * 1024

    # freeze and thaw (same pid)
    freezer = cgroup_file(pid, "freezer", "freezer.state", "cgroup.freeze")
    r, again = play(root, [dict(name=name, state="frozen"), dict(name=name, state="frozen")])
    assert r["changed"] and r["container"]["state"] == "frozen" and not again["changed"], (r, again)
    assert read(freezer) in ("FROZEN", "1")
    r, info = play(root, [dict(name=name, state="started"),
                          dict(_module="container_info", name=[name])])
    assert r["changed"] and r["container"]["pid"] == pid
    assert read(freezer) in ("THAWED", "0")

    # info
    entry = info["containers"][0]
    assert entry["state"] == "running" and entry["pid"] == pid
    assert entry["limits"]["memory"] == 128 * 1024 * 1024
    assert entry["effective_limits"]["pids"] == 64
    assert entry["usage"]["memory_current"] > 0 and entry["usage"]["pids_current"] >= 1

    # stop: process gone, rootfs unmounted, bundle and netns kept
    r, again = play(root, [dict(name=name, state="stopped"), dict(name=name, state="stopped")])
    assert r["changed"] and r["container"]["state"] == "stopped" and not again["changed"], (r, again)
    assert gone(pid)
    assert not mounted(os.path.join(bundle, "rootfs"))
    assert not os.path.exists(os.path.join(RUNC_ROOT, name))
    assert os.path.exists(os.path.join(bundle, "upper", "root", "marker"))

    # start again: the file is still there, limits too
    r = one(root, name=name, state="started")
    pid2 = r["container"]["pid"]
    assert r["changed"] and pid2 != pid
    assert runc("exec", name, "cat", "/root/marker").stdout.strip() == "kept"
    assert read(cgroup_file(pid2, "memory", "memory.limit_in_bytes", "memory.max")) == str(128 * 1024 * 1024)

    # restarted: new pid
    r = one(root, name=name, state="restarted")
    pid3 = r["container"]["pid"]
    assert r["changed"] and pid3 not in (pid2, None) and os.path.exists("/proc/%d" % pid3)

    # a change that needs a re-create fails clearly and touches nothing
    spec_before = read(os.path.join(bundle, "spec.json"))
    r = one(root, hostname="other", **base)
    assert r.get("failed") and "hostname" in r["msg"] and "recreate" in r["msg"], r
    assert read(os.path.join(bundle, "spec.json")) == spec_before
    assert runc("state", name).returncode == 0 and json.loads(runc("state", name).stdout)["pid"] == pid3

    # absent removes everything; a second absent changes nothing
    r, again = play(root, [dict(name=name, state="absent"), dict(name=name, state="absent")])
    assert r["changed"] and not again["changed"], (r, again)
    assert leftovers(root, name) == []
    assert gone(pid3)


def test_bad_input_fails_naming_the_field_and_leaves_nothing(root):
    good = dict(template="busybox", command=LOOP)
    cases = [
        (dict(good, name="a/b"), "name"),
        (dict(good, name=".."), "name"),
        (dict(good, name="a b"), "name"),
        (dict(good, name=""), "name"),
        (dict(good, name="c" * 64), "name"),
        (dict(good, name="ctbad1", template="nosuchtemplate"), "template"),
        (dict(good, name="ctbad2", limits=dict(memroy="1G")), "limits.memroy"),
        (dict(good, name="ctbad3", limits=dict(memory=1)), "limits.memory"),
        (dict(good, name="ctbad4", capabilities=dict(add=["CAP_NOPE"])), "capabilities.add"),
        (dict(good, name="ctbad5", mounts=[dict(source="/nonexistent/x", destination="/x")]),
         "mounts[0].source"),
        (dict(good, name="ctbad6", env={"BAD-KEY": "1"}), "env.BAD-KEY"),
        (dict(good, name="ctbad7", colour="red"), "colour"),
        (dict(good, name="ctbad8", mounts=[dict(destination="/x", flavour="y")]), "flavour"),
        (dict(good, name="ctbad9", network=[dict(ifname="eth0", bridge="br0", speed=1)]), "speed"),
    ]
    results = play(root, [case for case, _ in cases])
    for (case, field), result in zip(cases, results, strict=True):
        assert result.get("failed"), (case, result)
        assert field in result["msg"], (field, result["msg"])
    for name in ["ctbad%d" % i for i in range(1, 10)] + ["c" * 64]:
        assert leftovers(root, name) == [], name
    assert not os.path.exists(os.path.join(root, "containers")) or os.listdir(
        os.path.join(root, "containers")) == []


def test_create_present_then_frozen_and_info_all(root):
    name = "ctfrz%d" % (os.getpid() % 100000)
    r = one(root, name=name, template="busybox", command=LOOP, state="present", autostart=True)
    assert r["changed"] and r["container"]["state"] == "stopped" and r["container"]["pid"] is None, r
    assert not os.path.exists(os.path.join(RUNC_ROOT, name))
    steps = play(root, [dict(name=name, state="frozen", _check=True), dict(name=name, state="frozen"),
                        dict(name=name, state="frozen"), dict(_module="container_info")])
    assert [s["changed"] for s in steps[:3]] == [True, True, False], steps
    pid = steps[1]["container"]["pid"]
    freezer = cgroup_file(pid, "freezer", "freezer.state", "cgroup.freeze")
    assert read(freezer) in ("FROZEN", "1")
    entry = [c for c in steps[3]["containers"] if c["name"] == name][0]
    assert entry["state"] == "frozen" and entry["autostart"] is True and entry["freezer"] == "frozen"
    # absent straight from frozen
    assert one(root, name=name, state="absent")["changed"]
    assert leftovers(root, name) == []
    assert gone(pid)
