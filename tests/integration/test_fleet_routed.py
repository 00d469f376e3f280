# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The routed fleet network (``host_network``'s ``fleet: {mode: routed}``) on a 3-host lab.

The product alone makes the network: every host's container bridge is routed to the
lab's LAN (the hosts' ``eth0``); containers take LAN addresses. A client on the lab's
controller side (outside every container host) holds a TCP connection to a container
while a container on the third host pings it, and the container moves cold, lazy and
live (on this kernel live and lazy may fall back to cold) between the first two hosts,
and once fails to move (its images damaged there). Nothing resets; the longest gap and
the network's part of it (the gap less the move's downtime) are printed.
"""

import json
import os
import shutil
import subprocess
import time

import pytest
from lab import ROOT
from test_migrate import HELPER, PY, helper, helper_lab, ping_gaps

pytestmark = [pytest.mark.lab, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
              pytest.mark.skipif(not shutil.which("criu", path="/usr/local/sbin:/usr/sbin"),
                                 reason="needs CRIU")]

LAB = os.environ["CTRHOST_IT_LAB"] + "r" if os.environ.get("CTRHOST_IT_LAB") else "fr"
NAME, PINGER = "frweb", "frping"
BRIDGE = "mhbr0"  # the bridge test_migrate's helper makes
MAC = "02:00:00:00:78:10"
# busybox: an echo server on port 7000, and a counter in memory
COMMAND = "nc -ll -p 7000 -e cat & i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.05; done"

CLIENT = r"""
import json, select, socket, sys, time
s = socket.create_connection((sys.argv[1], 7000), timeout=30)
port, f = s.getsockname()[1], s.makefile("rw")
interval = float(sys.argv[2]) if len(sys.argv) > 2 else 0.02
n, gaps, last, errors = 0, [], time.monotonic(), []
while not select.select([sys.stdin], [], [], 0)[0]:
    try:
        f.write("%d\n" % n); f.flush()
        if f.readline().strip() != str(n):
            errors.append("bad echo at %d" % n); break
    except OSError as exc:
        errors.append(str(exc)); break
    now = time.monotonic()
    if now - last > 0.2:
        gaps.append([round(last, 3), round(now - last, 3)])
    last = now; n += 1
    time.sleep(interval)
print(json.dumps(dict(count=n, gaps=gaps, errors=errors, last=last, port=port, port_end=s.getsockname()[1])))
"""


# ICMP echo every 20 ms from the controller side: the times replies came back (no back-off,
# unlike TCP's retransmissions, so the longest silence is the outage the network shows).
ECHO = r"""
import json, os, select, socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
def csum(b):
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b)); t = (t & 0xffff) + (t >> 16)
    return ~(t + (t >> 16)) & 0xffff
seq, got, nxt = 0, [], time.monotonic()
while not select.select([sys.stdin], [], [], 0)[0]:
    now = time.monotonic()
    if now >= nxt:
        pkt = struct.pack("!BBHHH", 8, 0, 0, 4242, seq & 0xffff) + b"x" * 16
        s.sendto(pkt[:2] + struct.pack("!H", csum(pkt)) + pkt[4:], (sys.argv[1], 0))
        seq += 1; nxt += 0.02
    if select.select([s], [], [], max(0, min(0.02, nxt - time.monotonic())))[0]:
        data = s.recv(2048)
        if data[20] == 0 and struct.unpack("!H", data[24:26])[0] == 4242:
            got.append(round(time.monotonic(), 3))
