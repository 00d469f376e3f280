# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet network's mode ``bridged`` (the Proxmox ``vmbr0`` way): the container bridge
takes the host's physical port (the uplink), and the host's own network moves from the NIC
to the bridge, so that containers on the bridge are on the LAN itself.

What moves (``plan``): every address of the NIC other than IPv6 link-local ones, and every
route of the main table through the NIC other than those the kernel makes for an address
(``proto kernel``), e.g. the default route. The bridge takes the NIC's MAC, so the LAN sees
the host's addresses at the same MAC as before. The order keeps the host reachable at every
step it can: the bridge gets the MAC and the addresses first, then the NIC becomes its port,
then the routes move (a ``replace`` of the same destination and metric moves a route at once),
and the NIC's addresses go last.

``snapshot`` reads what a rollback needs (the NIC, its addresses and routes, whether the
bridge existed and what it had) as plain data, and ``restore`` puts it back: the NIC leaves
the bridge, a bridge that did not exist is deleted, the NIC's addresses and routes return.
``undo`` is the declared way back (``state: absent``): addresses and routes of the bridge
return to the NIC, which leaves the bridge; the bridge stays (declare it absent to delete it).

The bridge's alias reads ``ctrhost-fleet bridged uplink=NAME``. The anti-spoofing port
filters (``net/portfilter.py``) hold only container ports, so the uplink port passes
untouched, as an overlay's VXLAN port does.
"""

from __future__ import annotations

import contextlib
import socket

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.net.ifaces import kind as _kind, lookup as _lookup

PROTO_KERNEL = 2
IFA_F_NODAD = 0x02
MAIN_TABLE = 254
ROLLBACK_TIMEOUT = 120  # seconds: time enough for the controller to come back, short for an operator
ROLLBACK_MAX = 3600


def normalize(fleet, out):
    """``out`` with ``rollback_timeout`` checked (seconds, 0 = no rollback)."""
    value = fleet.get("rollback_timeout")
    if value in (None, ""):
        value = ROLLBACK_TIMEOUT
    if isinstance(value, bool) or not str(value).isdigit() or int(value) > ROLLBACK_MAX:
        raise ValidationError("fleet.rollback_timeout", "expected seconds (0-%d; 0 turns the rollback off), "
                              "got %r" % (ROLLBACK_MAX, value))
    out["rollback_timeout"] = int(value)
    return out


def _addrs(ipr, index):
    """The addresses ``bridged`` moves: every one of ``index`` but IPv6 link-local."""
    out = []
    for msg in ipr.get_addr(index=index):
        address = msg.get_attr("IFA_ADDRESS")
        if msg["family"] == socket.AF_INET6 and (address.startswith("fe80:") or msg["scope"] == 253):
            continue
        item = dict(family=msg["family"], address=address, prefixlen=msg["prefixlen"])
        if msg["family"] == socket.AF_INET and msg.get_attr("IFA_BROADCAST"):
            item["broadcast"] = msg.get_attr("IFA_BROADCAST")
        out.append(item)
    return sorted(out, key=lambda a: (a["family"], a["address"]))


def _routes(ipr, index):
    """The routes ``bridged`` moves: main table, through ``index``, not made by the kernel."""
    out = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for msg in ipr.get_routes(family=family, table=MAIN_TABLE):
            if msg.get_attr("RTA_OIF") != index or msg["proto"] == PROTO_KERNEL or msg["type"] != 1:
                continue
            dst = msg.get_attr("RTA_DST")
            if family == socket.AF_INET6 and dst and dst.startswith("fe80:"):
                continue
            out.append(dict(family=family, dst=dst, dst_len=msg["dst_len"], gateway=msg.get_attr("RTA_GATEWAY"),
                            priority=msg.get_attr("RTA_PRIORITY"), proto=msg["proto"], scope=msg["scope"],
                            prefsrc=msg.get_attr("RTA_PREFSRC")))
    return sorted(out, key=lambda r: (r["family"], r["dst"] or "", r["dst_len"], r["priority"] or 0))


def snapshot(ipr, fleet):
    """What the uplink and the bridge are now, as plain data (for ``plan`` and ``restore``)."""
    nic_index, br_index = _lookup(ipr, fleet["uplink"]), _lookup(ipr, fleet["bridge"])
    nic = ipr.get_links(nic_index)[0] if nic_index else None
    out = dict(bridge=fleet["bridge"], uplink=fleet["uplink"], bridge_existed=br_index is not None,
               nic=None, br=None)
    if nic is not None:
        master = nic.get_attr("IFLA_MASTER")
        out["nic"] = dict(mac=nic.get_attr("IFLA_ADDRESS"), up=bool(nic["flags"] & 1),
                          master=ipr.get_links(master)[0].get_attr("IFLA_IFNAME") if master else None,
                          kind=_kind(nic), addrs=_addrs(ipr, nic_index), routes=_routes(ipr, nic_index))
    if br_index is not None:
        br = ipr.get_links(br_index)[0]
        out["br"] = dict(mac=br.get_attr("IFLA_ADDRESS"), alias=br.get_attr("IFLA_IFALIAS") or "",
                         kind=_kind(br), addrs=_addrs(ipr, br_index), routes=_routes(ipr, br_index))
    return out


def check(snap):
    """Refuse an uplink that cannot be bridged, before anything changes."""
    nic = snap["nic"]
    if nic is None:
        raise ValidationError("fleet.uplink", "interface %s does not exist on this host; expected the "
                              "host's physical LAN port" % snap["uplink"])
    if nic["kind"] in ("bridge", "vxlan", "bond_slave") or (nic["master"] not in (None, snap["bridge"])):
        raise ValidationError("fleet.uplink", "expected a port the bridge %s can take (not a bridge, a "
                              "tunnel or a port of %s), got %s (%s)"
                              % (snap["bridge"], nic["master"] or "another bridge", snap["uplink"],
                                 nic["kind"] or "ethernet"))
    if snap["br"] is not None and snap["br"]["kind"] != "bridge":
        raise ValidationError("fleet.bridge", "%s exists and is not a bridge" % snap["bridge"])


def plan(snap, alias_text):
    """The steps that make ``snap`` bridged (pure): a list of (step, argument)."""
    nic, br = snap["nic"], snap["br"] or dict(mac=None, alias="", addrs=[], routes=[])
    steps = []
    if br["mac"] != nic["mac"]:
        steps.append(("mac", nic["mac"]))
    for item in nic["addrs"]:
        if item not in br["addrs"]:
            steps.append(("add_addr", item))
    if nic["master"] != snap["bridge"]:
        steps.append(("enslave", snap["uplink"]))
    for route in nic["routes"]:
        steps.append(("move_route", route))
    for item in nic["addrs"]:
        steps.append(("del_addr", item))
    if br["alias"] != alias_text:
        steps.append(("alias", alias_text))
    return steps


def view(snap, mode="bridged"):
    """The diff's view of the uplink and the bridge."""
    where = snap["br"] if mode == "bridged" and snap["br"] else (snap["nic"] or {})
    return dict(mode=mode, bridge=snap["bridge"], uplink=snap["uplink"],
                addresses=["%s/%d" % (a["address"], a["prefixlen"]) for a in where.get("addrs", [])],
                routes=sorted(_route_text(r) for r in where.get("routes", [])))


