"""container_migrate between two lab hosts (lab ``mh``): real SSH, runc, CRIU, netlink.

The hosts' container bridges share one L2 segment made by the product alone
(``host_network``'s overlay fleet network, ``segment_lab``), so a container keeps its
address and MAC on one segment wherever it runs. The main cold move goes through
``ansible`` with the module (controller netns, the lab's inventory); the other modes and
the fault cases call the library inside a lab host. Every effect is read back by an
independent path inside the lab hosts: the runtime's state directory, /proc, the
container's rootfs, ``ip`` in its netns.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from lab import ROOT, Lab

from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import idmap as _idmap

PY = os.path.join(ROOT, ".venv", "bin", "python")
NAME = "mhm1"
MAC = "02:00:00:00:77:10"
IP = "10.77.0.10/24"
# A counter kept in a shell variable (memory), 32 MiB held by a blocked dd, an echo
# server on port 7000, a file.
COMMAND = ("dd if=/dev/zero bs=32M count=1 2>/dev/null | sleep 100000 & "
           "nc -ll -p 7000 -e cat & "
           "i=0; while true; do i=$((i+1)); echo $i > /tmp/counter.new; mv /tmp/counter.new /tmp/counter; sleep 0.05; done")

pytestmark = [pytest.mark.lab, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
              pytest.mark.skipif(not shutil.which("criu", path="/usr/local/sbin:/usr/sbin"),
                                 reason="needs CRIU")]

# Runs inside a lab host: python HELPER OP JSON-ARGS -> one JSON line.
HELPER = r'''
import json, os, shutil, subprocess, sys, time
sys.path.insert(0, os.path.join(@ROOT@, ".cache", "pytest-collections"))
from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import dump as _checkpoint
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import lifecycle as _container
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import bridges as _hostnet
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import source as _migrate
from ansible_collections.ctrhost.fleet.plugins.module_utils.core import paths as _paths
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import driver as _runtime
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
    st = _runtime.runtime_for(_paths.Layout(R)).state(n)
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
    pid = (st or {}).get("pid")
    try:  # the id map of its init, the host's owner of a file the container writes
        umap = " ".join(open("/proc/%d/uid_map" % pid).read().split())
        owner = os.stat(rootfs + "/tmp/counter").st_uid
    except (OSError, TypeError):
        umap = owner = None
    out = dict(status=(st or {}).get("status", "absent"), c1=c1, c2=c2, before=rd("/root/before"),
               uid_map=umap, owner=owner,
               mac=link.get("address"), addrs=["%s/%s" % (x["local"], x["prefixlen"])
                                               for x in link.get("addr_info", [])],
               bundle=os.path.exists(R + "/containers/" + n),
               netns=os.path.exists("/run/netns/ctrhost-" + n),
               incoming=sh("ls -a %s/checkpoints/%s 2>/dev/null" % (R, n)).split())
elif op == "migrate":
    hooks = {}
    if a.get("hook") in ("corrupt", "corrupt_both"):  # the destination's images are damaged
        def corrupt(run):
            subprocess.run(run.link.ssh_cmd(run.dest, "cd %s/images && for f in pages-*.img "
                                            "inventory.img; do truncate -s 7 $f; done"
                                            % run.incoming), check=True)
            if a["hook"] == "corrupt_both":  # ... and so are the source's: no fallback restore
                subprocess.run("cd %s && for f in pages-*.img inventory.img; do truncate -s 7 $f; "
                               "done" % run.images, shell=True, check=True)
        hooks["transferred"] = corrupt
    elif a.get("hook") == "late_write":  # rootfs changes after the pre-sync: the frozen
        def late_write(run):               # window's tar stream must carry them
            os.makedirs(R + "/containers/%s/rootfs/late/dir" % a["name"], exist_ok=True)
            with open(R + "/containers/%s/rootfs/late/dir/file" % a["name"], "w") as fh:
                fh.write("written after the pre-sync")
        hooks["presync"] = late_write
    elif a.get("hook") == "kill_agent":  # the destination's agent dies after staging
        def kill_agent(run):
            subprocess.run(run.link.ssh_cmd(run.dest, "kill -9 %d" % run.link.agent_id[0]),
                           check=True)
        hooks["presync"] = kill_agent
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
                               runtime_path=a.get("runtime_path"), criu_path=a.get("criu_path"),
                               precopy=a.get("precopy"),
                               tcp_established=a.get("tcp_established", False),
                               check_mode=a.get("check", False))
    except Exception as exc:
        out = dict(failed=True, msg=str(exc), details=getattr(exc, "details", {}))
elif op == "spec":
    out = json.load(open(R + "/containers/%s/spec.json" % a["name"]))
elif op == "sh":
    out = dict(out=sh(a["cmd"]))
print(json.dumps(out, default=str))
'''.replace("@ROOT@", repr(ROOT))


VNI = 4277  # the overlay of segment_lab: mhbr0 of every host, subnet 10.77.0.0/24


def ctl_ns(lab):
    """Network namespace of the lab's controller side (outside every lab host)."""
    return "ctrhost-%s-ctl" % lab.name


