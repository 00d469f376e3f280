"""Isolation on the namespace lab (lab ``is``, 2 hosts whose container bridges share one
segment made by the product, ``host_network``'s overlay fleet network, as in
``test_migrate.segment_lab``): address conflicts refused through the container module,
a real container's forged gratuitous ARP stopped at its port, filters and the bridge MAC
across a migration with a neighbour's traffic, and secrets kept out of every output.

Every effect is read inside the lab hosts by another path: ``nft``/``ip`` listings, the
neighbour's ping log, file modes, /proc/<pid>/environ.
"""

import json
import os
import shutil
import subprocess
import time

import pytest
from test_migrate import HELPER, IP, MAC, NAME, PY, addr, helper, ping_gaps, segment_lab, start

from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import idmap as _idmap

pytestmark = [pytest.mark.lab, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
              pytest.mark.skipif(not shutil.which("criu", path="/usr/local/sbin:/usr/sbin"),
                                 reason="needs CRIU"),
              pytest.mark.skipif(not os.path.exists("/usr/lib/python3/dist-packages/nftables"),
                                 reason="needs python3-nftables")]
NEIGHBOUR, ATTACKER, SECRET_CT = "isn1", "isx1", "iss1"
SECRET = "s3cr3t-Value-81"
assert HELPER and PY  # the lab-host helper of test_migrate runs these tests' steps too


@pytest.fixture(scope="module")
def iso():
    with segment_lab("is", (NAME, NEIGHBOUR, ATTACKER, SECRET_CT, "isdup")) as lab:
        yield lab


def sh(lab, host, cmd):
    return helper(lab, host, "sh", cmd=cmd)["out"]


def bridge_mac(lab, host):
    return json.loads(sh(lab, host, "ip -j link show mhbr0"))[0]["address"]


def port_chain(lab, host, name):
    veth = json.loads(sh(lab, host, "cat /var/lib/ctrhost/containers/%s/spec.json" % name)
                      or "{}").get("network", [{}])[0].get("host_veth")
    return veth, sh(lab, host, "nft list chain bridge ctrhost_ports port_%s 2>/dev/null" % veth)


def neigh(lab, host, address, netns=None):
    out = sh(lab, host, "ip %s -j neigh show %s" % ("-n " + netns if netns else "", address))
    entries = json.loads(out or "[]")
    return entries[0].get("lladdr") if entries else None


def test_address_taken_on_the_host_or_the_segment_is_refused(iso):
    a, b = iso.hosts
    start(iso, a)  # NAME holds 10.77.0.10 on a
    helper(iso, b, "remove", name=NEIGHBOUR)
    helper(iso, b, "start", name=NEIGHBOUR, command="sleep 100000",
           network=[dict(bridge="mhbr0", ipv4="10.77.0.31/24")])
    for host, ipv4, holder in ((b, "10.77.0.31/24", "'%s'" % NEIGHBOUR),  # same host: the spec
                               (b, IP, MAC)):  # a container of the other host: the probe
        for check in (("--check",), ()):
            res = iso.ansible(host, "ctrhost.fleet.container", dict(
                name="isdup", template="busybox", command="sleep 1000",
                network=[dict(bridge="mhbr0", ipv4=ipv4)]), check=False, extra=check)[host]
            assert res.get("failed") and "network[0].ipv4" in res["msg"] and holder in res["msg"], res
            assert not sh(iso, host, "ls /var/lib/ctrhost/containers | grep isdup; "
                                     "ls /run/netns | grep isdup")
    # a live re-address onto a taken address is refused too, and the container keeps its own
    res = iso.ansible(b, "ctrhost.fleet.container", dict(
        name=NEIGHBOUR, network=[dict(bridge="mhbr0", ipv4=IP)]), check=False)[b]
    assert res.get("failed") and "network[0].ipv4" in res["msg"] and MAC in res["msg"], res
    assert "10.77.0.31" in sh(iso, b, "ip -n ctrhost-%s addr show eth0" % NEIGHBOUR)
    helper(iso, b, "remove", name=NEIGHBOUR)
    helper(iso, a, "remove", name=NAME)