def _route_text(route):
    dst = "%s/%d" % (route["dst"], route["dst_len"]) if route["dst"] else "default"
    return dst + (" via %s" % route["gateway"] if route["gateway"] else "")


def describe(steps):
    return ["%s %s" % (step, arg if isinstance(arg, str) else
                       (_route_text(arg) if "dst_len" in arg else "%s/%d" % (arg["address"], arg["prefixlen"])))
            for step, arg in steps]


def _add_addr(ipr, index, item):
    extra = dict(broadcast=item["broadcast"]) if item.get("broadcast") else {}
    if item["family"] == socket.AF_INET6:
        extra["flags"] = IFA_F_NODAD
    ipr.addr("replace", index=index, address=item["address"], prefixlen=item["prefixlen"], **extra)


def _del_addr(ipr, index, item):
    from pyroute2.netlink.exceptions import NetlinkError

    with contextlib.suppress(NetlinkError):
        ipr.addr("del", index=index, address=item["address"], prefixlen=item["prefixlen"])


def _put_route(ipr, index, route):
    spec = dict(family=route["family"], dst_len=route["dst_len"], oif=index, table=MAIN_TABLE,
                proto=route["proto"], scope=route["scope"])
    for key in ("dst", "gateway", "priority", "prefsrc"):
        if route.get(key) is not None:
            spec[key] = route[key]
    ipr.route("replace", **spec)


def run(ipr, snap, steps):
    """Carry ``steps`` out (the bridge exists and is up)."""
    br, nic = _lookup(ipr, snap["bridge"]), _lookup(ipr, snap["uplink"])
    ipr.link("set", index=br, state="up")
    for step, arg in steps:
        if step == "mac":
            ipr.link("set", index=br, address=arg)
        elif step == "add_addr":
            _add_addr(ipr, br, arg)
        elif step == "enslave":
            ipr.link("set", index=nic, master=br)
            ipr.link("set", index=nic, state="up")
        elif step == "move_route":
            _put_route(ipr, br, arg)
        elif step == "del_addr":
            _del_addr(ipr, nic, arg)
        elif step == "alias":
            ipr.link("set", index=br, ifalias=arg)


