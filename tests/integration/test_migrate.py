"""container_migrate between two lab hosts (lab ``mh``): real SSH, runc, CRIU, netlink.

The main cold move goes through ``ansible`` with the module (controller netns, the
lab's inventory); the other modes and the fault cases call the library inside a lab
host. Every effect is read back by an independent path inside the lab hosts: the
runtime's state directory, /proc, the container's rootfs, ``ip`` in its netns.
"""

import json
import os
import shutil
import sys

import pytest
from lab import ROOT, Lab

PY = os.path.join(ROOT, ".venv", "bin", "python")
NAME = "mhm1"
MAC = "02:00:00:00:77:10"
IP = "10.77.0.10/24"
# A counter kept in a shell variable (memory), 32 MiB held by a blocked dd, a file.
COMMAND = ("dd if=/dev/zero bs=32M count=1 2>/dev/null | sleep 100000 & "
           "i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.05; done")

pytestmark = [pytest.mark.lab, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
              pytest.mark.skipif(not shutil.which("criu", path="/usr/local/sbin:/usr/sbin"),
                                 reason="needs CRIU")]

# Runs inside a lab host: python HELPER OP JSON-ARGS -> one JSON line.
HELPER = r'''
import json, os, shutil, subprocess, sys, time
sys.path.insert(0, os.path.join(@ROOT@, ".cache", "pytest-collections"))
from ansible_collections.ctrhost.fleet.plugins.module_utils import (
    _checkpoint, _container, _hostnet, _migrate, _paths)
R = "/var/lib/ctrhost"
op, a = sys.argv[1], json.loads(sys.argv[2])
out = {}
def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
if op == "setup":
    base = R + "/templates/busybox"
    if not os.path.exists(base + "/template.json"):
        for d in ("bin", "etc", "dev", "proc", "sys", "root", "tmp", "run"):
            os.makedirs(base + "/rootfs/" + d, exist_ok=True)
        bb = shutil.which("busybox")
        shutil.copy2(bb, base + "/rootfs/bin/busybox")
        for x in sh(bb + " --list").split():
            if x != "busybox":
                os.symlink("busybox", base + "/rootfs/bin/" + x)
        json.dump(dict(name="busybox", sha256="e" * 64, source=dict(type="src", src="t"),
                       size=0, created="2000-01-01T00:00:00Z"), open(base + "/template.json", "w"))
    _hostnet.apply(bridges=[dict(name="mhbr0", ipv4=a["bridge"])])
elif op == "start":
    _container.ensure(dict(root=R, name=a["name"], template="busybox", state="started",
                           command=["/bin/sh", "-c", a["command"]], network=a["network"]))
    time.sleep(0.3)
    with open(R + "/containers/%s/rootfs/root/before" % a["name"], "w") as fh:
        fh.write("written before")
elif op == "remove":
    _container.ensure(dict(root=R, name=a["name"], state="absent"))
elif op == "facts":
    n = a["name"]
    st = _checkpoint.runtime_for(_paths.Layout(R), {}).state(n)
    rootfs = R + "/containers/%s/rootfs" % n
    def rd(p):
        for _ in range(50):  # the counter file is rewritten (truncated) 20 times a second
            try:
                text = open(rootfs + p).read().strip()
            except OSError:
                return None
            if text:
                return text
            time.sleep(0.01)
    c1 = rd("/tmp/counter"); time.sleep(0.3); c2 = rd("/tmp/counter")
    link = sh("ip -n ctrhost-%s -j addr show eth0" % n)
    link = json.loads(link)[0] if link else {}
    out = dict(status=(st or {}).get("status", "absent"), c1=c1, c2=c2, before=rd("/root/before"),
               mac=link.get("address"), addrs=["%s/%s" % (x["local"], x["prefixlen"])
                                               for x in link.get("addr_info", [])],
               bundle=os.path.exists(R + "/containers/" + n),
               netns=os.path.exists("/run/netns/ctrhost-" + n),
               incoming=sh("ls -a %s/checkpoints/%s 2>/dev/null" % (R, n)).split())
elif op == "migrate":
    hooks = {}
    if a.get("hook") == "corrupt":  # the destination's copy of the images is damaged
        def corrupt(run):
            subprocess.run(run.link.ssh_cmd(run.dest, "cd %s/images && for f in pages-*.img "
                                            "inventory.img; do truncate -s 7 $f; done"
                                            % run.incoming), check=True)
        hooks["transferred"] = corrupt
    elif a.get("hook") == "kill_sshd":
        def kill(run):  # the destination's sshd and its sessions die before the images travel
            victims, todo = [], [a["dest_sshd"]]
            while todo:
                pid = todo.pop()
                victims.append(pid)
                for entry in os.listdir("/proc"):
                    if entry.isdigit():
                        try:
                            stat = open("/proc/%s/stat" % entry).read().rsplit(")", 1)[1].split()
                        except OSError:
                            continue
                        if int(stat[1]) == pid:
                            todo.append(int(entry))
            for pid in victims:
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
        hooks["dumped"] = kill
    try:
        out = _migrate.migrate(R, a["name"], a["dest"], mode=a.get("mode", "cold"),
                               timeout=a.get("timeout", 120), hooks=hooks,
                               check_mode=a.get("check", False))
    except Exception as exc:
        out = dict(failed=True, msg=str(exc), details=getattr(exc, "details", {}))
elif op == "sh":
    out = dict(out=sh(a["cmd"]))
print(json.dumps(out, default=str))
'''.replace("@ROOT@", repr(ROOT))