# Run by /usr/bin/python3 inside the attacker container (the host's /usr bound read-only):
# from a packet socket (CAP_NET_RAW, in the default set), every 0.1 s: a gratuitous ARP
# for the victim's address, the same from another MAC, a UDP packet from the victim's
# address, and the ARP again in a VLAN tag.
ATTACK = r"""
import socket, struct, sys, time
victim, gw = socket.inet_aton(sys.argv[1]), socket.inet_aton(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
mine = s.getsockname()[4][:6]
def arp(mac):
    return struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, mac, victim, b"\xff" * 6, victim)
def csum(b):
    t = sum(struct.unpack("!10H", b))
    t = (t & 0xFFFF) + (t >> 16)
    return ~((t & 0xFFFF) + (t >> 16)) & 0xFFFF
udp = struct.pack("!HHHH", 4000, 4000, 12, 0) + b"lies"
hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, victim, gw)
hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
while True:
    s.send(b"\xff" * 6 + mine + b"\x08\x06" + arp(mine))
    s.send(b"\xff" * 6 + b"\x02\x66\x66\x66\x66\x66" + b"\x08\x06" + arp(b"\x02\x66\x66\x66\x66\x66"))
    s.send(b"\xff" * 6 + mine + b"\x08\x00" + hdr + udp)
    s.send(b"\xff" * 6 + mine + struct.pack("!HHH", 0x8100, 7, 0x0806) + arp(mine))
    time.sleep(0.1)
"""


def _counters(chain):
    return {ln.split(" counter ")[0].strip(): int(ln.split("packets ")[1].split()[0])
            for ln in chain.splitlines() if "counter packets" in ln}


def test_a_containers_forged_frames_are_dropped_at_its_port(iso):
    """A real container (default capabilities, NET_RAW among them) announces its
    neighbour's address, from its MAC and another, sends from that address and in a
    VLAN tag; the host keeps the neighbour's MAC and the neighbour its traffic."""
    a, _b = iso.hosts
    helper(iso, a, "remove", name=NEIGHBOUR)
    helper(iso, a, "remove", name=ATTACKER)
    helper(iso, a, "start", name=NEIGHBOUR, command="sleep 100000",
           network=[dict(bridge="mhbr0", ipv4="10.77.0.31/24")])
    sh(iso, a, "busybox ping -c 1 -W 2 10.77.0.31")
    victim_mac = neigh(iso, a, "10.77.0.31")
    assert victim_mac
    res = iso.ansible(a, "ctrhost.fleet.container", dict(
        name=ATTACKER, template="busybox", command=["/usr/bin/python3", "-c", ATTACK, "10.77.0.31", "10.77.0.250"],
        mounts=[dict(source="/usr", destination="/usr", readonly=True),
                dict(source="/usr/lib", destination="/lib", readonly=True),
                dict(source="/usr/lib64", destination="/lib64", readonly=True)],
        network=[dict(bridge="mhbr0", ipv4="10.77.0.32/24")]))[a]
    assert res["changed"] and res["container"]["state"] == "running", res
    time.sleep(2)
    veth, chain = port_chain(iso, a, ATTACKER)
    dropped = _counters(chain)
    assert dropped["ether saddr != %s" % res["container"]["network"][0]["mac"]] > 0, chain  # other MAC
    assert dropped["arp saddr ip != { 0.0.0.0, 10.77.0.32 }"] > 0, chain  # gratuitous ARP
    assert dropped["ip saddr != 10.77.0.32"] > 0, chain  # forged IPv4 source
    assert dropped["ether type != { ip, arp, ip6 }"] > 0, chain  # VLAN tag
    assert "python3" in sh(iso, a, "cat /proc/%d/cmdline" % res["container"]["pid"])  # still at it
    assert neigh(iso, a, "10.77.0.31") == victim_mac
    assert "0% packet loss" in sh(iso, a, "busybox ping -c 3 -i 0.2 -W 2 10.77.0.31")
    fdb = sh(iso, a, "bridge fdb show br mhbr0")
    assert "02:66:66:66:66:66" not in fdb, fdb  # the bridge never learnt the forged MAC
    # the attacker's own traffic still flows
    assert "0% packet loss" in sh(iso, a, "busybox ping -c 2 -W 2 10.77.0.32")
    # a flushed table (or a container from before filtering) is put back by the next run,
    # which says so; the run after that changes nothing
    sh(iso, a, "nft delete table bridge ctrhost_ports")
    args = dict(name=ATTACKER, network=[dict(bridge="mhbr0", ipv4="10.77.0.32/24")])
    assert iso.ansible(a, "ctrhost.fleet.container", args, extra=("--check",))[a]["changed"]
    assert not port_chain(iso, a, ATTACKER)[1]  # check mode made nothing
    assert iso.ansible(a, "ctrhost.fleet.container", args)[a]["changed"]
    assert "ether saddr != " in port_chain(iso, a, ATTACKER)[1]
    assert iso.ansible(a, "ctrhost.fleet.container", args)[a]["changed"] is False
    # removed with the container, its chain goes
    helper(iso, a, "remove", name=ATTACKER)
    assert "port_%s" % veth not in sh(iso, a, "nft list table bridge ctrhost_ports")
    helper(iso, a, "remove", name=NEIGHBOUR)