def overlay(lab):
    """``host_network``'s overlay fleet network on ``mhbr0``: one L2 segment over the lab's
    LAN (the hosts' eth0), every lab host a peer."""
    return dict(bridges=[dict(name="mhbr0")],
                fleet=dict(mode="overlay", bridge="mhbr0", uplink="eth0", vni=VNI,
                           peers=sorted(lab.addrs.values())))


def setup_host(lab, i, host):
    """Template and container bridge on a lab host (its own address on the segment,
    10.77.0.250 + i), joined to the others' by the product's overlay (again after a reboot)."""
    helper(lab, host, "setup", bridge="10.77.0.%d/24" % (250 + i))
    res = lab.ansible(host, "ctrhost.fleet.host_network", overlay(lab))[host]
    assert not res.get("failed") and res["fleet"]["mode"] == "overlay", res


def overlay_ports(lab, host):
    """The VXLAN ports of ``host``'s mhbr0 with their VNI, read with ``ip``."""
    out = lab.host_exec(host, "ip -d -j link show master mhbr0 type vxlan").stdout
    return {x["ifname"]: x["linkinfo"]["info_data"]["id"] for x in json.loads(out or "[]")}


@contextlib.contextmanager
def segment_lab(name, containers=(NAME,)):
    """A 2-host lab whose container bridges ``mhbr0`` (10.77.0.250 and .251) share one L2
    segment: ``host_network``'s overlay fleet network, the product alone. The
    ``containers`` are removed from both hosts and the lab taken down at the end."""
    with helper_lab(name, 2, containers, addresses=lambda i: "10.77.0.%d/24" % (250 + i),
                    fleet=overlay) as lab:
        for host in lab.hosts:  # read back: the segment is the product's VXLAN port
            assert overlay_ports(lab, host) == {"ctrvx%d" % VNI: VNI}, host
        yield lab


FLEET = dict(bridges=[dict(name="mhbr0")], forwarding=dict(ipv4=True),
             fleet=dict(mode="routed", bridge="mhbr0", uplink="eth0"))


@contextlib.contextmanager
def helper_lab(name, count, containers, fleet=None, addresses=None):
    """``count`` lab hosts made ready for the helper (``setup``; ``lab.addrs``: host -> its
    address; ``addresses(i)``: the i-th host's addresses of ``mhbr0``, none by default),
    with ``host_network``'s ``fleet`` applied when given (a dict, or a function of the lab
    giving one); ``containers`` removed from every host and the lab taken down afterwards."""
    lab = Lab(name, count)
    lab.down()
    lab.up()
    try:
        lab.addrs = {h: lab.host(h)["address"] for h in lab.hosts}
        for i, host in enumerate(lab.hosts):
            helper(lab, host, "setup", bridge=addresses(i) if addresses else [])
        if fleet:
            applied = lab.ansible("all", "ctrhost.fleet.host_network",
                                  fleet(lab) if callable(fleet) else fleet)
            assert not any(r.get("failed") for r in applied.values()), applied
        yield lab
    finally:
        for host in lab.hosts:
            for each in containers:
                helper(lab, host, "remove", name=each, check=False)
        lab.down()


def routed_lab(name, containers=(NAME,)):
    """A 2-host lab whose container bridges are routed to the lab's LAN (the hosts' eth0)
    by ``host_network``'s routed fleet mode: the product alone, no segment of our own.
    Container addresses are LAN addresses (``lan_ip``)."""
    return helper_lab(name, 2, containers, FLEET)