@pytest.fixture(scope="module")
def mg():
    lab = Lab("mh", 2)
    lab.down()
    lab.up()
    try:
        for i, host in enumerate(lab.hosts):
            helper(lab, host, "setup", bridge="10.77.0.%d/24" % (250 + i))
        yield lab
    finally:
        for host in lab.hosts:
            helper(lab, host, "remove", name=NAME, check=False)
        lab.down()


def helper(lab, host, op, check=True, **args):
    proc = lab.host_exec(host, [PY, "-c", HELPER, op, json.dumps(args)], check=check, timeout=300)
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def addr(lab, host):
    return lab.host(host)["address"]


def start(lab, host):
    helper(lab, host, "remove", name=NAME)
    helper(lab, host, "start", name=NAME, command=COMMAND,
           network=[dict(ifname="eth0", bridge="mhbr0", ipv4=IP, mac=MAC)])
    facts = helper(lab, host, "facts", name=NAME)
    assert facts["status"] == "running" and facts["mac"] == MAC and IP in facts["addrs"], facts
    return facts


def assert_moved(lab, src, dst, before):
    there = helper(lab, dst, "facts", name=NAME)
    here = helper(lab, src, "facts", name=NAME)
    assert there["status"] == "running", there
    assert int(before["c2"]) < int(there["c1"]) < int(before["c2"]) + 400, (before, there)
    assert int(there["c2"]) > int(there["c1"])  # it keeps counting on the destination
    assert there["before"] == "written before"
    assert there["mac"] == MAC and IP in there["addrs"], there
    assert here["status"] == "absent" and not here["bundle"] and not here["netns"], here
    assert not [e for e in there["incoming"] if e.startswith(".incoming")], there
    return there


def assert_stayed(lab, src, dst, before, leftovers=False):
    """Exactly one host runs it (the source), with its data; nothing left on dst
    (``leftovers``: the destination was killed before it could clean up what it staged;
    it must not run there, its files may remain)."""
    here = helper(lab, src, "facts", name=NAME)
    there = helper(lab, dst, "facts", name=NAME)
    assert here["status"] == "running" and int(here["c2"]) > int(here["c1"]), here
    assert int(here["c1"]) >= int(before["c2"])  # continued, not restarted
    assert here["before"] == "written before" and here["mac"] == MAC, here
    assert there["status"] == "absent", there
    assert leftovers or (not there["bundle"] and not there["netns"]), there


