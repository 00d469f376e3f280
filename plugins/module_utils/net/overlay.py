# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet network's mode ``overlay``: one L2 segment over any routed underlay.

The container bridge of every host gets a VXLAN port (``device_name``: ``ctrvx<VNI>``)
whose tunnel starts at the uplink's first IPv4 address. There is no multicast: the
broadcasts, unknown unicasts and multicasts of the segment are replicated at the head
end, one copy per peer host, by an all-zero FDB entry per peer on the VXLAN device
(``bridge fdb append 00:00:00:00:00:00 dev ctrvx<VNI> dst PEER``). Unicast MACs are
learned from the tunnel's traffic (VXLAN learning): a container that moved is learned
at its new host as soon as it sends, and its destination host announces it at once
(a gratuitous ARP from the container's MAC into the tunnel, ``fleet.announce``).

The peers converge by difference: an entry for a host that joined is appended and the
entry of a host that left is deleted; the device and the other entries stay, so the
traffic between the others is not disturbed. A change of VNI, port or underlay address
makes the device again (it carries them from its creation).

The VXLAN encapsulation over IPv4 costs ``OVERHEAD`` bytes: the device and the bridge
take the uplink's MTU less that, and container interfaces on the bridge default to the
bridge's MTU (``net/links.py``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.net.ifaces import kind as _kind, lookup as _lookup

PORT = 4789  # the IANA VXLAN port
OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
VNI_MAX = 2 ** 24 - 1
ZERO_MAC = "00:00:00:00:00:00"
DEVICE_PREFIX = "ctrvx"


def device_name(vni):
    return "%s%d" % (DEVICE_PREFIX, vni)


def _int(value, field, low, high, what):
    if isinstance(value, bool) or value in (None, ""):
        raise ValidationError(field, "expected %s (%d-%d), got %r" % (what, low, high, value))
    try:
        number = int(str(value), 10)
    except ValueError:
        raise ValidationError(field, "expected %s (%d-%d), got %r" % (what, low, high, value)) from None
    if not low <= number <= high:
        raise ValidationError(field, "expected %s (%d-%d), got %r" % (what, low, high, value))
    return number


def normalize(fleet, out):
    """``out`` (the routed part of ``fleet.normalize``) with the overlay's options checked:
    ``vni`` (required), ``port`` (default 4789), ``peers`` (IPv4 addresses, sorted, once)."""
    out["vni"] = _int(fleet.get("vni"), "fleet.vni", 1, VNI_MAX, "a VXLAN network identifier")
    port = fleet.get("port")
    out["port"] = PORT if port in (None, "") else _int(port, "fleet.port", 1, 65535, "a UDP port")
    peers = fleet.get("peers")
    if peers is None:
        peers = []
    if not isinstance(peers, (list, tuple)):
        raise ValidationError("fleet.peers", "expected a list of the other hosts' IPv4 addresses, got %r"
                              % (peers,))
    found = set()
    for i, peer in enumerate(peers):
        try:
            address = ipaddress.IPv4Address(str(peer).strip())
        except ValueError:
            raise ValidationError("fleet.peers[%d]" % i, "expected the IPv4 address of a host's uplink "
                                  "(the tunnel's far end), got %r" % (peer,)) from None
        if address.is_multicast or address.is_unspecified or address.is_loopback:
            raise ValidationError("fleet.peers[%d]" % i, "expected a unicast address of a host, got %s"
                                  % address)
        found.add(str(address))
    out["peers"] = sorted(found, key=ipaddress.IPv4Address)
    return out


def refuse_overlay_options(fleet, mode):
    for key in ("vni", "port", "peers"):
        if fleet.get(key) not in (None, "", []):
            raise ValidationError("fleet." + key, "only mode overlay takes it (mode is %s)" % mode)


def peer_plan(have, want, local=()):
    """(to add, to delete): the FDB flood entries that make ``have`` into ``want`` (less this
    host's own ``local`` addresses), each sorted."""
    want = set(want) - set(local)
    key = ipaddress.IPv4Address
    return sorted(want - set(have), key=key), sorted(set(have) - want, key=key)


def tunnel_mtu(uplink_mtu):
    return uplink_mtu - OVERHEAD


def addresses(ipr, index):
    """The IPv4 addresses of interface ``index``, in the kernel's order."""
    return [m.get_attr("IFA_ADDRESS") for m in ipr.get_addr(index=index, family=socket.AF_INET)]


def check(ipr, fleet, uplink_index):
    """Before anything changes: the uplink has an IPv4 address (the tunnel's source), and the
    device name of the VNI is free or already this bridge's tunnel."""
    if not addresses(ipr, uplink_index):
        raise ValidationError("fleet.uplink", "interface %s has no IPv4 address; the overlay's tunnel "
                              "starts at it (expected the host's underlay interface)" % fleet["uplink"])
    index = _lookup(ipr, device_name(fleet["vni"]))
    if index is None:
        return
    link = ipr.get_links(index)[0]
    if _kind(link) != "vxlan":
        raise ValidationError("fleet.vni", "interface %s exists and is no VXLAN device"
                              % device_name(fleet["vni"]))
    master = link.get_attr("IFLA_MASTER")
    bridge = _lookup(ipr, fleet["bridge"])
    if master and master != bridge:
        other = ipr.get_links(master)[0].get_attr("IFLA_IFNAME")
        raise ValidationError("fleet.vni", "VNI %d already carries bridge %s on this host"
                              % (fleet["vni"], other))


def read(ipr, vni):
    """The VXLAN device of ``vni`` as the kernel has it (None when absent): index, vni,
    local, link, port, mtu, master, up, peers (the all-zero FDB entries' destinations)."""
    index = _lookup(ipr, device_name(vni))
    if index is None:
        return None
    link = ipr.get_links(index)[0]
    if _kind(link) != "vxlan":
        return None
    data = link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
    peers = [m.get_attr("NDA_DST") for m in ipr.fdb("dump", ifindex=index)
             if m["ifindex"] == index and m.get_attr("NDA_LLADDR") == ZERO_MAC and m.get_attr("NDA_DST")]
    return dict(index=index, vni=data.get_attr("IFLA_VXLAN_ID"), local=data.get_attr("IFLA_VXLAN_LOCAL"),
                link=data.get_attr("IFLA_VXLAN_LINK"), port=data.get_attr("IFLA_VXLAN_PORT"),
                mtu=link.get_attr("IFLA_MTU"), master=link.get_attr("IFLA_MASTER"),
                up=bool(link["flags"] & 1), peers=sorted(set(peers), key=ipaddress.IPv4Address))


def tunnels(ipr, vnis):
    """bridge name -> VXLAN device name for ``vnis`` (bridge name -> VNI) whose device is a
    port of that bridge."""
    out = {}
    for bridge, vni in vnis.items():
        index = _lookup(ipr, device_name(vni))
        if index is None:
            continue
        link = ipr.get_links(index)[0]
        master = link.get_attr("IFLA_MASTER")
        if master and master == _lookup(ipr, bridge):
            out[bridge] = device_name(vni)
    return out


def view(fleet, local, peers, mtu):
    return dict(mode="overlay", bridge=fleet["bridge"], uplink=fleet["uplink"], vni=fleet["vni"],
                port=fleet["port"], local=local, peers=list(peers), mtu=mtu, device=device_name(fleet["vni"]))


def apply(ipr, fleet, bridge_index, uplink_index, act, check_mode=False):
    """Make the VXLAN port of ``fleet["bridge"]`` what ``fleet`` asks (state present) or
    remove it (absent). ``act`` is told each change. Returns (before, after) views."""
    from pyroute2.netlink.exceptions import NetlinkError

    have = read(ipr, fleet["vni"])
    name = device_name(fleet["vni"])
    before = None if have is None else dict(vni=have["vni"], port=have["port"], local=have["local"],
                                            peers=have["peers"], mtu=have["mtu"], device=name)
    if fleet["state"] == "absent":
        if have is not None and have["master"] == bridge_index:
            act("delete VXLAN device %s" % name)
            if not check_mode:
                ipr.link("del", index=have["index"])
        return before, None
    local = addresses(ipr, uplink_index)[0]
    uplink = ipr.get_links(uplink_index)[0]
    mtu = tunnel_mtu(uplink.get_attr("IFLA_MTU"))
    want = view(fleet, local, [p for p in fleet["peers"] if p not in addresses(ipr, uplink_index)], mtu)
    if have is not None and (have["vni"], have["port"], have["local"], have["link"]) != \
            (fleet["vni"], fleet["port"], local, uplink_index):
        act("delete VXLAN device %s (its VNI, port or underlay changed)" % name)
        if not check_mode:
            ipr.link("del", index=have["index"])
        have = None
    if have is None:
        act("create VXLAN device %s (VNI %d, local %s dev %s, port %d, MTU %d)"
            % (name, fleet["vni"], local, fleet["uplink"], fleet["port"], mtu))
        if check_mode:
            have = dict(index=None, mtu=mtu, master=bridge_index, up=True, peers=[])
        else:
            ipr.link("add", ifname=name, kind="vxlan", vxlan_id=fleet["vni"], vxlan_local=local,
                     vxlan_link=uplink_index, vxlan_port=fleet["port"], vxlan_learning=1, mtu=mtu)
            have = read(ipr, fleet["vni"])
    if have["mtu"] != mtu or have["master"] != bridge_index or not have["up"]:
        act("set %s MTU %d, port of %s, up" % (name, mtu, fleet["bridge"]))
        if not check_mode:
            ipr.link("set", index=have["index"], mtu=mtu, master=bridge_index, state="up")
    add, delete = peer_plan(have["peers"], want["peers"])
    for peer in add:
        act("flood to peer %s" % peer)
        if not check_mode:
            ipr.fdb("append", ifindex=have["index"], lladdr=ZERO_MAC, dst=peer)
    for peer in delete:
        act("stop flooding to peer %s" % peer)
        if not check_mode:
            with contextlib.suppress(NetlinkError):
                ipr.fdb("del", ifindex=have["index"], lladdr=ZERO_MAC, dst=peer)
    if bridge_index:
        bridge_mtu = ipr.get_links(bridge_index)[0].get_attr("IFLA_MTU")
        if bridge_mtu > mtu:
            act("set bridge %s MTU %d" % (fleet["bridge"], mtu))
            if not check_mode:
                ipr.link("set", index=bridge_index, mtu=mtu)
    return before, want