def test_a_move_keeps_the_bridge_mac_the_neighbours_traffic_and_the_filters(iso):
    """The destination's bridge MAC does not change when the moved container's port joins;
    a neighbour there pinging its gateway every 0.1 s misses no reply; the port filter is
    installed on the destination and removed on the source. The source container answers
    the destination's address probe on the shared segment: its own MAC does not count."""
    a, b = iso.hosts
    start(iso, a)
    helper(iso, b, "remove", name=NEIGHBOUR)
    helper(iso, b, "start", name=NEIGHBOUR, command="ping -i 0.1 10.77.0.251",
           network=[dict(bridge="mhbr0", ipv4="10.77.0.31/24", gateway="10.77.0.251")])
    src_veth, src_chain = port_chain(iso, a, NAME)
    assert MAC in src_chain
    mac_before = bridge_mac(iso, b)
    time.sleep(1.0)
    res = helper(iso, a, "migrate", name=NAME, dest=addr(iso, b), mode="cold")
    assert not res.get("failed") and res["where"] == addr(iso, b), res
    time.sleep(1.0)
    assert bridge_mac(iso, b) == mac_before
    assert neigh(iso, b, "10.77.0.251", "ctrhost-" + NEIGHBOUR) == mac_before
    log = sh(iso, b, "cat /var/lib/ctrhost/containers/%s/console.log" % NEIGHBOUR)
    gap, seqs = ping_gaps(log)
    assert len(seqs) > 20 and gap <= 2, (gap, len(seqs))  # a stale gateway MAC loses seconds
    dst_veth, dst_chain = port_chain(iso, b, NAME)
    assert MAC in dst_chain and IP.split("/")[0] in dst_chain
    assert "port_%s" % src_veth not in sh(iso, a, "nft list table bridge ctrhost_ports")
    back = helper(iso, b, "migrate", name=NAME, dest=addr(iso, a), mode="cold")
    assert not back.get("failed"), back
    assert "port_%s" % dst_veth not in sh(iso, b, "nft list table bridge ctrhost_ports")
    assert MAC in port_chain(iso, a, NAME)[1]
    helper(iso, b, "remove", name=NEIGHBOUR)
    helper(iso, a, "remove", name=NAME)


