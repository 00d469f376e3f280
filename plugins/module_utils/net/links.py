# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Container links, addresses, routes and qdiscs, all through pyroute2.

Per interface (a normalised dict from ``_netconf``):

- a veth pair: host side ``host_veth`` enslaved to the bridge and up, peer
  made directly inside the container netns under ``ifname`` with its MAC,
  MTU, IPv4 and IPv6 (``nodad``) addresses; default routes via
  ``gateway``/``gateway6``; ``lo`` up.
- ``rate``: HTB towards the container, the same shape on an IFB device from
  it (see ``_netrate``).

- ``filtering`` (default on): the port's anti-spoofing chain (``_portfilter``),
  installed before the host veth is created or brought up.

``attach`` and ``update`` converge the live state to the declared list and
report the actions (the same list in check mode, where nothing is changed).
"""

from __future__ import annotations

import ipaddress
import os
import socket

from ansible_collections.ctrhost.fleet.plugins.module_utils.net import fleet as _fleet
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import portfilter as _portfilter
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import syscall as _syscall
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import (
    CtrhostError,
    MissingLibraryError,
    NotFoundError,
    ValidationError,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils.net.rate import converge_rate, htb_rate, ifb_name, lookup, unshape
from ansible_collections.ctrhost.fleet.plugins.module_utils.net.ifaces import kind as _kind

IFA_F_NODAD = 0x02


def ipr(netns=None):
    """The netlink boundary: an IPRoute in this netns or in ``netns`` (a path).

    pyroute2 0.8 and newer open the socket in ``netns`` themselves; older releases (0.7,
    Debian 12's) have no such argument, and the socket is opened by a thread that entered
    the namespace (a netlink socket stays in the namespace it was made in)."""
    try:
        from pyroute2 import IPRoute
    except ImportError as exc:
        raise MissingLibraryError("pyroute2", "for links, addresses, routes and qdiscs (netlink)", exc) from None

    if not netns:
        return IPRoute()
    try:
        return IPRoute(netns=netns)
    except TypeError:
        return _syscall.in_netns(netns, IPRoute)


def _link(ipr, index):
    try:
        return ipr.get_links(index)[0]
    except Exception:
        return None


def _addrs(ns, index):
    """Managed addresses on ``index`` as canonical CIDRs (IPv6 link-local left out)."""
    out = set()
    for msg in ns.get_addr(index=index):
        cidr = str(ipaddress.ip_interface("%s/%d" % (msg.get_attr("IFA_ADDRESS"), msg["prefixlen"])))
        if not ipaddress.ip_interface(cidr).ip.is_link_local:
            out.add(cidr)
    return out


def _default_route(ns, family):
    for route in ns.get_default_routes(family=family):
        return route.get_attr("RTA_GATEWAY"), route.get_attr("RTA_OIF")
    return None, None


# -- links ------------------------------------------------------------------

def _ns_veths(ns):
    """ifname -> (index, peer index in the host netns) for veths in the container netns."""
    out = {}
    for link in ns.get_links():
        if _kind(link) == "veth":
            out[link.get_attr("IFLA_IFNAME")] = (link["index"], link.get_attr("IFLA_LINK"))
    return out


def _host_name(host, index):
    link = _link(host, index) if index else None
    return link.get_attr("IFLA_IFNAME") if link is not None else None


def _peer_name(host, ns_index, peer_index):
    """Name of the host-side peer of the container veth ``ns_index``, if it is here."""
    link = _link(host, peer_index) if peer_index else None
    if link is None or _kind(link) != "veth" or link.get_attr("IFLA_LINK") != ns_index:
        return None
    return link.get_attr("IFLA_IFNAME")


def _remove_iface(host, ifname, host_veth, act, check_mode, ns=None, ns_index=None):
    act("remove interface %s (host veth %s)" % (ifname, host_veth or "in another netns"))
    if check_mode:
        return
    index = lookup(host, host_veth) if host_veth else None
    if index:
        unshape(host, index, ifb_name(host_veth))
        host.link("del", index=index)  # the peer goes with it
    elif host_veth:
        ifb = lookup(host, ifb_name(host_veth))
        if ifb:
            host.link("del", index=ifb)
    if not index and ns is not None and ns_index:
        ns.link("del", index=ns_index)


def _create_iface(host, netns_path, iface, act, check_mode):
    act("create veth %s <-> %s in %s" % (iface["host_veth"], iface["ifname"], netns_path))
    if check_mode:
        return
    stale = lookup(host, iface["host_veth"])
    if stale:  # left over by an interrupted attach; the name is ours
        host.link("del", index=stale)
    host.link("add", ifname=iface["host_veth"], kind="veth",
              peer={"ifname": iface["ifname"], "net_ns_fd": netns_path})


def _converge_iface(host, ns, ns_index, iface, bridge_index, act, check_mode, host_up=True):
    host_index = lookup(host, iface["host_veth"])
    hlink = _link(host, host_index) if host_index else None
    mtu_differs = hlink is not None and iface["mtu"] and hlink.get_attr("IFLA_MTU") != iface["mtu"]
    if hlink is None or hlink.get_attr("IFLA_MASTER") != bridge_index or \
            bool(hlink["flags"] & 1) != host_up or mtu_differs:
        updown = "up" if host_up else "down"
        act("attach %s to bridge %s, %s" % (iface["host_veth"], iface["bridge"], updown))
        if not check_mode:
            args = dict(index=host_index, master=bridge_index, state="up" if host_up else "down")
            if iface["mtu"]:
                args["mtu"] = iface["mtu"]
            host.link("set", **args)
    clink = _link(ns, ns_index) if ns_index else None
    want = dict(address=iface["mac"])
    if iface["mtu"]:
        want["mtu"] = iface["mtu"]
    have = dict(address=clink.get_attr("IFLA_ADDRESS"), mtu=clink.get_attr("IFLA_MTU")) if clink else {}
    changes = {k: v for k, v in want.items() if have.get(k) != v}
    if changes or clink is None or not clink["flags"] & 1:
        act("set %s %s up" % (iface["ifname"], " ".join("%s %s" % kv for kv in sorted(changes.items()))))
        if not check_mode:
            ns.link("set", index=ns_index, state="up", **changes)
    want_addrs = {a for a in (iface["ipv4"], iface["ipv6"]) if a}
    have_addrs = _addrs(ns, ns_index) if ns_index else set()
    for cidr in sorted(have_addrs - want_addrs):
        act("remove address %s from %s" % (cidr, iface["ifname"]))
        if not check_mode:
            ip = ipaddress.ip_interface(cidr)
            ns.addr("del", index=ns_index, address=str(ip.ip), prefixlen=ip.network.prefixlen)
    for cidr in sorted(want_addrs - have_addrs):
        act("add address %s to %s" % (cidr, iface["ifname"]))
        if not check_mode:
            ip = ipaddress.ip_interface(cidr)
            extra = dict(flags=IFA_F_NODAD) if ip.version == 6 else {}
            ns.addr("add", index=ns_index, address=str(ip.ip), prefixlen=ip.network.prefixlen, **extra)
    converge_rate(host, host_index, iface, act, check_mode)


def _converge_routes(ns, interfaces, act, check_mode):
    for family, key, dst in ((socket.AF_INET, "gateway", "0.0.0.0/0"), (socket.AF_INET6, "gateway6", "::/0")):
        wanted = [i for i in interfaces if i.get(key)]
        gw_have, oif_have = _default_route(ns, family) if ns else (None, None)
        if not wanted:
            if gw_have:
                act("remove default route via %s" % gw_have)
                if not check_mode:
                    ns.route("del", dst=dst, family=family)
            continue
        gw = wanted[0][key]
        oif = lookup(ns, wanted[0]["ifname"]) if ns else None
        if gw_have != gw or oif_have != oif:
            act("default route via %s dev %s" % (gw, wanted[0]["ifname"]))
            if not check_mode:
                ns.route("replace", dst=dst, gateway=gw, oif=oif, family=family)


def _converge(name, netns_path, old, new, check_mode, host_up=True):
    actions = []
    act = actions.append
    host = ipr()
    try:
        bridges = {}
        new = list(new)
        for i, iface in enumerate(new):
            index = lookup(host, iface["bridge"])
            if index is None or _kind(_link(host, index)) != "bridge":
                raise ValidationError("network[%d].bridge" % i, "bridge %r does not exist on this host"
                                      % iface["bridge"])
            bridges[iface["ifname"]] = index
            if iface.get("mtu") is None:  # on an overlay bridge: the tunnel's MTU, not 1500
                link = _link(host, index)
                if (_fleet.parse_alias(link.get_attr("IFLA_IFALIAS")) or ("",))[0] == "overlay":
                    new[i] = dict(iface, mtu=link.get_attr("IFLA_MTU"))
        _portfilter.converge(name, new, act, check_mode)
        has_ns = os.path.exists(netns_path)
        if not has_ns and not check_mode:
            raise NotFoundError("network namespace %s of container %s does not exist" % (netns_path, name))
        ns = ipr(netns_path) if has_ns else None
        try:
            veths = _ns_veths(ns) if ns else {}
            wanted = {i["ifname"]: i for i in new}
            for ifname, (idx, peer) in sorted(veths.items()):
                peer_name = _peer_name(host, idx, peer)
                if ifname not in wanted or peer_name is None:  # unwanted, or its peer is not here
                    _remove_iface(host, ifname, peer_name, act, check_mode, ns, idx)
                    del veths[ifname]
            for iface in old or []:
                if iface["ifname"] not in wanted and iface["ifname"] not in veths and lookup(
                        host, iface["host_veth"]):
                    _remove_iface(host, iface["ifname"], iface["host_veth"], act, check_mode)
            _renames(host, veths, new, act, check_mode)
            for iface in new:
                if iface["ifname"] not in veths:
                    _create_iface(host, netns_path, iface, act, check_mode)
                ns_index = lookup(ns, iface["ifname"]) if ns else None
                if check_mode and not ns_index:
                    converge_rate(host, None, iface, act, True)
                    continue
                _converge_iface(host, ns, ns_index, iface, bridges[iface["ifname"]], act, check_mode,
                                host_up)
            if ns:
                lo = _link(ns, lookup(ns, "lo"))
                if lo is not None and not lo["flags"] & 1:
                    act("set lo up")
                    if not check_mode:
                        ns.link("set", index=lo["index"], state="up")
            _converge_routes(ns, new, act, check_mode)
            _fleet_sync(host, old, new, act, check_mode, host_up)
        finally:
            if ns:
                ns.close()
    except CtrhostError:
        raise
    except Exception as exc:
        raise CtrhostError("network of container %s: %s" % (name, exc), actions=actions)
    finally:
        host.close()
    return dict(changed=bool(actions), actions=actions)


def _fleet_sync(host, old, new, act, check_mode, host_up):
    """Routed fleet bridges (``_fleet``): addresses the container gave up withdrawn, its
    addresses published once its host-side veths are up (a migration's staging keeps
    them down, and publishes at its restore: ``_restore.links_up``)."""
    kept = {i.get("ipv4") for i in new}
    gone = [i for i in old or [] if i.get("ipv4") and i["ipv4"] not in kept]
    if gone:
        _fleet.withdraw(host, gone, act, check_mode)
    if host_up:
        _fleet.publish(host, new, act, check_mode)


def _renames(host, veths, new, act, check_mode):
    """Host veths whose derived name changed (index moved): rename in two phases."""
    moves = []
    for iface in new:
        if iface["ifname"] in veths:
            current = _peer_name(host, *veths[iface["ifname"]])
            if current and current != iface["host_veth"]:
                moves.append((veths[iface["ifname"]][1], current, iface["host_veth"]))
    for step, (index, current, target) in enumerate(moves):
        act("rename host veth %s to %s" % (current, target))
        if not check_mode:
            old_ifb = lookup(host, ifb_name(current))
            if old_ifb:
                unshape(host, index, ifb_name(current))  # re-made under the new name
            host.link("set", index=index, state="down")
            host.link("set", index=index, ifname="vtmp%d%s" % (step, target[-6:]))
    for index, _current, target in moves if not check_mode else ():
        host.link("set", index=index, ifname=target, state="up")


def attach(name, netns_path, interfaces, check_mode=False, host_up=True):
    """Create/converge every interface of ``interfaces`` for container ``name``.

    Idempotent (a second call reports ``changed=False``); returns
    ``{changed, actions}``. The netns must exist (``_netns.ensure``) except
    in check mode. ``host_up=False`` (a migration's staging): the host-side veths
    join their bridges down and never come up here, so the staged copy sends nothing
    from the container's MAC and answers nothing for its addresses before it takes over.
    """
    return _converge(name, netns_path, [], interfaces, check_mode, host_up)


def update(name, netns_path, old, new, check_mode=False):
    """Live change from ``old`` to ``new`` (normalised lists): add/remove
    interfaces, change addresses, MAC, MTU, bridge, routes and rate without
    touching the container's processes. Returns ``{changed, actions}``."""
    return _converge(name, netns_path, old, new, check_mode)


def detach(name, interfaces, check_mode=False):
    """Remove the host veths (their peers go with them), qdiscs and IFBs."""
    actions = []
    if not check_mode:
        _portfilter.remove(name, actions.append)
    host = ipr()
    try:
        if not check_mode:
            _fleet.withdraw(host, interfaces, actions.append)
        for iface in interfaces or []:
            if lookup(host, iface["host_veth"]) or lookup(host, ifb_name(iface["host_veth"])):
                _remove_iface(host, iface["ifname"], iface["host_veth"], actions.append, check_mode)
    finally:
        host.close()
    return dict(changed=bool(actions), actions=actions)


NUD_INCOMPLETE, NUD_FAILED = 0x01, 0x20


def kick_neighbours(netns_path, ns=None):
    """Neighbour entries of a container's netns still being resolved (or failed) dropped,
    once its interfaces have carrier again: a restored TCP socket that sent while its
    link was down left one whose next ARP probe waits a second (``retrans_time``); the
    next packet resolves it at once. ``ns``: a netlink socket in that netns, opened
    ahead (kept open). Returns the addresses dropped."""
    own = ns is None
    if own and (not netns_path or not os.path.exists(netns_path)):
        return []
    dropped = []
    ns = ns or ipr(netns_path)
    try:
        for msg in ns.get_neighbours():
            if msg["state"] & (NUD_INCOMPLETE | NUD_FAILED):
                dst = msg.get_attr("NDA_DST")
                try:
                    ns.neigh("del", dst=dst, ifindex=msg["ifindex"])
                except Exception:  # gone meanwhile
                    continue
                dropped.append(dst)
    finally:
        if own:
            ns.close()
    return dropped


def info(name, netns_path):
    """Interfaces of container ``name`` read back from netlink."""
    if not os.path.exists(netns_path):
        return []
    out = []
    host = ipr()
    ns = ipr(netns_path)
    try:
        gws = {}
        for family, key in ((socket.AF_INET, "gateway"), (socket.AF_INET6, "gateway6")):
            gw, oif = _default_route(ns, family)
            if gw:
                gws.setdefault(oif, {})[key] = gw
        for link in ns.get_links():
            ifname = link.get_attr("IFLA_IFNAME")
            if ifname == "lo":
                continue
            index = link["index"]
            addrs = sorted(_addrs(ns, index))
            entry = dict(ifname=ifname, mac=link.get_attr("IFLA_ADDRESS"), mtu=link.get_attr("IFLA_MTU"),
                         state=(link.get_attr("IFLA_OPERSTATE") or "").lower(),
                         ipv4=next((a for a in addrs if ":" not in a), None),
                         ipv6=next((a for a in addrs if ":" in a), None),
                         host_veth=None, bridge=None, rate=None,
                         gateway=gws.get(index, {}).get("gateway"),
                         gateway6=gws.get(index, {}).get("gateway6"))
            peer = _link(host, link.get_attr("IFLA_LINK")) if _kind(link) == "veth" else None
            if peer is not None and _kind(peer) == "veth" and peer.get_attr("IFLA_LINK") == index:
                entry["host_veth"] = peer.get_attr("IFLA_IFNAME")
                master = peer.get_attr("IFLA_MASTER")
                entry["bridge"] = _host_name(host, master) if master else None
                entry["rate"] = htb_rate(host, peer["index"])
            out.append(entry)
    finally:
        ns.close()
        host.close()
    return out