def lan_ip(lab, suffix):
    """Address ``suffix`` of the lab's LAN (its hosts' eth0 subnet, a /24)."""
    return addr(lab, lab.hosts[0]).rsplit(".", 1)[0] + ".%d" % suffix


# A checkout's own lab name (CTRHOST_IT_LAB) gives this file a lab of its own too.
MG_LAB = os.environ["CTRHOST_IT_LAB"] + "m" if os.environ.get("CTRHOST_IT_LAB") else "mh"


@pytest.fixture(scope="module")
def mg():
    with segment_lab(MG_LAB) as lab:
        yield lab


@pytest.fixture(scope="module")
def mr():
    with routed_lab(MG_LAB + "r", (NAME, "mhp3")) as lab:
        yield lab


def helper(lab, host, op, check=True, **args):
    proc = lab.host_exec(host, [PY, "-c", HELPER, op, json.dumps(args)], check=check, timeout=300)
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def addr(lab, host):
    return lab.host(host)["address"]


def start(lab, host, ip=IP):
    helper(lab, host, "remove", name=NAME)
    helper(lab, host, "start", name=NAME, command=COMMAND,
           network=[dict(ifname="eth0", bridge="mhbr0", ipv4=ip, mac=MAC)])
    facts = helper(lab, host, "facts", name=NAME)
    assert facts["status"] == "running" and facts["mac"] == MAC and ip in facts["addrs"], facts
    return facts


def assert_moved(lab, src, dst, before):
    there = helper(lab, dst, "facts", name=NAME)
    here = helper(lab, src, "facts", name=NAME)
    assert there["status"] == "running", there
    # restored, not restarted: its counter went on from where it was (no upper bound: how far it
    # got depends on how long the host took to run it before the freeze and after the restore)
    assert int(there["c1"]) > int(before["c2"]), (before, there)
    assert int(there["c2"]) > int(there["c1"])  # it keeps counting on the destination
    assert there["before"] == "written before"
    assert there["mac"] == MAC and IP in there["addrs"], there
    # unprivileged (the default): the same map, and its files keep their owner on the host
    ids = _idmap.host_range()  # the lab's hosts share this machine's /etc/subuid
    assert there["uid_map"] == "0 %(uid)d %(size)d" % ids and there["owner"] == ids["uid"], there
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
    """The container is unprivileged (the default): its restored tasks open userfaultfd
    inside its user namespace, which needs vm.unprivileged_userfaultfd (host-wide) on."""
    a, b = mg.hosts
    before = start(mg, a)
    with userfaultfd_for_all("1"):
        res = helper(mg, a, "migrate", name=NAME, dest=addr(mg, b), mode="lazy", hook="late_write")
    assert not res.get("failed"), res
    if res["mode"] != "lazy":
        pytest.skip("lazy migration unusable here: %s (raise fs.pipe-max-size: scripts/setup)"
                    % res["fallback"])
    # the 32 MiB did not travel in the images: they were pulled through the page server
    assert res["bytes_moved"] < 8 * 2**20 and res["downtime"] < res["total_time"], res
    assert "pages_done" in res["timings"], res["timings"]
    moved = assert_moved(mg, a, b, before)
    # the files written after the pre-sync arrived through the stream (no rsync inside the
    # frozen window), read back in the destination's rootfs
    assert res["stats"]["transfer"]["rsync"] is False and res["rootfs_delta"], res["stats"]
    late = helper(mg, b, "sh", cmd="cat /var/lib/ctrhost/containers/%s/rootfs/late/dir/file" % NAME)
    assert late["out"] == "written after the pre-sync", late
    with userfaultfd_for_all("0"):  # refused ahead: the same move cold, and why
        back = helper(mg, b, "migrate", name=NAME, dest=addr(mg, a), mode="lazy")
    assert back["mode"] == "cold" and back["where"] == addr(mg, a), back
    assert "vm.unprivileged_userfaultfd=0" in back["fallback"], back["fallback"]
    assert_moved(mg, b, a, moved)


@contextlib.contextmanager
def userfaultfd_for_all(value, path="/proc/sys/vm/unprivileged_userfaultfd"):
    with open(path) as handle:
        saved = handle.read().strip()
    with open(path, "w") as handle:
        handle.write(value)
    try:
        yield
    finally:
        with open(path, "w") as handle:
            handle.write(saved)


