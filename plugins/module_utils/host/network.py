# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host's network as ``host_network`` declares it (the module's entry, ``network_task``):
bridges, forwarding, NAT, routes and the fleet network applied to the running kernel and
kept in ``<root>/host-network.json``, which the host's boot applies again
(``restore_network``, called by ``boot.boot``) through the same code."""

from __future__ import annotations

import json
import os

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.atomic import atomic_write, json_text
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.host import netconfirm as _confirm
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import bridged as _bridged
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import bridges as _hostnet
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import fleet as _fleet
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import links as _netlink
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import overlay as _overlay

NETWORK_FILE = "host-network.json"


def network_path(root):
    return os.path.join(Layout(root).root, NETWORK_FILE)


def load_network(root):
    """The persisted network declaration: {bridges: {name: ...}, forwarding, routes: {dest: ...},
    fleet: {...} or None}."""
    try:
        with open(network_path(root)) as handle:
            saved = json.load(handle)
    except FileNotFoundError:
        saved = {}
    return dict(bridges=saved.get("bridges") or {}, forwarding=saved.get("forwarding") or {},
                routes=saved.get("routes") or {}, fleet=saved.get("fleet"))


def merged_network(saved, bridges, forwarding, routes, fleet=None):
    """``saved`` updated with one host_network call: entries with state absent leave it,
    present ones replace the entry of the same name (bridge) or destination (route); a
    ``fleet`` replaces the saved one (state absent removes it)."""
    out = dict(bridges=dict(saved["bridges"]), forwarding=dict(saved["forwarding"]),
               routes=dict(saved["routes"]), fleet=saved.get("fleet"))
    if fleet:
        out["fleet"] = None if fleet.get("state", "present") == "absent" else \
            {k: v for k, v in fleet.items() if v is not None and k != "state"}
    for bridge in bridges or []:
        if bridge.get("state", "present") == "absent":
            out["bridges"].pop(bridge["name"], None)
        else:
            out["bridges"][bridge["name"]] = {k: v for k, v in bridge.items() if v is not None}
    for key, value in (forwarding or {}).items():
        if value is not None:
            out["forwarding"][key] = bool(value)
    for route in routes or []:
        if route.get("state", "present") == "absent":
            out["routes"].pop(route["dest"], None)
        else:
            out["routes"][route["dest"]] = {k: v for k, v in route.items() if v is not None}
    return out


def persist_network(root, bridges, forwarding, routes, fleet=None, check_mode=False):
    """Record a host_network call for the next boot; return True when the file changes."""
    saved = load_network(root)
    new = merged_network(saved, bridges, forwarding, routes, fleet)
    if new == saved and os.path.exists(network_path(root)):
        return False
    if not check_mode:
        atomic_write(network_path(root), json_text(new), parents=True)
    return True


def restore_network(root):
    """Apply the persisted declaration (at boot); return the host_network result or None.
    A change never confirmed (``netconfirm``) gives way to the declaration before it."""
    _confirm.at_boot(root)
    saved = load_network(root)
    if not (saved["bridges"] or saved["forwarding"] or saved["routes"] or saved["fleet"]):
        return None
    return apply_network(list(saved["bridges"].values()), saved["forwarding"],
                         list(saved["routes"].values()), saved["fleet"])


def apply_network(bridges, forwarding, routes, fleet, force=False, check_mode=False, root=None):
    """Bridges, forwarding, NAT and routes (``_hostnet``), then the fleet network mode
    (``_fleet``). A fleet bridge declared without ``mac`` gets the fleet's MAC (the same on
    every host), also in a call that does not name the fleet. Everything is validated
    before anything changes. With ``root`` (the module, not the boot), a bridged mode that
    moves the host's network is armed first (``_confirm``): it rolls back by itself unless
    the next run confirms it, and a failure half-way puts the previous network back at once."""
    want = _fleet.normalize(fleet)
    if want is not None and want["mode"] == "bridged":
        return _apply_bridged(want, bridges, forwarding, routes, force, check_mode, root)
    return _apply(want, bridges, forwarding, routes, force, check_mode)


def _apply(want, bridges, forwarding, routes, force, check_mode, first_fleet=False):
    bridges = [dict(b) for b in bridges or []]
    ipr = _netlink.ipr()
    try:
        fleet_bridges = set(_fleet.routed_bridges(ipr))
        if want is not None:
            fleet_bridges.discard(want["bridge"])
            if want["state"] == "present" and want["mode"] == "routed":
                fleet_bridges.add(want["bridge"])
        for bridge in bridges:
            if bridge.get("name") in fleet_bridges and not bridge.get("mac"):
                bridge["mac"] = _fleet.fleet_mac(bridge["name"])
        _fleet.check(ipr, want, [b.get("name") for b in bridges if b.get("state") != "absent"])
        if want is not None and want["state"] == "present" and want["mode"] == "overlay":
            _overlay_mtu(ipr, want, bridges)
        if want is not None and want["mode"] == "bridged" and want["state"] == "present":
            _bridged_bridge(ipr, want, bridges)
        fleet_result = _fleet.apply(ipr, want, check_mode) if first_fleet else None
        result = _hostnet.apply(bridges=bridges, forwarding=forwarding, routes=routes, force=force,
                                check_mode=check_mode)
        result["fleet"] = None
        if want is not None:
            changed, before, after = fleet_result or _fleet.apply(ipr, want, check_mode)
            result["changed"] = result["changed"] or changed
            result["diff"]["before"]["fleet"], result["diff"]["after"]["fleet"] = before, after
            result["fleet"] = after
    finally:
        ipr.close()
    return result


def _bridged_declared(want, bridges):
    """Refuse addresses or a MAC of the bridged bridge's own (they would fight the host's,
    which move onto it), before anything changes."""
    for i, bridge in enumerate(bridges or []):
        if bridge.get("name") != want["bridge"] or bridge.get("state") == "absent":
            continue
        for key in ("ipv4", "ipv6", "mac"):
            if bridge.get(key):
                raise ValidationError("bridges[%d].%s" % (i, key), "expected none on the bridged bridge %s: "
                                      "it takes the addresses and the MAC of %s" % (want["bridge"], want["uplink"]))


def _bridged_bridge(ipr, want, bridges):
    """The bridged bridge declared here takes the uplink's MAC."""
    found = ipr.link_lookup(ifname=want["uplink"])
    for bridge in bridges:
        if bridge.get("name") == want["bridge"] and bridge.get("state") != "absent" and found:
            bridge["mac"] = ipr.get_links(found[0])[0].get_attr("IFLA_ADDRESS")


