# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Refuse a container address that is taken on this host.

One check for a new container, a live re-address and a migration's preflight:

1. the declared specs of the host's other containers and the bridges' own
   addresses (``_netconf.check_conflicts``: also a missing bridge and a
   clashing veth name);
2. duplicate address detection on each bridge (``_dad``): an ARP probe for
   IPv4, a neighbour solicitation for IPv6. What answers is named: the
   container of this host whose interface has that MAC, else the MAC.
3. on a routed fleet bridge (``_fleet``), the same for its IPv4 addresses on
   the bridge's uplink, where another host that runs a container with the
   address answers for it (a proxy entry: it answers an ARP request from the
   host's own address, not an RFC 5227 probe). A migration's preflight skips
   this one: the container's current host answers there until the move.

Addresses the container already holds (``held``: a live re-address keeps
them) are not probed, and answers from the container's own MACs do not
count (a migrating container still runs on the source, which may share the
destination's segment). Nothing is written.
"""

from __future__ import annotations

import ipaddress

from ansible_collections.ctrhost.fleet.plugins.module_utils.net import spec as _netconf
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.store import ContainerStore


def _host(cidr):
    return str(ipaddress.ip_interface(cidr).ip)


def other_specs(layout, name):
    """name -> stored spec of every other container of this host."""
    store = ContainerStore(layout)
    out = {}
    for other in store.names():
        if other != name:
            out[other] = store.load(other) or {}
    return out


def check(layout, name, interfaces, held=(), own_macs=(), bridges=None, probe=True, fleet=True):
    """Raise ValidationError (naming ``network[i].ipv4``/``ipv6`` and the holder) when
    an address of ``interfaces`` (normalised) is taken on this host (or, ``fleet``, on
    another host of a routed fleet)."""
    others = other_specs(layout, name)
    _netconf.check_conflicts(interfaces, others, bridges)
    if not probe:
        return
    held = {_host(a) for a in held if a}
    macs = {m for m in own_macs if m} | {i["mac"] for i in interfaces}
    owners = {iface.get("mac"): other for other, spec in others.items()
              for iface in spec.get("network") or []}
    from ansible_collections.ctrhost.fleet.plugins.module_utils.net import duplicate_address as _dad

    by_bridge = {}
    for i, iface in enumerate(interfaces):
        for key in ("ipv4", "ipv6"):
            if iface.get(key) and _host(iface[key]) not in held:
                by_bridge.setdefault(iface["bridge"], []).append((i, key, _host(iface[key])))
    for bridge, wanted in sorted(by_bridge.items()):
        answers = _dad.probe(bridge, [a for _i, _k, a in wanted], ignore_macs=macs)
        _refuse(wanted, answers, owners, "bridge %s" % bridge)
        uplink = _fleet_uplink(bridge) if fleet else None
        if uplink:
            wanted = [w for w in wanted if w[1] == "ipv4"]
            answers = _dad.probe(uplink, [a for _i, _k, a in wanted], ignore_macs=macs,
                                 sender=_fleet_uplink_address(uplink))
            _refuse(wanted, answers, {}, "the fleet's LAN (uplink %s of bridge %s)" % (uplink, bridge))


def _fleet_uplink(bridge):
    from ansible_collections.ctrhost.fleet.plugins.module_utils.net import fleet as _fleet
    return _fleet.uplink_of(bridge)


def _fleet_uplink_address(uplink):
    from ansible_collections.ctrhost.fleet.plugins.module_utils.net import fleet as _fleet
    return _fleet.uplink_address(uplink)


def _refuse(wanted, answers, owners, where):
    for i, key, address in wanted:
        mac = answers.get(address)
        if mac:
            holder = ("container %r (MAC %s)" % (owners[mac], mac) if mac in owners
                      else "the machine with MAC %s" % mac)
            raise ValidationError("network[%d].%s" % (i, key), "%s is already in use on %s: "
                                  "%s answered the duplicate address probe. Nothing was changed."
                                  % (address, where, holder), holder=mac)


def check_change(layout, name, old, new, created):
    """``check`` for a new container (``created``) or a changed ``network`` (``old`` -> ``new``):
    a re-address probes only the addresses the container does not hold yet."""
    old = old or []
    if not new or (not created and old == new):
        return
    check(layout, name, new, held=[i.get(k) for i in old for k in ("ipv4", "ipv6")],
          own_macs=[i.get("mac") for i in old])


def problems(layout, name, interfaces, own_macs=(), fleet=True):
    """The preflight form of ``check``: a list of messages (empty when the addresses are free)."""
    try:
        check(layout, name, interfaces, own_macs=own_macs, fleet=fleet)
    except ValidationError as exc:
        return [exc.msg]
    return []
