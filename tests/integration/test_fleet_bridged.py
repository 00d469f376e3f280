# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The bridged fleet network (``host_network``'s ``fleet: {mode: bridged}``) on a 2-host lab.

Every lab host is a network namespace whose ``eth0`` (a veth) carries the controller's SSH
session. The host role makes ``vmbr0`` take ``eth0`` with the host's addresses and routes over
the lab's real SSH, and confirms the change over a new connection; read back through the
kernel (``ip``), the host still answers SSH and a container on ``vmbr0`` is on the lab's LAN
itself: the controller side reaches it at its own MAC (no NAT, no routing) and so does the
other host. A client on the controller side holds one TCP connection to a container while a
container on the second host pings it, and the container moves cold, lazy and live (live
falls back to cold on a kernel without soft-dirty tracking) between the two bridged hosts:
nothing resets, its memory goes on; the longest gaps are printed. Then the way back
(``state: absent``), and a change nobody confirms: the host that stops answering puts its
previous network back by itself within the timeout.
"""

import json
import os
import re
import shutil
import subprocess
import time

import pytest
# COMMAND: a busybox echo server on port 7000 and a counter; CLIENT: one TCP connection, a line
# every interval (50 ms here), the silences over 0.2 s, the last echo's time, the local port at
# the start and the end
from test_fleet_routed import CLIENT, COMMAND
from test_migrate import PY, helper, helper_lab, lan_ip, ping_gaps, userfaultfd_for_all

pytestmark = [pytest.mark.lab, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
              pytest.mark.skipif(not shutil.which("busybox"), reason="needs busybox")]

LAB = os.environ["CTRHOST_IT_LAB"] + "b" if os.environ.get("CTRHOST_IT_LAB") else "fb"
NAME, BRIDGE, MAC = "fbweb", "vmbr0", "02:00:00:00:79:3d"
PINGER = "fbping"
PLAYBOOK = os.path.join(os.path.dirname(__file__), "fleet_bridged.yml")
ROOT = "/var/lib/ctrhost"


def bridged(**fleet):
    args = dict(mode="bridged", bridge=BRIDGE, uplink="eth0")
    args.update(fleet)
    return args


def ipj(lab, host, *args):
    out = lab.host_exec(host, ["ip", "-j", *args], check=False).stdout
    return json.loads(out) if out.strip() else []


def network(lab, host):
    """The kernel's view: {ifname: (master, mac, [addresses])} and the main table's routes."""
    links = {li["ifname"]: (li.get("master"), li["address"],
                            sorted("%s/%d" % (a["local"], a["prefixlen"]) for a in li.get("addr_info", [])
                                   if a.get("scope") == "global"))
             for li in ipj(lab, host, "addr", "show")}
    routes = sorted("%s dev %s" % (r["dst"], r["dev"]) for r in ipj(lab, host, "route", "show")
                    + ipj(lab, host, "-6", "route", "show") if r.get("protocol") != "kernel"
                    and not r["dst"].startswith("fe80") and r["dst"] != "multicast")
    return links, routes


def answers(lab, host):
    """Whether ``host`` answers a new SSH connection from the controller side within 3 s."""
    return lab.exec(["ssh", "-i", os.path.join(lab.dir, "id_ed25519"), "-o", "BatchMode=yes", "-o",
                     "ConnectTimeout=3", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                     "-o", "LogLevel=ERROR", "root@%s" % lab.addrs[host], "true"], check=False,
                    timeout=15).returncode == 0


def pings(lab, ip, host=None, count=3):
    cmd = "busybox ping -q -c %d -i 0.2 -W 1 %s" % (count, ip)
    out = (lab.host_exec(host, cmd, check=False) if host else lab.exec(cmd, check=False)).stdout
    found = re.search(r"(\d+) packets received", out)
    return int(found.group(1)) if found else 0


@pytest.fixture(scope="module")
def fb():
    with helper_lab(LAB, 2, (NAME, PINGER)) as lab:
        lab.first = network(lab, lab.hosts[0])
        yield lab


def test_role_bridges_the_uplink_over_ssh_and_containers_are_on_the_lan(fb):
    a, b = fb.hosts
    links, routes = fb.first
    mac, addrs = links["eth0"][1], links["eth0"][2]
    assert links["eth0"][0] is None and addrs and any(r.startswith("default dev eth0") for r in routes), fb.first
    predicted = fb.playbook(PLAYBOOK, limit=a, check_mode=True)
    assert predicted.changed == 1 and network(fb, a) == fb.first, predicted.stdout
    t0 = time.monotonic()
    run = fb.playbook(PLAYBOOK, limit=a, diff=True)
    seconds = time.monotonic() - t0
    tasks = {name.split(" : ")[-1]: res for name, host, res in run.results() if host == a}
    applied, confirmed = tasks["Container bridges, forwarding and routes"], \
        tasks["Confirm the moved network (else the host rolls it back by itself)"]
    assert run.changed == predicted.changed == 1, run.stdout
    assert applied["fleet"]["pending"] and not applied["fleet"]["confirmed"], applied
    assert confirmed["fleet"]["confirmed"] and not confirmed["changed"], confirmed
    # read back through the kernel: the NIC is a port, the host's addresses and routes are the bridge's
    links, routes = network(fb, a)
    assert links["eth0"][0] == BRIDGE and links["eth0"][2] == [], links
    assert links[BRIDGE][1] == mac and links[BRIDGE][2] == addrs, links  # the LAN sees the same MAC
    assert routes == [r.replace("dev eth0", "dev " + BRIDGE) for r in fb.first[1]], routes
    assert "ctrhost-fleet bridged uplink=eth0" in fb.host_exec(a, "ip -d link show %s" % BRIDGE).stdout
    assert fb.host_exec(a, "test -e %s/network-pending.json" % ROOT, check=False).returncode == 1
    saved = json.loads(fb.host_exec(a, "cat %s/host-network.json" % ROOT).stdout)["fleet"]
    assert saved["mode"] == "bridged" and saved["uplink"] == "eth0", saved
    assert answers(fb, a)
    again = fb.playbook(PLAYBOOK, limit=a)
    assert again.changed == 0 and fb.playbook(PLAYBOOK, limit=a, check_mode=True).changed == 0, again.stdout
    # a container on the bridge is on the LAN: the controller side reaches it at its own MAC
    ip = lan_ip(fb, 61)
    helper(fb, a, "start", name=NAME, command="sleep 100000",
           network=[dict(ifname="eth0", bridge=BRIDGE, ipv4=ip + "/24", mac=MAC)])
    assert pings(fb, ip) >= 2
    neigh = json.loads(fb.exec("ip -j neigh show %s" % ip).stdout)
    assert neigh and neigh[0]["lladdr"] == MAC, neigh  # L2: no NAT, no router between
    assert pings(fb, ip, host=b) >= 2
    # the port filter guards the container's port; the uplink port is not in its map
    ports = fb.host_exec(a, "nft -j list map bridge ctrhost_ports ports").stdout
    elems = [e[0] for m in json.loads(ports)["nftables"] if "map" in m for e in m["map"].get("elem", [])]
    assert len(elems) == 1 and "eth0" not in elems, elems
    print("\nbridged: the role applied and confirmed in %.1f s" % seconds)


def replies(lab, host):
    """(the newest seq the pinger on ``host`` got a reply for, then 0.5 s later all of them)."""
    log = "%s/containers/%s/console.log" % (ROOT, PINGER)
    out = helper(lab, host, "sh", cmd="grep -o 'seq=[0-9]*' %s | tail -n1; sleep 0.5; echo --; cat %s"
                 % (log, log))["out"]
    first, _sep, rest = out.partition("--")
    return int(first.strip().split("=")[1]) if "=" in first else 0, ping_gaps(rest)[1]


def _running(lab, host):
    facts = helper(lab, host, "facts", name=NAME)
    assert facts["status"] == "running" and facts["mac"] == MAC, (host, facts)
    return facts


def test_tcp_client_and_the_other_hosts_ping_survive_moves_on_the_lan(fb):
    a, b = fb.hosts
    role = fb.playbook(PLAYBOOK)  # both hosts bridged (host 1 already is after the first test)
    assert not role.failed, role.stdout
    assert all(network(fb, h)[0]["eth0"][0] == BRIDGE for h in fb.hosts)
    ip, ping_ip = lan_ip(fb, 61), lan_ip(fb, 62)
    helper(fb, a, "remove", name=NAME)
    helper(fb, a, "start", name=NAME, command=COMMAND,
           network=[dict(ifname="eth0", bridge=BRIDGE, ipv4=ip + "/24", mac=MAC)])
    helper(fb, b, "start", name=PINGER, command="ping -i 0.1 %s" % ip,
           network=[dict(ifname="eth0", bridge=BRIDGE, ipv4=ping_ip + "/24")])
    before = _running(fb, a)
    client = subprocess.Popen(["ip", "netns", "exec", "ctrhost-%s-ctl" % fb.name, PY, "-c", CLIENT, ip, "0.05"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    moves, seen = [], replies(fb, b)[0]
    try:
        time.sleep(1.0)
        for src, dst, mode in ((a, b, "cold"), (b, a, "lazy"), (a, b, "live"), (b, a, "cold")):
            t0 = time.monotonic()
            if mode == "lazy":  # its restored tasks open userfaultfd in its user namespace
                with userfaultfd_for_all("1"):
                    res = helper(fb, src, "migrate", name=NAME, dest=fb.addrs[dst], mode=mode,
                                 tcp_established=True)
            else:
                res = helper(fb, src, "migrate", name=NAME, dest=fb.addrs[dst], mode=mode,
                             tcp_established=True)
            t1 = time.monotonic()
            assert not res.get("failed"), res
            # only the destination has it, restored (its counter went on), at its address and MAC
            after = _running(fb, dst)
            assert helper(fb, src, "facts", name=NAME)["status"] == "absent", (mode, src)
            assert int(after["c1"]) > int(before["c2"]) and ip + "/24" in after["addrs"], (before, after)
            before = after
            time.sleep(0.5)
            # the pinger's replies since the previous move, and the seqs missing among them; a
            # reply newer than the newest one 0.5 s after the move: the pings resumed
            last, seqs = replies(fb, b)
            seqs = [q for q in seqs if q >= seen]
            assert seqs and seqs[-1] > last >= seen, (mode, seen, last, seqs[-3:])
            moves.append(dict(mode=mode, used=res["mode"], fallback=res.get("fallback"),
                              downtime=res.get("downtime"), t0=t0, t1=t1,
                              pings_lost=seqs[-1] - seqs[0] + 1 - len(seqs)))
            seen = seqs[-1]
        out, _err = client.communicate("stop\n", timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
    talk = json.loads(out)
    # no reset: every line came back on the one connection it opened
    assert not talk["errors"] and talk["port"] == talk["port_end"], talk
    assert talk["count"] > 10 * len(moves) and talk["last"] > moves[-1]["t1"], talk  # and it goes on
    for move in moves:
        move["tcp_gap"] = max((g for at, g in talk["gaps"] if move["t0"] - 1 <= at <= move["t1"] + 1),
                              default=0.0)
    print("\nbridged: %d lines echoed on one connection, longest TCP gap %.3f s; moves:\n%s"
          % (talk["count"], max((g for _at, g in talk["gaps"]), default=0.0), "\n".join(
              json.dumps({k: v for k, v in m.items() if k not in ("t0", "t1")}) for m in moves)))
    helper(fb, b, "remove", name=PINGER)


def test_absent_gives_the_network_back_to_the_nic(fb):
    a, _b = fb.hosts
    helper(fb, a, "remove", name=NAME)
    checked = fb.ansible(a, "ctrhost.fleet.host_network", dict(fleet=bridged(state="absent")),
                         extra=("--check", "--diff"))[a]
    assert checked["changed"] and network(fb, a)[0]["eth0"][0] == BRIDGE, checked
    undo = fb.ansible(a, "ctrhost.fleet.host_network",
                      dict(fleet=bridged(state="absent"), bridges=[dict(name=BRIDGE, state="absent")]))[a]
    assert undo["changed"] and undo["fleet"]["mode"] is None, undo
    assert network(fb, a) == fb.first  # addresses, routes and the NIC as before; the bridge gone
    assert answers(fb, a)
    again = fb.ansible(a, "ctrhost.fleet.host_network", dict(fleet=bridged(state="absent")))[a]
    assert not again["changed"], again


def test_a_host_that_stops_answering_rolls_back_by_itself(fb):
    a, _b = fb.hosts
    before = fb.host_exec(a, "cat %s/host-network.json" % ROOT).stdout
    res = fb.ansible(a, "ctrhost.fleet.host_network",
                     dict(bridges=[dict(name=BRIDGE)], fleet=bridged(rollback_timeout=10)))[a]
    armed = time.monotonic()
    assert res["changed"] and res["fleet"]["pending"], res
    assert network(fb, a)[0]["eth0"][0] == BRIDGE
    # the host stops answering: the bridge that holds its addresses goes down (no confirmation can come)
    fb.host_exec(a, "ip link set %s down" % BRIDGE)
    assert not answers(fb, a)
    while not answers(fb, a):
        assert time.monotonic() - armed < 30, network(fb, a)
        time.sleep(1)
    back = time.monotonic() - armed
    assert network(fb, a) == fb.first  # nothing of the bridge is left: addresses, routes, NIC
    assert fb.host_exec(a, "ip link show %s" % BRIDGE, check=False).returncode != 0
    assert fb.host_exec(a, "cat %s/host-network.json" % ROOT).stdout == before
    assert fb.host_exec(a, "test -e %s/network-pending.json" % ROOT, check=False).returncode == 1
    done = json.loads(fb.host_exec(a, "cat %s/network-rollback.json" % ROOT).stdout)
    assert done["bridge"] == BRIDGE and done["errors"] == [], done
    print("\nbridged: rollback_timeout 10 s; the host answered SSH again %.1f s after the change" % back)