def test_live_falls_back_to_cold_and_says_why(mg):
    a, b = mg.hosts
    before = start(mg, a)
    res = helper(mg, a, "migrate", name=NAME, dest=addr(mg, b), mode="live")
    assert res["mode_requested"] == "live" and res["mode"] == "cold", res
    assert "dirty memory" in res["fallback"], res["fallback"]
    assert_moved(mg, a, b, before)
    helper(mg, b, "remove", name=NAME)


@pytest.mark.parametrize("fault", ["corrupt", "corrupt_both", "kill_agent", "kill_sshd",
                                   "disk_full"])
def test_fault_leaves_it_running_on_the_source(mg, fault):
    a, b = mg.hosts
    before = start(mg, a)
    args = dict(name=NAME, dest=addr(mg, b), mode="cold")
    if fault in ("corrupt", "corrupt_both"):
        args["hook"] = fault
    elif fault == "kill_agent":
        args["hook"] = "kill_agent"
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
            setup_host(mg, 1, b)
    assert res.get("failed"), res
    assert "runs on source" in res["msg"], res["msg"]
    assert res["details"]["where"] == "source", res["details"]  # thawed: nothing restored
    assert_stayed(mg, a, b, before, leftovers=fault == "kill_sshd")
    # no CRIU network lock left in the source's netns (policy drop would cut it off)
    tables = helper(mg, a, "sh", cmd="ip netns exec ctrhost-%s nft list tables" % NAME)["out"]
    assert "CRIU" not in tables, tables
    if fault.startswith("corrupt"):  # the destination's error, with its log kept there
        assert "restore failed on" in res["details"]["error"], res["details"]
        log = res["details"].get("dest_log")
        assert log and helper(mg, b, "sh", cmd="test -s %s && echo kept" % log)["out"] == "kept"
    if fault == "kill_agent":  # a new session found the staging of the dead agent, removed it
        assert res["details"]["fence"] == "fenced", res["details"]
    if fault == "kill_sshd":
        # the killed agent could not fence: its staging is marked incoming (container_info
        # shows the marker) and the next preflight removes it
        marker = helper(mg, b, "spec", name=NAME)["incoming"]
        assert marker["agent"][0] > 0 and marker["from"] == a, marker
        now = helper(mg, a, "facts", name=NAME)
        again = helper(mg, a, "migrate", name=NAME, dest=addr(mg, b), mode="cold")
        assert not again.get("failed") and again["preflight"]["facts"]["cleaned"] is True, again
        # ... and the killed agent's unpacked code (its owner is gone): none is left. (The lab's
        # hosts share this machine's /tmp, so another lab's preflight may be the one that removed it.)
        assert dead_agent_dirs(mg, b) == 0, again["preflight"]
        assert_moved(mg, a, b, now)
    helper(mg, a, "remove", name=NAME)
    helper(mg, b, "remove", name=NAME)


# How many unpacked agents in /tmp belong to an agent that is gone (what a preflight removes).
DEAD_AGENTS = r'''
import json, os, sys, tempfile
sys.path.insert(0, os.path.join(@ROOT@, ".cache", "pytest-collections"))
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import leftovers
dead = 0
for leaf in os.listdir(tempfile.gettempdir()):
    owner = os.path.join(tempfile.gettempdir(), leaf, leftovers.OWNER)
    if leaf.startswith(leftovers.AGENT_PREFIX) and os.path.exists(owner):
        with open(owner) as handle:
            dead += not leftovers.alive(json.load(handle)[:2])
print(dead)
'''.replace("@ROOT@", repr(ROOT))


def dead_agent_dirs(lab, host):
    return int(lab.host_exec(host, [PY, "-c", DEAD_AGENTS]).stdout.strip())


SLOW_RUNC = """#!/bin/sh
# a destination whose runtime restores the container, then hangs before answering
/usr/sbin/runc "$@"; rc=$?
case " $* " in *" restore "*) echo $rc > /var/lib/ctrhost/mhrunc.restored; sleep 8;; esac
exit $rc
"""


