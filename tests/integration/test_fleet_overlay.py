# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The overlay fleet network (``host_network``'s ``fleet: {mode: overlay}``) on a 3-host lab.

The product alone makes the segment: every host's container bridge gets a VXLAN port that
floods to the other hosts (their ``eth0`` addresses, the underlay). The containers' subnet
(10.78.0.0/24) is not on the lab's LAN: each host's bridge has an address of its own in it.
A container on the first host is reached from the third host and from a container on the
second host, and its address is refused to a container of the third host (the duplicate
address probe crosses the segment); it moves cold to the second host and live (cold when
the kernel says so) back, keeps its address and its memory (a counter), and is reached
again at once.
A host leaving the peer list and coming back touches only its own flood entries.
"""

import json
import os
import re
import shutil
import time

import pytest
from test_migrate import HELPER, PY, helper, helper_lab, ping_gaps

pytestmark = [pytest.mark.lab, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
              pytest.mark.skipif(not shutil.which("criu", path="/usr/local/sbin:/usr/sbin"),
                                 reason="needs CRIU")]

LAB = os.environ["CTRHOST_IT_LAB"] + "o" if os.environ.get("CTRHOST_IT_LAB") else "fo"
NAME, PINGER = "foweb", "foping"
BRIDGE, VNI, DEVICE = "mhbr0", 4242, "ctrvx4242"  # mhbr0: the bridge test_migrate's helper makes
IP, PING_IP = "10.78.0.11", "10.78.0.12"
MAC = "02:00:00:00:78:11"
COMMAND = "nc -ll -p 7000 -e cat & i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.05; done"
PLAYBOOK = os.path.join(os.path.dirname(__file__), "fleet_overlay.yml")


def overlay_args(lab, peers=None, **fleet):
    args = dict(mode="overlay", bridge=BRIDGE, uplink="eth0", vni=VNI,
                peers=sorted(lab.addrs.values()) if peers is None else peers)
    args.update(fleet)
    return dict(fleet=args)


def link(lab, host, name):
    """``ip -d -j link show NAME`` on ``host`` (None when it does not exist)."""
    out = lab.host_exec(host, "ip -d -j link show %s 2>/dev/null" % name, check=False).stdout
    return json.loads(out)[0] if out.strip() else None


def flood_list(lab, host):
    """The all-zero FDB entries' destinations of the VXLAN device, read with ``bridge``."""
    out = json.loads(lab.host_exec(host, "bridge -j fdb show dev %s" % DEVICE).stdout or "[]")
    return sorted(e["dst"] for e in out if e.get("mac") == "00:00:00:00:00:00")


def tunnel_of(lab, host, mac):
    """The underlay address ``host``'s VXLAN device sends frames for ``mac`` to (its learnt entry)."""
    out = json.loads(lab.host_exec(host, "bridge -j fdb show dev %s" % DEVICE).stdout or "[]")
    return next((e.get("dst") for e in out if e.get("mac") == mac and e.get("dst")), None)


def bridge_ip(lab, host):
    out = json.loads(lab.host_exec(host, "ip -j -4 addr show %s" % BRIDGE).stdout)
    return out[0]["addr_info"][0]["local"]


def pings(lab, host, ip, count=5, size=None):
    """Replies ``host`` gets of ``count`` echo requests to ``ip`` (0.2 s apart; busybox's ping,
    ``size`` bytes of data)."""
    extra = " -s %d" % size if size else ""
    out = lab.host_exec(host, "busybox ping -q -c %d -i 0.2 -W 1%s %s" % (count, extra, ip), check=False).stdout
    found = re.search(r"(\d+) packets received", out)
    return int(found.group(1)) if found else 0


@pytest.fixture(scope="module")
def fo():
    with helper_lab(LAB, 3, (NAME, PINGER, "fodup")) as lab:
        yield lab


def test_overlay_refused_input_check_mode_role_and_idempotence(fo):
    a, b, c = fo.hosts
    # (every other refusal of the options: tests/unit/net/test_overlay.py)
    for fleet, field, word in ((dict(vni=0), "fleet.vni", "1-16777215"),
                               (dict(peers=["10.0.0.1", "host-b"]), "fleet.peers[1]", "host-b")):
        bad = fo.ansible(a, "ctrhost.fleet.host_network", overlay_args(fo, **fleet), check=False)[a]
        assert bad.get("failed") and field in bad["msg"] and word in bad["msg"], (fleet, bad)
    too_big = dict(overlay_args(fo), bridges=[dict(name=BRIDGE, mtu=1500)])
    bad = fo.ansible(a, "ctrhost.fleet.host_network", too_big, check=False)[a]
    assert bad.get("failed") and "bridges[0].mtu" in bad["msg"] and "1450" in bad["msg"], bad
    assert link(fo, a, DEVICE) is None and "ctrhost-fleet" not in fo.host_exec(  # no residue
        a, "ip link show %s" % BRIDGE).stdout
    checked = fo.ansible(a, "ctrhost.fleet.host_network", overlay_args(fo), extra=("--check", "--diff"))[a]
    assert checked["changed"] and checked["fleet"]["mode"] == "overlay", checked
    assert link(fo, a, DEVICE) is None
    # the host role's variable, the peers from the play's hosts; a second run changes nothing
    role = fo.playbook(PLAYBOOK)
    assert not role.failed and role.changed == 3, role.stdout
    assert fo.playbook(PLAYBOOK).changed == 0
    again = fo.ansible("all", "ctrhost.fleet.host_network", dict(overlay_args(fo), persist=False),
                       extra=("--check",))
    assert not any(r["changed"] for r in again.values()), again
    # read back through the kernel: device, MTU, bridge port, flood list = the other hosts
    uplink_mtu = link(fo, a, "eth0")["mtu"]
    macs = set()
    for host in fo.hosts:
        dev = link(fo, host, DEVICE)
        data = dev["linkinfo"]["info_data"]
        assert dev["linkinfo"]["info_kind"] == "vxlan" and data["id"] == VNI and data["port"] == 4789, dev
        assert data["local"] == fo.addrs[host] and dev["master"] == BRIDGE and "UP" in dev["flags"], dev
        assert dev["mtu"] == uplink_mtu - 50 == link(fo, host, BRIDGE)["mtu"], dev
        assert flood_list(fo, host) == sorted(v for h, v in fo.addrs.items() if h != host)
        br = link(fo, host, BRIDGE)
        assert br["ifalias"] == "ctrhost-fleet overlay uplink=eth0 vni=%d" % VNI, br
        macs.add(br["address"])
        saved = json.loads(fo.host_exec(host, "cat /var/lib/ctrhost/host-network.json").stdout)["fleet"]
        assert saved["mode"] == "overlay" and saved["vni"] == VNI and len(saved["peers"]) == 3, saved
    assert len(macs) == 3, macs  # every host's bridge is a host of the segment of its own


