# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Anti-spoofing on bridge ports and duplicate address detection, on real netlink and
nftables inside throwaway network namespaces (``test_network.Host``).

The attacker is root inside a container's network namespace (``ip netns exec``), with
every capability there, which is more than any container gets: it forges gratuitous
ARP, IPv4 and IPv6 sources, neighbour advertisements, its MAC and VLAN tags. What
reaches the bridge is captured on the bridge device itself (promiscuous AF_PACKET in
the host netns); the victim's traffic is proven with ping and the host's neighbour
table. An interface with ``filtering: false`` is the control: the same attack gets
through there, so the capture can see it.
"""

import json
import os
import shutil
import subprocess
import time

import pytest
from test_network import PY, host, sh  # noqa: F401  (host: the fixture)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "nsenter", "busybox")),
                       reason="needs root, ip, nsenter and busybox"),
    pytest.mark.skipif(not os.path.exists("/usr/lib/python3/dist-packages/nftables")
                       and subprocess.run([PY, "-c", "import nftables"]).returncode,
                       reason="needs the nftables Python binding (python3-nftables)"),
]

# Captures every frame the bridge sees for ``seconds``: one JSON line per frame.
SNIFF = r"""
import json, socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 3))
mreq = struct.pack("iHH8s", socket.if_nametoindex(sys.argv[1]), 1, 0, b"")
s.setsockopt(263, 1, mreq)  # PACKET_ADD_MEMBERSHIP, PACKET_MR_PROMISC
s.settimeout(0.1)
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        f, a = s.recvfrom(4096)
    except socket.timeout:
        continue
    if a[2] == 4:
        continue
    et = struct.unpack("!H", f[12:14])[0]
    out = dict(src=f[6:12].hex(":"), type=et)
    if et == 0x0806:
        out["arp_ip"] = socket.inet_ntoa(f[28:32])
    elif et == 0x0800:
        out["ip"] = socket.inet_ntoa(f[26:30])
    elif et == 0x86dd:
        out["ip6"] = socket.inet_ntop(socket.AF_INET6, f[22:38])
        if f[20] == 58:
            out["icmp6"] = f[54]
            if f[54] == 136:
                out["target"] = socket.inet_ntop(socket.AF_INET6, f[62:78])
    print(json.dumps(out), flush=True)
"""


# Writes a VLAN-tagged gratuitous ARP and an 802.3 (LLC) frame on eth0 from a packet socket.
RAW = r"""
import socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
mac = s.getsockname()[4][:6]
ip = socket.inet_aton(sys.argv[1])
arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, mac, ip, b"\xff" * 6, ip)
for _ in range(3):
    s.send(b"\xff" * 6 + mac + struct.pack("!HHH", 0x8100, 7, 0x0806) + arp)
    s.send(b"\x01\x80\xc2\x00\x00\x00" + mac + struct.pack("!H", 38) + b"\x42\x42\x03" + b"\0" * 35)
"""


class Capture:
    def __init__(self, netns_host, seconds=4):
        self.proc = subprocess.Popen(["ip", "netns", "exec", netns_host.name, PY, "-c", SNIFF, "nwbr0", str(seconds)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def frames(self):
        out, _ = self.proc.communicate(timeout=30)
        return [json.loads(line) for line in out.splitlines() if line.strip()]


def in_ns(cname, *cmd, check=True):
    return sh("ip", "netns", "exec", "ctrhost-" + cname, *cmd, check=check)


def neigh_mac(netns_host, address):
    out = json.loads(sh("ip", "-j", "-n", netns_host.name, "neigh", "show", address).stdout or "[]")
    return out[0].get("lladdr") if out else None


def attack(netns_host, attacker, victim_v4, victim_v6):
    """Everything a container root could try to take over the victim's addresses."""
    ns = "ctrhost-" + attacker
    in_ns(attacker, "busybox", "arping", "-U", "-c", "2", "-w", "1", "-I", "eth0", "-s", victim_v4, victim_v4,
          check=False)
    in_ns(attacker, "busybox", "arping", "-A", "-c", "2", "-w", "1", "-I", "eth0", "-s", victim_v4, netns_host.v4(1),
          check=False)
    # the victim's addresses on the attacker's interface: IPv4/IPv6 from forged sources and an
    # unsolicited neighbour advertisement (ndisc_notify) for the victim's IPv6 address
    sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.eth0.ndisc_notify=1")
    sh("ip", "-n", ns, "addr", "add", victim_v4 + "/32", "dev", "eth0")
    sh("ip", "-n", ns, "addr", "add", victim_v6 + "/128", "dev", "eth0", "nodad")
    in_ns(attacker, "busybox", "arping", "-U", "-c", "2", "-w", "1", "-I", "eth0", "-s", victim_v4, victim_v4,
          check=False)
    in_ns(attacker, "busybox", "ping", "-c", "2", "-W", "1", "-I", victim_v4, netns_host.v4(1), check=False)
    in_ns(attacker, "busybox", "ping6", "-c", "2", "-W", "1", "-I", victim_v6, netns_host.v6(1), check=False)
    # the same lie in a VLAN-tagged frame, and in an 802.3 frame (no ether type), from a raw socket
    in_ns(attacker, PY, "-c", RAW, victim_v4)
    # another MAC altogether
    sh("ip", "-n", ns, "link", "set", "eth0", "address", "02:66:66:66:66:66")
    in_ns(attacker, "busybox", "arping", "-U", "-c", "2", "-w", "1", "-I", "eth0", "-s", victim_v4, victim_v4,
          check=False)