def test_cold_with_ansible_there_and_back_and_check_mode(mg):
    a, b = mg.hosts
    before = start(mg, a)
    checked = mg.ansible(a, "ctrhost.fleet.container_migrate",
                         dict(name=NAME, dest=addr(mg, b), mode="cold"), extra=("--check",))[a]
    assert checked["changed"] and checked["preflight"]["ok"] and checked["downtime"] is None
    assert helper(mg, a, "facts", name=NAME)["status"] == "running"  # only the preflight ran
    assert helper(mg, b, "facts", name=NAME)["status"] == "absent"
    res = mg.ansible(a, "ctrhost.fleet.container_migrate",
                     dict(name=NAME, dest=addr(mg, b), mode="cold"))[a]
    assert res["changed"] and res["mode"] == "cold" and res["where"] == addr(mg, b), res
    assert 0 < res["downtime"] < res["total_time"] and res["bytes_moved"] > 32 * 2**20
    assert {"dumped", "transferred", "restored"} <= set(res["timings"]), res["timings"]
    moved = assert_moved(mg, a, b, before)
    back = mg.ansible(b, "ctrhost.fleet.container_migrate",
                      dict(name=NAME, dest=addr(mg, a), mode="cold"))[b]
    assert back["changed"] and back["where"] == addr(mg, a), back
    assert_moved(mg, b, a, moved)


def test_lazy_there_and_back(mg):
    a, b = mg.hosts
    before = start(mg, a)
    res = helper(mg, a, "migrate", name=NAME, dest=addr(mg, b), mode="lazy")
    assert not res.get("failed"), res
    if res["mode"] != "lazy":
        pytest.skip("lazy migration unusable here: %s (raise fs.pipe-max-size: scripts/setup)"
                    % res["fallback"])
    # the 32 MiB did not travel in the images: they were pulled through the page server
    assert res["bytes_moved"] < 8 * 2**20 and res["downtime"] < res["total_time"], res
    assert "pages_done" in res["timings"], res["timings"]
    moved = assert_moved(mg, a, b, before)
    back = helper(mg, b, "migrate", name=NAME, dest=addr(mg, a), mode="lazy")
    assert back["mode"] == "lazy" and back["where"] == addr(mg, a), back
    assert_moved(mg, b, a, moved)


def test_live_falls_back_to_cold_and_says_why(mg):
    a, b = mg.hosts
    before = start(mg, a)
    res = helper(mg, a, "migrate", name=NAME, dest=addr(mg, b), mode="live")
    assert res["mode_requested"] == "live" and res["mode"] == "cold", res
    assert "dirty memory" in res["fallback"], res["fallback"]
    assert_moved(mg, a, b, before)
    helper(mg, b, "remove", name=NAME)


@pytest.mark.parametrize("fault", ["corrupt", "kill_sshd", "disk_full"])
def test_fault_leaves_it_running_on_the_source(mg, fault):
    a, b = mg.hosts
    before = start(mg, a)
    args = dict(name=NAME, dest=addr(mg, b), mode="cold")
    if fault == "corrupt":
        args["hook"] = "corrupt"
    elif fault == "kill_sshd":
        args.update(hook="kill_sshd", dest_sshd=mg.host(b)["pid"])
    elif fault == "disk_full":
        helper(mg, b, "sh", cmd="mkdir -p /var/lib/ctrhost/checkpoints && mount -t tmpfs -o "
               "size=4M mhfull /var/lib/ctrhost/checkpoints")
    try:
        res = helper(mg, a, "migrate", **args)
    finally:
        if fault == "disk_full":
            helper(mg, b, "sh", cmd="umount /var/lib/ctrhost/checkpoints")
        if fault == "kill_sshd":
            mg.reboot(b)
            helper(mg, b, "setup", bridge="10.77.0.251/24")
    assert res.get("failed"), res
    assert "runs on source" in res["msg"], res["msg"]
    assert_stayed(mg, a, b, before, leftovers=fault == "kill_sshd")
    helper(mg, a, "remove", name=NAME)
    helper(mg, b, "remove", name=NAME)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