def apply(ipr, fleet, alias_text, check_mode=False):
    """Make ``fleet["bridge"]`` take ``fleet["uplink"]`` and the host's network (or give it
    back, state absent); return (changed, before, after, steps)."""
    snap = snapshot(ipr, fleet)
    if fleet["state"] == "absent":
        return undo(ipr, snap, check_mode)
    check(snap)
    if snap["br"] is None:  # made by this call (check mode): everything would move
        steps = plan(snap, alias_text)
        after = dict(view(snap, "bridged"), addresses=view(snap, None)["addresses"],
                     routes=view(snap, None)["routes"])
        return True, view(snap, None), after, steps
    steps = plan(snap, alias_text)
    before = view(snap, "bridged" if snap["br"]["alias"] == alias_text else None)
    if before["mode"] is None:
        before["addresses"], before["routes"] = view(snap, None)["addresses"], view(snap, None)["routes"]
    after = dict(view(snap, "bridged"))
    after["addresses"] = sorted(set(after["addresses"]) | set(view(snap, None)["addresses"]))
    after["routes"] = sorted(set(after["routes"]) | set(view(snap, None)["routes"]))
    if steps and not check_mode:
        run(ipr, snap, steps)
    return bool(steps), before, after, steps


def undo(ipr, snap, check_mode=False):
    """``state: absent``: the bridge's addresses and routes back on the uplink, which leaves
    the bridge; the bridge's alias cleared."""
    br = snap["br"]
    if br is None or not br["alias"].startswith("ctrhost-fleet bridged "):
        return False, dict(mode=None, bridge=snap["bridge"]), dict(mode=None, bridge=snap["bridge"]), []
    uplink = br["alias"].split("uplink=", 1)[1].split()[0]
    back = dict(snap, uplink=uplink)
    steps = [("release", uplink)] + [("add_addr", a) for a in br["addrs"]] + \
        [("move_route", r) for r in br["routes"]] + [("del_addr", a) for a in br["addrs"]] + [("alias", "")]
    before = view(back, "bridged")
    after = dict(mode=None, bridge=snap["bridge"], uplink=uplink, addresses=before["addresses"],
                 routes=before["routes"])
    if not check_mode:
        nic, index = _lookup(ipr, uplink), _lookup(ipr, snap["bridge"])
        if nic is not None:
            ipr.link("set", index=nic, master=0)
            ipr.link("set", index=nic, state="up")
            for item in br["addrs"]:
                _add_addr(ipr, nic, item)
            for route in br["routes"]:
                _put_route(ipr, nic, route)
        for item in br["addrs"]:
            _del_addr(ipr, index, item)
        ipr.link("set", index=index, ifalias="")
    return True, before, after, steps


def restore(ipr, snap):
    """Put the uplink and the bridge back as ``snapshot`` read them (a rollback); best effort
    step by step, so that one failing step does not keep the others from running."""
    from pyroute2.netlink.exceptions import NetlinkError

    errors = []

    def attempt(func, *args, **kwargs):
        try:
            func(*args, **kwargs)
        except (NetlinkError, OSError) as exc:
            errors.append(str(exc))

    nic, br = _lookup(ipr, snap["uplink"]), _lookup(ipr, snap["bridge"])
    if nic is not None and snap["nic"] is not None:
        master = _lookup(ipr, snap["nic"]["master"]) if snap["nic"]["master"] else 0
        attempt(ipr.link, "set", index=nic, master=master or 0)
        attempt(ipr.link, "set", index=nic, state="up" if snap["nic"]["up"] else "down")
    if br is not None and not snap["bridge_existed"]:
        attempt(ipr.link, "del", index=br)
    elif br is not None and snap["br"] is not None:
        for item in _addrs(ipr, br):
            if item not in snap["br"]["addrs"]:
                attempt(_del_addr, ipr, br, item)
        attempt(ipr.link, "set", index=br, address=snap["br"]["mac"])
        attempt(ipr.link, "set", index=br, ifalias=snap["br"]["alias"])
    if nic is not None and snap["nic"] is not None:
        for item in snap["nic"]["addrs"]:
            attempt(_add_addr, ipr, nic, item)
        for route in snap["nic"]["routes"]:
            attempt(_put_route, ipr, nic, route)
    return errors