def lies(frames, attacker_mac, victim_v4, victim_v6):
    """The captured frames that carry the attacker's lies."""
    bad = []
    for f in frames:
        if f["src"] == "02:66:66:66:66:66" or (f["src"] == attacker_mac and (
                f.get("arp_ip") == victim_v4 or f.get("ip") == victim_v4 or f.get("ip6") == victim_v6
                or f.get("target") == victim_v6 or f["type"] in (0x8100, 38))):
            bad.append(f)
    return bad


@pytest.mark.parametrize("filtering", [True, False], ids=["filtered", "control-unfiltered"])
def test_forged_sources_never_reach_the_bridge(host, filtering):  # noqa: F811  (the fixture)
    attacker, victim = host.cname("a"), host.cname("v")
    _pa, ia, res = host.start(attacker, [host.iface(attacker, 2, filtering=filtering)])
    _pv, iv, _ = host.start(victim, [host.iface(victim, 3)])
    assert any("filter port" in a for a in res["actions"]) is filtering
    victim_v4, victim_v6 = host.v4(3), host.v6(3)
    # the host learns the victim's real MAC; legitimate traffic of the attacker passes
    assert host.ping(host.name, victim_v4) and host.ping("ctrhost-" + attacker, host.v4(1))
    assert host.ping("ctrhost-" + attacker, host.v6(1), v6=True)
    assert neigh_mac(host, victim_v4) == iv[0]["mac"]
    cap = Capture(host)
    attack(host, attacker, victim_v4, victim_v6)
    frames = cap.frames()
    bad = lies(frames, ia[0]["mac"], victim_v4, victim_v6)
    if not filtering:  # the control: the capture sees the lies reach the bridge (whether the
        # host's ARP entry takes them depends on its locktime, so it is only shown)
        assert bad, frames
        print("control: host's entry for the victim now %s" % neigh_mac(host, victim_v4))
        return
    assert bad == [], bad
    assert any(f["src"] == ia[0]["mac"] for f in frames) or True  # legitimate frames may pass
    # the victim keeps its traffic and its neighbour entry on the host
    assert neigh_mac(host, victim_v4) == iv[0]["mac"]
    assert host.ping(host.name, victim_v4) and host.ping(host.name, victim_v6, v6=True)
    assert host.ping("ctrhost-" + victim, host.v4(1))
    # the chain counts what it dropped (independent read: nft's own listing)
    listing = sh("ip", "netns", "exec", host.name, "nft", "list", "chain", "bridge", "ctrhost_ports",
                 "port_" + ia[0]["host_veth"]).stdout
    dropped = {line.split(" counter ")[0].strip(): int(line.split("packets ")[1].split()[0])
               for line in listing.splitlines() if "counter packets" in line}
    assert dropped["ether saddr != %s" % ia[0]["mac"]] > 0, listing  # the forged MAC
    assert dropped["arp saddr ip != { 0.0.0.0, %s }" % host.v4(2)] > 0, listing  # gratuitous ARP
    assert dropped["ether type != { ip, arp, ip6 }"] > 0, listing  # VLAN tag, 802.3


def test_filters_follow_readdress_and_go_with_the_container(host):  # noqa: F811  (the fixture)
    a = host.cname("f")
    path, ifaces, _ = host.start(a, [host.iface(a, 2)])
    veth = ifaces[0]["host_veth"]

    def chain():
        res = sh("ip", "netns", "exec", host.name, "nft", "list", "chain", "bridge", "ctrhost_ports",
                 "port_" + veth, check=False)
        return res.stdout if res.returncode == 0 else None

    assert host.v4(2) in chain() and host.v6(2) in chain()
    assert host.ok("net.links", "attach", a, path, ifaces) == dict(changed=False, actions=[])
    # live re-address: the filter follows, the old address is refused from then on
    from ansible_collections.ctrhost.fleet.plugins.module_utils.net import spec as _netconf
    new = _netconf.normalize([host.iface(a, 9)], a)
    res = host.ok("net.links", "update", a, path, ifaces, new)
    assert any("filter port" in x for x in res["actions"])
    assert host.v4(9) in chain() and host.v4(2) not in chain()
    assert host.ping("ctrhost-" + a, host.v4(1))
    # opt out, then in again
    off = _netconf.normalize([host.iface(a, 9, filtering=False)], a)
    assert any("remove port filter" in x for x in host.ok("net.links", "update", a, path, new, off)["actions"])
    assert chain() is None
    host.ok("net.links", "update", a, path, off, new)
    assert chain() is not None
    # removed with the container
    host.ok("net.links", "detach", a, new)
    assert chain() is None
    ports = sh("ip", "netns", "exec", host.name, "nft", "list", "map", "bridge", "ctrhost_ports", "ports").stdout
    assert veth not in ports