print(json.dumps(dict(sent=seq, got=got)))
"""


def silence(times, start, end):
    """(the longest time without an echo reply between ``start`` and ``end``, when it began)."""
    inside = [t for t in times if start <= t <= end]
    pairs = [(b - a, a) for a, b in zip(inside, inside[1:], strict=False)]
    gap, began = max(pairs, default=(end - start, start))
    return round(gap, 3), began


def ctl_ns(lab):
    return "ctrhost-%s-ctl" % lab.name


def fleet_args(uplink="eth0"):
    return dict(bridges=[dict(name=BRIDGE)], forwarding=dict(ipv4=True),
                fleet=dict(mode="routed", bridge=BRIDGE, uplink=uplink))


def lan(lab, suffix):
    """An address of the lab's LAN (the hosts' eth0 subnet)."""
    return next(iter(lab.addrs.values())).rsplit(".", 1)[0] + ".%d" % suffix


def bridge_mac(lab, host):
    return json.loads(lab.host_exec(host, "ip -j link show %s" % BRIDGE).stdout)[0]["address"]


def published(lab, host, ip):
    """(host route proto 242 to the bridge, proxy entry on eth0) for ``ip`` on ``host``, read
    with ``ip``."""
    routes = lab.host_exec(host, "ip -4 route show proto 242").stdout
    proxies = lab.host_exec(host, "ip -4 neigh show proxy").stdout
    return (any(line.split()[:3] == [ip, "dev", BRIDGE] for line in routes.splitlines()),
            any(line.split()[:3] == [ip, "dev", "eth0"] for line in proxies.splitlines()))


@pytest.fixture(scope="module")
def fr():
    with helper_lab(LAB, 3, (NAME, PINGER, "frdup")) as lab:
        yield lab


def test_routed_mode_check_mode_apply_idempotent_and_refused_input(fr):
    a = fr.hosts[0]
    bad = fr.ansible(a, "ctrhost.fleet.host_network", fleet_args(uplink="nosuch0"), check=False)[a]
    assert bad.get("failed") and "fleet.uplink" in bad["msg"] and "nosuch0" in bad["msg"], bad
    mac_before = bridge_mac(fr, a)
    assert "ctrhost-fleet" not in fr.host_exec(a, "ip link show %s" % BRIDGE).stdout  # no residue
    checked = fr.ansible(a, "ctrhost.fleet.host_network", fleet_args(), extra=("--check",))[a]
    assert checked["changed"] and checked["fleet"]["mode"] == "routed", checked
    assert bridge_mac(fr, a) == mac_before
    results = fr.ansible("all", "ctrhost.fleet.host_network", fleet_args())
    assert all(r["changed"] for r in results.values()), results
    again = fr.ansible("all", "ctrhost.fleet.host_network", fleet_args())
    assert not any(r["changed"] for r in again.values()), again
    # read back through the kernel: one bridge MAC on every host, the sysctls, the mark
    macs = {bridge_mac(fr, h) for h in fr.hosts}
    assert len(macs) == 1 and mac_before not in macs, macs
    for host in fr.hosts:
        out = fr.host_exec(host, "cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/%s/proxy_arp "
                                 "/proc/sys/net/ipv4/neigh/eth0/proxy_delay; ip link show %s"
                           % (BRIDGE, BRIDGE)).stdout
        assert out.split()[:3] == ["1", "1", "0"] and "alias ctrhost-fleet routed uplink=eth0" in out, out
        saved = json.loads(fr.host_exec(host, "cat /var/lib/ctrhost/host-network.json").stdout)
        assert saved["fleet"] == dict(mode="routed", bridge=BRIDGE, uplink="eth0"), saved
    # what a reboot loses, the boot unit's script applies again from host-network.json
    fr.host_exec(a, "echo 0 > /proc/sys/net/ipv4/conf/%s/proxy_arp; ip link set %s address 02:00:00:00:00:99 "
                    "alias 'nothing here'" % (BRIDGE, BRIDGE))
    fr.host_exec(a, [PY, os.path.join(ROOT, "roles", "host", "files", "ctrhost-autostart"),
                     "--lib", os.path.join(ROOT, ".cache", "pytest-collections"), "start"])
    out = fr.host_exec(a, "cat /proc/sys/net/ipv4/conf/%s/proxy_arp; ip link show %s" % (BRIDGE, BRIDGE)).stdout
    assert out.startswith("1") and "alias ctrhost-fleet routed uplink=eth0" in out, out
    assert bridge_mac(fr, a) in macs


def _move(lab, src, dst, mode, **extra):
    t0 = time.monotonic()
    res = helper(lab, src, "migrate", name=NAME, dest=lab.addrs[dst], mode=mode,
                 tcp_established=True, **extra)
    return res, t0, time.monotonic()


def test_tcp_client_and_a_third_hosts_ping_survive_moves(fr):
    a, b, c = fr.hosts
    # the host role's variable (ctrhost_fleet_network) declares the same; a second run changes nothing
    playbook = os.path.join(os.path.dirname(__file__), "fleet_routed.yml")
    role = fr.playbook(playbook)
    assert not role.failed and all(r["fleet"]["mode"] == "routed" for _t, _h, r in role.results()
                                   if "fleet" in r), role.stdout
    assert fr.playbook(playbook).changed == 0
    ip, ping_ip, gw = lan(fr, 200), lan(fr, 201), lan(fr, 1)
    helper(fr, a, "start", name=NAME, command=COMMAND,
           network=[dict(ifname="eth0", bridge=BRIDGE, ipv4=ip + "/24", gateway=gw, mac=MAC)])
    assert published(fr, a, ip) == (True, True)
    # the duplicate address check sees the proxy answer of the host that holds the address
    dup = fr.host_exec(c, [PY, "-c", HELPER, "start", json.dumps(dict(
        name="frdup", command="sleep 1000", network=[dict(ifname="eth0", bridge=BRIDGE, ipv4=ip + "/24")]))],
        check=False)
    assert dup.returncode != 0 and "%s is already in use on the fleet's LAN" % ip in dup.stderr, dup.stderr
    dup_facts = helper(fr, c, "facts", name="frdup")
    assert dup_facts["status"] == "absent" and not dup_facts["bundle"] and not published(fr, c, ip)[0], dup_facts
    helper(fr, c, "start", name=PINGER, command="ping -i 0.1 %s" % ip,
           network=[dict(ifname="eth0", bridge=BRIDGE, ipv4=ping_ip + "/24", gateway=gw)])
    client = subprocess.Popen(["ip", "netns", "exec", ctl_ns(fr), PY, "-c", CLIENT, ip],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    echo = subprocess.Popen(["ip", "netns", "exec", ctl_ns(fr), PY, "-c", ECHO, ip],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    moves = []
    try:
        time.sleep(1.0)
        for src, dst, mode, hook in ((a, b, "cold", None), (b, a, "lazy", None), (a, b, "live", None),
                                     (b, a, "cold", "corrupt")):
            res, t0, t1 = _move(fr, src, dst, mode, **({"hook": hook} if hook else {}))
            where = src if hook else dst
            other = dst if hook else src
            # one host answers for it: the one it runs on (after a failed move: the source)
            assert published(fr, where, ip) == (True, True), (mode, hook, res)
            assert published(fr, other, ip) == (False, False), (mode, hook, res)
            assert bool(res.get("failed")) == bool(hook), res
            moves.append(dict(mode=mode, used=res.get("mode"), failed=bool(hook), t0=t0, t1=t1,
                              downtime=res.get("downtime") or res.get("details", {}).get("downtime")))
            time.sleep(1.5)
        out, _err = client.communicate("stop\n", timeout=60)
        echoed, _err = echo.communicate("stop\n", timeout=60)
    finally:
        for proc in (client, echo):
            if proc.poll() is None:
                proc.kill()
    talk, echoed = json.loads(out), json.loads(echoed)
    assert not talk["errors"] and talk["count"] > 100, talk  # no reset, no lost byte
    assert len(echoed["got"]) > 0.8 * echoed["sent"] - 50 * len(moves), echoed["sent"]
    longest = max((g for _at, g in talk["gaps"]), default=0.0)
    for move in moves:
        gaps = [g for at, g in talk["gaps"] if move["t0"] - 1 <= at <= move["t1"] + 1]
        move["tcp_gap"] = max(gaps, default=0.0)
        move["echo_gap"], _began = silence(echoed["got"], move["t0"], move["t1"] + 1)
        # the network's part of the outage: the silence less the frozen window
        move["converged"] = round(max(0.0, move["echo_gap"] - (move["downtime"] or 0)), 3)
    log = helper(fr, c, "sh", cmd="cat /var/lib/ctrhost/containers/%s/console.log" % PINGER)["out"]
    missing, seqs = ping_gaps(log)
    print("\nrouted: longest TCP gap %.3f s, third host's pings missing %d of %d; moves:\n%s"
          % (longest, missing, len(seqs), "\n".join(
              json.dumps({k: v for k, v in m.items() if k not in ("t0", "t1")}) for m in moves)))
    assert len(seqs) > 50 and missing * 0.1 < 1.5 * len(moves), (missing, moves)
    for move in moves:
        if not move["failed"]:  # TCP resumes within about twice the outage (its back-off)
            assert move["converged"] < 0.5, move
            assert move["tcp_gap"] < 2 * move["echo_gap"] + 1.0, move
    facts = helper(fr, b, "facts", name=NAME)
    assert facts["status"] == "running" and facts["mac"] == MAC, facts
