# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet network: a container's address reachable from anywhere, wherever it runs.

Mode ``routed`` (the OpenVZ venet way): no L2 between the containers of different hosts.
The container's addresses are in the subnet of the hosts' LAN (the uplink's), and
the host that runs it

- holds a host route (``/32``, protocol ``ROUTE_PROTO``) for each of its IPv4
  addresses towards the container bridge;
- answers ARP for them on its uplink (a proxy neighbour entry, ``NTF_PROXY``);
- answers ARP on the container bridge for everything it routes elsewhere
  (``proxy_arp`` on the bridge), with the bridge's MAC, which is the same on every
  host of the fleet (``fleet_mac``): a container's neighbour entries (its gateway,
  its LAN peers) stay right on whichever host it runs.

``publish`` adds the route and the proxy entry and announces the address from the
uplink (a gratuitous ARP with the uplink's MAC); ``withdraw`` removes both and tells
the container bridge that the address is now behind the host (a gratuitous ARP with
the bridge's MAC), so the other containers of the host stop sending to a MAC that
left. A container's interfaces are published when its host-side veth comes up and
withdrawn when it goes down or goes away: a migration withdraws at the source's
freeze and publishes at the destination's restore, so one host at a time answers.

Which bridge is routed, and through which uplink, is kernel state: the bridge's
alias (``ip link show`` prints it) reads ``ctrhost-fleet routed uplink=NAME``; the
container library reads it back when it attaches or detaches an interface.

Mode ``overlay`` (``net/overlay.py``): the container bridges of all hosts are one L2
segment through VXLAN with head-end replication to the peer hosts; the bridge's alias
reads ``ctrhost-fleet overlay uplink=NAME vni=N``. Containers keep any subnet of their
own; a migration's destination announces the container into the tunnel (``announce``).

Mode ``bridged`` (``net/bridged.py``): the container bridge takes the uplink as a port and
the host's addresses and routes; the bridge's alias reads ``ctrhost-fleet bridged uplink=NAME``.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import re
import socket
import struct

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import bridged as _bridged
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import overlay as _overlay
from ansible_collections.ctrhost.fleet.plugins.module_utils.net.ifaces import lookup as _lookup

MODES = ("routed", "overlay", "bridged")
ALIAS_PREFIX = "ctrhost-fleet "
ROUTE_PROTO = 242  # the routes this library owns (ip route shows "proto 242")
NTF_PROXY = 0x08
SCOPE_LINK = 253
ETH_P_ARP = 0x0806
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_SYS = "/proc/sys/net/"


def fleet_mac(bridge):
    """The container bridge's MAC, the same on every host of the fleet (a locally
    administered unicast digest of the bridge name): a moved container's neighbour
    entry for its gateway and its LAN peers points at it on every host."""
    octets = bytearray(hashlib.sha256(("ctrhost-fleet/%s" % bridge).encode()).digest()[:6])
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join("%02x" % b for b in octets)


def normalize(fleet):
    """The ``fleet`` option checked: None, or {mode, bridge, uplink, state}; mode overlay
    adds {vni, port, peers} (``_overlay.normalize``)."""
    if not fleet:
        return None
    state = fleet.get("state") or "present"
    if state not in ("present", "absent"):
        raise ValidationError("fleet.state", "expected present or absent, got %r" % (state,))
    mode = fleet.get("mode") or "routed"
    if mode not in MODES:
        raise ValidationError("fleet.mode", "expected one of %s, got %r" % (", ".join(MODES), mode))
    out = dict(mode=mode, state=state)
    for key in ("bridge", "uplink"):
        value = fleet.get(key)
        if not isinstance(value, str) or not _NAME_RE.match(value):
            raise ValidationError("fleet." + key, "expected an interface name of 1-15 characters "
                                  "[A-Za-z0-9_.-], got %r" % (value,))
        out[key] = value
    if out["bridge"] == out["uplink"]:
        raise ValidationError("fleet.uplink", "the uplink must be another interface than the "
                              "container bridge %s" % out["bridge"])
    if mode == "overlay":  # turning it off needs no VNI: the bridge's alias has it
        out = out if state == "absent" else _overlay.normalize(fleet, out)
    else:
        _overlay.refuse_overlay_options(fleet, mode)
    if mode == "bridged":
        return _bridged.normalize(fleet, out)
    if fleet.get("rollback_timeout") not in (None, ""):
        raise ValidationError("fleet.rollback_timeout", "only mode bridged takes it (mode is %s)" % mode)
    return out


def alias(fleet):
    text = "%s%s uplink=%s" % (ALIAS_PREFIX, fleet["mode"], fleet["uplink"])
    return text + (" vni=%d" % fleet["vni"] if fleet["mode"] == "overlay" else "")


def alias_fields(text):
    """{mode, uplink[, vni]} of a bridge alias written by ``alias``; None for any other alias."""
    if not text or not text.startswith(ALIAS_PREFIX):
        return None
    words = text[len(ALIAS_PREFIX):].split()
    fields = dict(w.split("=", 1) for w in words[1:] if "=" in w)
    if not words or words[0] not in MODES or not fields.get("uplink"):
        return None
    if words[0] == "overlay":
        if not fields.get("vni", "").isdigit():
            return None
        fields["vni"] = int(fields["vni"])
    fields["mode"] = words[0]
    return fields


def parse_alias(text):
    """(mode, uplink) of a bridge alias written by ``alias``; None for any other alias."""
    fields = alias_fields(text)
    return (fields["mode"], fields["uplink"]) if fields else None


def sysctls(fleet):
    """path -> value the mode needs: forwarding (proxy entries answer only on a
    forwarding interface), proxy ARP on the bridge, and no proxy delay on the bridge and
    the uplink (a proxy answer to a broadcast request waits up to 0.8 s by default).
    Mode overlay needs none."""
    if fleet["mode"] != "routed":
        return {}
    br, up = fleet["bridge"], fleet["uplink"]
    return {_SYS + "ipv4/ip_forward": "1",
            _SYS + "ipv4/conf/%s/proxy_arp" % br: "1",
            _SYS + "ipv4/neigh/%s/proxy_delay" % br: "0",
            _SYS + "ipv4/neigh/%s/proxy_delay" % up: "0"}


def _read(path):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def fleet_bridges(ipr, mode):
    """bridge name -> (index, alias fields) of every fleet bridge of ``mode`` of this netns."""
    out = {}
    for link in ipr.get_links():
        info = link.get_attr("IFLA_LINKINFO")
        if info is None or info.get_attr("IFLA_INFO_KIND") != "bridge":
            continue
        fields = alias_fields(link.get_attr("IFLA_IFALIAS"))
        if fields and fields["mode"] == mode:
            out[link.get_attr("IFLA_IFNAME")] = (link["index"], fields)
    return out


def routed_bridges(ipr):
    """bridge name -> (index, uplink name) of every routed bridge of this netns."""
    return {name: (index, fields["uplink"]) for name, (index, fields) in fleet_bridges(ipr, "routed").items()}


def overlay_tunnels(ipr):
    """bridge name -> its VXLAN device, for every overlay bridge of this netns (read ahead
    of a frozen window: ``announce``)."""
    return _overlay.tunnels(ipr, {name: fields["vni"] for name, (_i, fields)
                                  in fleet_bridges(ipr, "overlay").items()})


def read(ipr, fleet):
    """What the kernel has of ``fleet`` (normalised): the bridge's alias and the sysctls."""
    index = _lookup(ipr, fleet["bridge"])
    link = ipr.get_links(index)[0] if index else None
    return dict(alias=link.get_attr("IFLA_IFALIAS") if link is not None else None,
                sysctls={path: _read(path) for path in sysctls(fleet)})


def check(ipr, fleet, declared=()):
    """Before anything is applied: the uplink exists, and so does the bridge (or it is
    among the ``declared`` bridges of the same call)."""
    if fleet is None or fleet["state"] == "absent":
        return
    if _lookup(ipr, fleet["uplink"]) is None:
        raise ValidationError("fleet.uplink", "interface %s does not exist on this host; expected "
                              "the host's LAN interface" % fleet["uplink"])
    if fleet["bridge"] not in declared and _lookup(ipr, fleet["bridge"]) is None:
        raise ValidationError("fleet.bridge", "bridge %s does not exist on this host: declare it in "
                              "bridges" % fleet["bridge"])
    if fleet["mode"] == "overlay":
        _overlay.check(ipr, fleet, _lookup(ipr, fleet["uplink"]))
    if fleet["mode"] == "bridged":
        _bridged.check(_bridged.snapshot(ipr, fleet))


def apply(ipr, fleet, check_mode=False):
    """Make the bridge a fleet bridge of ``fleet["mode"]`` (or not, state absent); return
    (changed, before, after) views for the diff."""
    bridge, uplink = _lookup(ipr, fleet["bridge"]), _lookup(ipr, fleet["uplink"])
    have = read(ipr, fleet)
    old = alias_fields(have["alias"]) or {}
    before = dict(mode=old.get("mode"), bridge=fleet["bridge"], uplink=old.get("uplink"))
    actions = []
    if "bridged" in (old.get("mode"), fleet["mode"]):
        if old.get("mode") not in (None, fleet["mode"]) and fleet["state"] == "present":
            raise ValidationError("fleet.mode", "expected state absent first: %s is %s (uplink %s), not %s"
                                  % (fleet["bridge"], old["mode"], old.get("uplink"), fleet["mode"]))
        changed, before, after, _steps = _bridged.apply(ipr, fleet, alias(fleet), check_mode)
        return changed, before, after
    if old.get("mode") == "overlay":  # the tunnel as it is, for the diff
        tunnel = _overlay.read(ipr, old["vni"])
        if tunnel is not None:
            before.update(vni=tunnel["vni"], port=tunnel["port"], peers=tunnel["peers"], mtu=tunnel["mtu"])
    if old.get("mode") == "overlay" and (fleet["state"] == "absent" or fleet["mode"] != "overlay"
                                         or fleet["vni"] != old["vni"]):
        _overlay.apply(ipr, dict(bridge=fleet["bridge"], vni=old["vni"], state="absent"), bridge,
                       uplink, actions.append, check_mode)
    if fleet["state"] == "absent":
        after = dict(mode=None, bridge=fleet["bridge"], uplink=None)
        if before["mode"] is None:
            return bool(actions), before, after
        if not check_mode:
            ipr.link("set", index=bridge, ifalias="")
        return True, before, after
    if (bridge is None or uplink is None) and check_mode:  # the bridge is made by this call
        after = dict(mode=fleet["mode"], bridge=fleet["bridge"], uplink=fleet["uplink"])
        if fleet["mode"] == "overlay":
            after.update(vni=fleet["vni"], port=fleet["port"], peers=fleet["peers"])
        return True, before, after
    check(ipr, fleet)
    after = dict(mode=fleet["mode"], bridge=fleet["bridge"], uplink=fleet["uplink"])
    if fleet["mode"] == "overlay":
        _before, tunnel = _overlay.apply(ipr, fleet, bridge, uplink, actions.append, check_mode)
        after.update({k: tunnel[k] for k in ("vni", "port", "peers", "mtu")})
    todo = {p: v for p, v in sysctls(fleet).items() if have["sysctls"][p] != v}
    changed = bool(todo) or have["alias"] != alias(fleet) or bool(actions)
    if not check_mode:
        for path, value in sorted(todo.items()):
            with open(path, "w") as handle:
                handle.write(value)
        if have["alias"] != alias(fleet):
            ipr.link("set", index=bridge, ifalias=alias(fleet))
    return changed, before, after


# -- a container's addresses: published, withdrawn, announced ---------------------------
def _addresses(interfaces, routed):
    """(bridge, address) of every IPv4 address of ``interfaces`` on a routed bridge."""
    out = []
    for iface in interfaces or []:
        if iface.get("bridge") in routed and iface.get("ipv4"):
            out.append((iface["bridge"], str(ipaddress.ip_interface(iface["ipv4"]).ip)))
    return out


def _published(ipr):
    """Addresses this host has a host route for (``ROUTE_PROTO``): (address, bridge index)."""
    return {(r.get_attr("RTA_DST"), r.get_attr("RTA_OIF"))
            for r in ipr.get_routes(family=socket.AF_INET, table=254, proto=ROUTE_PROTO)
            if r["dst_len"] == 32}


def publish(ipr, interfaces, act=None, check_mode=False, announce=True, routed=None):
    """Host routes and proxy entries for the addresses of ``interfaces`` on routed
    bridges, then a gratuitous ARP for each from the uplink. An address already routed
    here is left as it is (no action, no announcement). ``routed``: ``routed_bridges``
    read ahead (a frozen window reads nothing). Returns the addresses published."""
    routed = routed_bridges(ipr) if routed is None else routed
    wanted = _addresses(interfaces, routed)
    have = _published(ipr) if wanted else set()
    done = []
    for bridge, address in wanted:
        index, uplink = routed[bridge]
        if (address, index) in have:
            continue
        done.append(address)
        if act:
            act("publish %s: host route to %s, proxy ARP on %s" % (address, bridge, uplink))
        if check_mode:
            continue
        up_index = _lookup(ipr, uplink)
        ipr.route("replace", dst=address + "/32", oif=index, scope=SCOPE_LINK, proto=ROUTE_PROTO)
        if up_index:
            ipr.neigh("replace", dst=address, ifindex=up_index, flags=NTF_PROXY)
            if announce:
                garp(uplink, address)
    return done


def withdraw(ipr, interfaces, act=None, check_mode=False, announce=True, routed=None):
    """Remove what ``publish`` added (nothing there is fine); the container bridge is told
    that the addresses are now behind the host (gratuitous ARP with the bridge's MAC).
    Returns the addresses withdrawn."""
    from pyroute2.netlink.exceptions import NetlinkError

    routed = routed_bridges(ipr) if routed is None else routed
    done = []
    for bridge, address in _addresses(interfaces, routed):
        index, uplink = routed[bridge]
        done.append(address)
        if act:
            act("withdraw %s from %s and %s" % (address, bridge, uplink))
        if check_mode:
            continue
        up_index = _lookup(ipr, uplink)
        with contextlib.suppress(NetlinkError):
            ipr.route("del", dst=address + "/32", oif=index, scope=SCOPE_LINK, proto=ROUTE_PROTO)
        if up_index:
            with contextlib.suppress(NetlinkError):
                ipr.neigh("del", dst=address, ifindex=up_index, flags=NTF_PROXY)
        if announce:
            garp(bridge, address)
    return done


def garp_frame(mac, address):
    """A gratuitous ARP request: ``address`` is at ``mac`` (sender and target IP alike)."""
    raw = bytes(int(x, 16) for x in mac.split(":"))
    ip = ipaddress.IPv4Address(address).packed
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, raw, ip, b"\0" * 6, ip)
    return b"\xff" * 6 + raw + struct.pack("!H", ETH_P_ARP) + arp


def announce(interfaces, tunnels):
    """A container that came up here (a migration's restore) announced into the overlay: a
    gratuitous ARP from its MAC for each IPv4 address of ``interfaces`` on an overlay bridge,
    sent into the bridge's VXLAN device (``tunnels``: ``overlay_tunnels`` read ahead), so that
    every peer host's tunnel and bridge learn at once where the MAC now is. Returns the
    addresses announced."""
    done = []
    for iface in interfaces or []:
        device = tunnels.get(iface.get("bridge"))
        if device and iface.get("ipv4") and iface.get("mac"):
            address = str(ipaddress.ip_interface(iface["ipv4"]).ip)
            if send_frame(device, garp_frame(iface["mac"], address)):
                done.append(address)
    return done


def send_frame(ifname, frame):
    """Send one Ethernet frame out of ``ifname`` as it is (best effort: False when the
    interface is down or gone)."""
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        try:
            sock.bind((ifname, ETH_P_ARP))
            sock.send(frame)
        finally:
            sock.close()
    except OSError:
        return False
    return True


def garp(ifname, address):
    """Send a gratuitous ARP for ``address`` from ``ifname``'s MAC (best effort: an
    interface that is down or gone announces nothing)."""
    with contextlib.suppress(OSError):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        try:
            sock.bind((ifname, ETH_P_ARP))
            mac = ":".join("%02x" % b for b in sock.getsockname()[4][:6])
            sock.send(garp_frame(mac, address))
        finally:
            sock.close()


def uplink_of(bridge):
    """The uplink of ``bridge`` when it is routed, else None (for the duplicate address
    probe)."""
    from ansible_collections.ctrhost.fleet.plugins.module_utils.net import links as _netlink

    ipr = _netlink.ipr()
    try:
        found = routed_bridges(ipr).get(bridge)
        return found[1] if found else None
    finally:
        ipr.close()


def uplink_address(ifname):
    """The first IPv4 address of ``ifname`` (the sender of a probe a proxy answers)."""
    from ansible_collections.ctrhost.fleet.plugins.module_utils.net import links as _netlink

    ipr = _netlink.ipr()
    try:
        index = _lookup(ipr, ifname)
        for msg in ipr.get_addr(index=index, family=socket.AF_INET) if index else ():
            return msg.get_attr("IFA_ADDRESS")
    finally:
        ipr.close()
    return None