def test_duplicate_address_probe_names_the_holder(host):  # noqa: F811  (the fixture)
    held, new = host.cname("h"), host.cname("n")
    host.start(held, [host.iface(held, 4)])
    # an address configured by hand in a netns no spec knows about (another machine on the segment)
    stranger = "nw-%s-s" % host.tag
    sh("ip", "netns", "add", stranger)
    try:
        sh("ip", "link", "add", "nws" + host.tag, "netns", host.name, "type", "veth", "peer", "name", "eth0",
           "netns", stranger)
        sh("ip", "-n", host.name, "link", "set", "nws" + host.tag, "master", "nwbr0", "up")
        sh("ip", "-n", stranger, "link", "set", "eth0", "address", "02:55:00:00:00:01")
        sh("ip", "-n", stranger, "addr", "add", host.v4(5) + "/24", "dev", "eth0")
        sh("ip", "-n", stranger, "addr", "add", host.v6(6) + "/64", "dev", "eth0", "nodad")
        sh("ip", "-n", stranger, "link", "set", "eth0", "up")
        time.sleep(0.5)
        from ansible_collections.ctrhost.fleet.plugins.module_utils.net import spec as _netconf
        cases = ((dict(bridge="nwbr0", ipv4=host.v4(5) + "/24"), "02:55:00:00:00:01"),
                 (dict(bridge="nwbr0", ipv6=host.v6(6) + "/64"), "02:55:00:00:00:01"),
                 (dict(bridge="nwbr0", ipv4=host.v4(4) + "/24"), None))
        for raw, who in cases:
            ifaces = _netconf.normalize([raw], new)
            answers = host.ok("net.duplicate_address", "probe", "nwbr0", [(ifaces[0].get("ipv4") or ifaces[0]["ipv6"]).split("/")[0]])
            if who:
                assert list(answers.values()) == [who], answers
            else:  # the held container's own address answers with its MAC
                assert list(answers.values()) == [_netconf.derive_mac(held, "eth0")], answers
        # free addresses get no answer
        assert host.ok("net.duplicate_address", "probe", "nwbr0", [host.v4(77), host.v6(77)]) == {}
    finally:
        sh("ip", "netns", "del", stranger, check=False)


def test_bridge_mac_stays_pinned_while_ports_come_and_go(host):  # noqa: F811  (the fixture)
    """A port with the lowest possible MAC joins and leaves: an unpinned bridge (made by ``ip``)
    takes its MAC (the control), a host_network bridge keeps its own. (The ports are the
    host-side veths, whose MACs the kernel picks at random; set low here.)"""
    def mac(bridge):
        return json.loads(sh("ip", "-j", "-n", host.name, "link", "show", bridge).stdout)[0]["address"]

    res = host.ok("net.bridges", "apply", bridges=[dict(name="nwpin0", ipv4=["10.%d.8.1/24" % host.net])])
    pinned = res["bridges"]["nwpin0"]["mac"]
    assert mac("nwpin0") == pinned
    assert host.ok("net.bridges", "apply", bridges=[dict(name="nwpin0", ipv4=["10.%d.8.1/24" % host.net])])[
        "changed"] is False
    before_unpinned = mac("nwbr0")
    low = "02:00:00:00:00:01"
    a, b = host.cname("p"), host.cname("q")
    _pa, ia, _ = host.start(a, [dict(bridge="nwpin0", ipv4="10.%d.8.2/24" % host.net)])
    _pb, ib, _ = host.start(b, [dict(bridge="nwbr0", ipv4=host.v4(2) + "/24")])
    for iface in ia + ib:
        sh("ip", "-n", host.name, "link", "set", iface["host_veth"], "address", low)
    assert mac("nwpin0") == pinned
    assert mac("nwbr0") == low != before_unpinned  # the control: it followed the port
    host.ok("net.links", "detach", a, ia)
    assert mac("nwpin0") == pinned
    # an explicit MAC (the same gateway MAC on every host) is set live
    res = host.ok("net.bridges", "apply", bridges=[dict(name="nwpin0", mac="02:aa:00:00:00:01")])
    assert res["changed"] and mac("nwpin0") == "02:aa:00:00:00:01"