def _facts(lab, host):
    facts = helper(lab, host, "facts", name=NAME)
    assert facts["status"] == "running", facts
    return facts


def test_reached_across_hosts_before_and_after_moves_and_peers_converge(fo):
    a, b, c = fo.hosts
    if link(fo, a, DEVICE) is None:
        fo.playbook(PLAYBOOK)
    helper(fo, a, "start", name=NAME, command=COMMAND,
           network=[dict(ifname="eth0", bridge=BRIDGE, ipv4=IP + "/24", gateway=bridge_ip(fo, a), mac=MAC)])
    helper(fo, b, "start", name=PINGER, command="ping -i 0.1 %s" % IP,
           network=[dict(ifname="eth0", bridge=BRIDGE, ipv4=PING_IP + "/24")])
    # the container interface took the overlay's MTU; a packet of that size crosses
    inner = json.loads(fo.host_exec(a, "ip -n ctrhost-%s -j link show eth0" % NAME).stdout)[0]
    assert inner["mtu"] == link(fo, a, DEVICE)["mtu"], inner
    assert pings(fo, c, IP, size=inner["mtu"] - 28) >= 4  # host 3 -> container on host 1
    # the duplicate address probe crosses the segment: host 3 cannot take host 1's address
    dup = fo.host_exec(c, [PY, "-c", HELPER, "start", json.dumps(dict(
        name="fodup", command="sleep 1000", network=[dict(ifname="eth0", bridge=BRIDGE, ipv4=IP + "/24")]))],
        check=False)
    assert dup.returncode != 0 and "%s is already in use on bridge %s" % (IP, BRIDGE) in dup.stderr \
        and MAC in dup.stderr, dup.stderr
    assert helper(fo, c, "facts", name="fodup")["status"] == "absent"
    before = _facts(fo, a)
    moves = []
    for src, dst, mode in ((a, b, "cold"), (b, a, "live")):
        t0 = time.monotonic()
        res = helper(fo, src, "migrate", name=NAME, dest=fo.addrs[dst], mode=mode)
        assert not res.get("failed"), res
        # the third host's tunnel learnt the move from the announcement (before it sent a thing)
        assert tunnel_of(fo, c, MAC) == fo.addrs[dst], (mode, res)
        reached = pings(fo, c, IP, count=3)
        moves.append(dict(mode=mode, used=res.get("mode"),
                          downtime=res.get("downtime") or res.get("details", {}).get("downtime"),
                          seconds=round(time.monotonic() - t0, 2), host3_replies=reached))
        assert reached >= 2, moves
        after = _facts(fo, dst)
        assert helper(fo, src, "facts", name=NAME)["status"] == "absent"
        assert after["mac"] == MAC and IP + "/24" in after["addrs"], after
        assert int(after["c1"]) > int(before["c2"]), (before, after)  # the counter went on
        before = after
    # a host leaves the peer list and joins again: the others' traffic goes on
    without_c = sorted(v for h, v in fo.addrs.items() if h != c)
    index = link(fo, a, DEVICE)["ifindex"]
    left = fo.ansible("%s:%s" % (a, b), "ctrhost.fleet.host_network", overlay_args(fo, peers=without_c))
    assert all(r["changed"] and r["fleet"]["peers"] == [p for p in without_c if p != fo.addrs[h]]
               for h, r in left.items()), left
    assert flood_list(fo, a) == [fo.addrs[b]] and flood_list(fo, b) == [fo.addrs[a]]
    assert link(fo, a, DEVICE)["ifindex"] == index  # the same device: entries changed, nothing else
    assert pings(fo, b, IP) >= 4
    joined = fo.playbook(PLAYBOOK)
    assert joined.changed == 2, joined.stdout
    assert flood_list(fo, a) == sorted([fo.addrs[b], fo.addrs[c]])
    assert pings(fo, c, IP) >= 4
    log = helper(fo, b, "sh", cmd="cat /var/lib/ctrhost/containers/%s/console.log" % PINGER)["out"]
    missing, seqs = ping_gaps(log)
    print("\noverlay: moves %s; the container on host 2 missed at most %d pings in a row (of %d)"
          % (json.dumps(moves), missing, len(seqs)))
    assert len(seqs) > 50 and missing * 0.1 < 1.5 + max(m["downtime"] or 0 for m in moves), (missing, moves)