def _apply_bridged(want, bridges, forwarding, routes, force, check_mode, root):
    """The bridged mode: confirm a pending change of the bridge (this run reached the host),
    then apply; a change of the uplink is armed first when a rollback is wanted."""
    confirmed = None
    if root is not None:
        confirmed = _confirm.confirm(root, want["bridge"], check_mode)
    if want["state"] == "absent":  # the network back to the uplink before the bridges change
        result = _apply(want, bridges, forwarding, routes, force, check_mode, first_fleet=True)
        return _with_pending(result, confirmed, None)
    _bridged_declared(want, bridges)
    ipr = _netlink.ipr()
    try:
        _fleet.check(ipr, want, [b.get("name") for b in bridges or [] if b.get("state") != "absent"])
        snap = _bridged.snapshot(ipr, want)
        moves = snap["br"] is None or bool(_bridged.plan(snap, _fleet.alias(want)))
    finally:
        ipr.close()
    record = None
    if moves and not check_mode and root is not None and want["rollback_timeout"]:
        path = network_path(root)
        previous = None
        if os.path.exists(path):
            with open(path) as handle:
                previous = handle.read()
        record = _confirm.arm(root, snap, want["rollback_timeout"], path, previous)
    try:
        result = _apply(want, bridges, forwarding, routes, force, check_mode)
    except BaseException:
        if record is not None:
            _confirm.disarm_and_restore(root, record)
        raise
    return _with_pending(result, confirmed, record)


def _with_pending(result, confirmed, record):
    if result.get("fleet") is not None:
        result["fleet"]["confirmed"] = confirmed is not None
        result["fleet"]["pending"] = record is not None
        if record is not None:
            result["fleet"]["rollback_deadline"] = record["deadline"]
    return result


def _overlay_mtu(ipr, want, bridges):
    """An overlay bridge declared here takes the tunnel's MTU (the uplink's less the VXLAN
    overhead) unless it names a smaller one; a larger one is refused."""
    uplink = ipr.get_links(ipr.link_lookup(ifname=want["uplink"])[0])[0].get_attr("IFLA_MTU")
    limit = _overlay.tunnel_mtu(uplink)
    for i, bridge in enumerate(bridges):
        if bridge.get("name") != want["bridge"] or bridge.get("state") == "absent":
            continue
        if bridge.get("mtu") is None:
            bridge["mtu"] = limit
        elif isinstance(bridge["mtu"], int) and bridge["mtu"] > limit:
            raise ValidationError("bridges[%d].mtu" % i, "expected at most %d on the overlay bridge %s "
                                  "(the MTU %d of %s less %d bytes of VXLAN), got %d"
                                  % (limit, want["bridge"], uplink, want["uplink"], _overlay.OVERHEAD,
                                     bridge["mtu"]))


def network_task(params, check_mode=False):
    """The ``host_network`` module's entry: apply now, and record it for the next boot."""
    result = apply_network(params["bridges"], params["forwarding"], params["routes"],
                           params.get("fleet"), force=params["force"], check_mode=check_mode,
                           root=params["root"])
    result["persisted"] = params["persist"] and persist_network(
        params["root"], params["bridges"], params["forwarding"], params["routes"],
        params.get("fleet"), check_mode=check_mode)
    result["changed"] = result["changed"] or result["persisted"]
    return result


network_task.diff_on_request = True