def test_the_preflight_refuses_a_destination_where_the_address_is_taken(iso):
    """The destination has a container declared with the moving container's address (its
    port down, so that only the destination's own records can tell): the move is refused
    before anything happens, naming it, and the container keeps running on the source."""
    a, b = iso.hosts
    helper(iso, b, "remove", name="isdup")
    helper(iso, b, "start", name="isdup", command="sleep 100000",
           network=[dict(bridge="mhbr0", ipv4=IP, mac="02:00:00:00:77:99")])
    veth = port_chain(iso, b, "isdup")[0]
    sh(iso, b, "ip link set %s down" % veth)
    before = start(iso, a)
    res = helper(iso, a, "migrate", name=NAME, dest=addr(iso, b), mode="cold")
    assert res.get("failed") and "isdup" in res["msg"] and IP.split("/")[0] in res["msg"], res
    here = helper(iso, a, "facts", name=NAME)
    assert here["status"] == "running" and int(here["c1"]) >= int(before["c2"]), here
    assert not json.loads(sh(iso, b, "cat /var/lib/ctrhost/containers/%s/spec.json 2>/dev/null" % NAME)
                          or "{}")
    helper(iso, b, "remove", name="isdup")
    helper(iso, a, "remove", name=NAME)


def _mode(lab, host, path):
    return int(sh(lab, host, "stat -c %%a %s" % path), 8)


def test_secret_env_never_printed_and_files_root_only(iso):
    a, _b = iso.hosts
    args = dict(name=SECRET_CT, template="busybox", command="sleep 100000", env=dict(PLAIN="visible"),
                secret_env=dict(DB_PASSWORD=SECRET))
    outputs = []
    for extra in (("--check", "--diff", "-vvv"), ("--diff", "-vvv"), ("--diff", "-vvv")):
        proc = iso.exec([os.path.join(os.path.dirname(PY), "ansible"), a, "-m", "ctrhost.fleet.container",
                         "-a", json.dumps(args), *extra], check=False)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        outputs.append(proc.stdout + proc.stderr)
    assert "CHANGED" in outputs[1] and "CHANGED" not in outputs[2]  # idempotent
    for _name, module in (("info", "ctrhost.fleet.container_info"), ("host", "ctrhost.fleet.host_info")):
        proc = iso.exec([os.path.join(os.path.dirname(PY), "ansible"), a, "-m", module, "-vvv"], check=False)
        assert proc.returncode == 0, proc.stdout[-2000:]
        outputs.append(proc.stdout + proc.stderr)
    assert '"DB_PASSWORD": "********"' in outputs[3]
    ckpt = iso.ansible(a, "ctrhost.fleet.container_checkpoint", dict(name=SECRET_CT, leave_running=True))[a]
    outputs.append(json.dumps(ckpt))
    for out in outputs:
        assert SECRET not in out
    # the container has it; only root can read where it is kept
    pid = json.loads(sh(iso, a, "cat /var/lib/ctrhost/containers/%s/spec.json" % SECRET_CT)) and \
        iso.ansible(a, "ctrhost.fleet.container_info", dict(name=[SECRET_CT]))[a]["containers"][0]["pid"]
    assert ("DB_PASSWORD=" + SECRET) in sh(iso, a, "tr '\\0' '\\n' < /proc/%d/environ" % pid)
    bundle = "/var/lib/ctrhost/containers/" + SECRET_CT
    # unprivileged (the default): its root, the range's first gid, may pass, not read
    assert _mode(iso, a, bundle) == 0o710
    assert int(sh(iso, a, "stat -c %%g %s" % bundle)) == _idmap.host_range()["gid"]
    for leaf in ("spec.json", "config.json", "console.log"):
        assert _mode(iso, a, bundle + "/" + leaf) == 0o600, leaf
    cdir = ckpt["checkpoint_dir"]
    assert _mode(iso, a, os.path.dirname(cdir)) == 0o700 and _mode(iso, a, cdir) == 0o700
    modes = sh(iso, a, "find %s -type f -printf '%%m\\n' | sort -u" % cdir).split()
    assert modes == ["600"], modes
    # nobody but root gets in: an unprivileged user cannot list or read any of it
    denied = sh(iso, a, "su nobody -s /bin/sh -c 'cat %s/spec.json; ls %s' 2>&1; echo rc=$?" % (bundle, cdir))
    assert "Permission denied" in denied and SECRET not in denied, denied
    helper(iso, a, "remove", name=SECRET_CT)


assert subprocess  # used through the helpers' lab.exec