def test_timeout_fences_the_destination_before_the_source_resumes(mg):
    a, b = mg.hosts
    before = start(mg, a)
    for host, text in ((a, '#!/bin/sh\nexec /usr/sbin/runc "$@"\n'), (b, SLOW_RUNC)):
        mg.host_exec(host, "cat > /var/lib/ctrhost/mhrunc && chmod 755 /var/lib/ctrhost/mhrunc",
                     input=text)
    res = helper(mg, a, "migrate", name=NAME, dest=addr(mg, b), mode="cold", timeout=4,
                 runtime_path="/var/lib/ctrhost/mhrunc")
    assert res.get("failed") and "no answer to restore within 4s" in res["msg"], res
    # the restore had succeeded there: the container ran on b when the source gave up
    assert helper(mg, b, "sh", cmd="cat /var/lib/ctrhost/mhrunc.restored")["out"] == "0"
    assert res["details"]["fence"] == "fenced", res["details"]
    assert res["details"]["where"] == "source", res["details"]  # only thawed
    assert_stayed(mg, a, b, before)
    procs = "cat /sys/fs/cgroup/pids/ctrhost/%s/" + NAME + "/cgroup.procs 2>/dev/null | wc -l"
    assert int(helper(mg, a, "sh", cmd=procs % a)["out"]) >= 3  # counter, dd, sleep, nc...
    assert helper(mg, b, "sh", cmd=procs % b)["out"] == "0"  # nothing of it left on b
    helper(mg, a, "remove", name=NAME)


def ping_gaps(text):
    """Longest run of missing replies in busybox ping's output (seq numbers)."""
    seqs = sorted({int(x.split("seq=")[1].split()[0]) for x in text.splitlines() if "seq=" in x})
    return max((b - a - 1 for a, b in zip(seqs, seqs[1:], strict=False)), default=0), seqs


CLIENT = r"""
import json, select, socket, sys, time
s = socket.create_connection((sys.argv[1], 7000), timeout=30)
f = s.makefile("rw")
n, gap, last, errors = 0, 0.0, time.monotonic(), []
while not select.select([sys.stdin], [], [], 0)[0]:
    try:
        f.write("%d\n" % n); f.flush()
        if f.readline().strip() != str(n):
            errors.append("bad echo at %d" % n); break
    except OSError as exc:
        errors.append(str(exc)); break
    now = time.monotonic(); gap = max(gap, now - last); last = now; n += 1
    time.sleep(0.02)
print(json.dumps(dict(count=n, max_gap=gap, errors=errors)))
"""


def test_tcp_connection_and_a_third_containers_ping_survive_the_move(mr):
    """A client on the controller side keeps one TCP connection to the container's echo
    server across the move (tcp_established; the routed fleet network moves its address
    along) while a third container on the destination pings it every 0.1 s."""
    mg = mr
    a, b = mg.hosts
    ip = lan_ip(mg, 200)
    start(mg, a, ip + "/24")
    helper(mg, b, "remove", name="mhp3")
    helper(mg, b, "start", name="mhp3", command="ping -i 0.1 %s" % ip,
           network=[dict(ifname="eth0", bridge="mhbr0", ipv4=lan_ip(mg, 201) + "/24",
                         gateway=lan_ip(mg, 1))])
    client = subprocess.Popen(["ip", "netns", "exec", ctl_ns(mg), PY, "-c", CLIENT, ip],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        res = helper(mg, a, "migrate", name=NAME, dest=addr(mg, b), mode="cold",
                     tcp_established=True)
        time.sleep(1.5)
        out, _err = client.communicate("stop\n", timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
    assert not res.get("failed"), res
    talk = json.loads(out)
    assert not talk["errors"] and talk["count"] > 50, talk
    # the client's retransmissions back off (0.2, 0.4, 0.8 s...): it resumes within
    # about twice the outage
    assert talk["max_gap"] < 2 * res["downtime"] + 1.0, (talk, res["downtime"])
    log = helper(mg, b, "sh", cmd="cat /var/lib/ctrhost/containers/mhp3/console.log")["out"]
    missing, seqs = ping_gaps(log)
    print("tcp %s, downtime %s, pings missing %d of %d" % (talk, res["downtime"], missing,
                                                           len(seqs)))
    assert len(seqs) > 20 and missing * 0.1 < res["downtime"] + 1.0, (missing, res["downtime"])
    helper(mg, b, "remove", name="mhp3")
    helper(mg, b, "remove", name=NAME)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
