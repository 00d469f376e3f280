# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a container host does at boot and at shutdown, without Ansible.

Bridges, forwarding, NAT and routes are kernel state that a reboot loses, and containers
die with the host. ``host_network`` therefore keeps what it applied in
``<root>/host-network.json``; at boot the host's own unit (``ctrhost.service``, installed
by the ``host`` role) applies that declaration again through the same library and then
starts the containers declared with ``autostart``. At shutdown the same unit stops every
running container in order (its init gets the stop signal and the stop timeout, then
SIGKILL), before the network goes down, so that a container neither holds the shutdown up
nor is killed without a chance to stop cleanly.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.ctrhost.fleet.plugins.module_utils.container import lifecycle as _container
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import bridges as _hostnet
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import fleet as _fleet
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import links as _netlink
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CtrhostError
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.atomic import atomic_write, json_text
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.store import ContainerStore

NETWORK_FILE = "host-network.json"
# What the last boot and the last shutdown did, for the operator (and the tests).
REPORT_FILES = dict(boot="last-boot.json", shutdown="last-shutdown.json")


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
    """Apply the persisted declaration (at boot); return the host_network result or None."""
    saved = load_network(root)
    if not (saved["bridges"] or saved["forwarding"] or saved["routes"] or saved["fleet"]):
        return None
    return apply_network(list(saved["bridges"].values()), saved["forwarding"],
                         list(saved["routes"].values()), saved["fleet"])


def apply_network(bridges, forwarding, routes, fleet, force=False, check_mode=False):
    """Bridges, forwarding, NAT and routes (``_hostnet``), then the fleet network mode
    (``_fleet``). A fleet bridge declared without ``mac`` gets the fleet's MAC (the same on
    every host), also in a call that does not name the fleet. Everything is validated
    before anything changes."""
    want = _fleet.normalize(fleet)
    bridges = [dict(b) for b in bridges or []]
    ipr = _netlink.ipr()
    try:
        fleet_bridges = set(_fleet.routed_bridges(ipr))
        if want is not None:
            fleet_bridges.discard(want["bridge"])
            if want["state"] == "present":
                fleet_bridges.add(want["bridge"])
        for bridge in bridges:
            if bridge.get("name") in fleet_bridges and not bridge.get("mac"):
                bridge["mac"] = _fleet.fleet_mac(bridge["name"])
        _fleet.check(ipr, want, [b.get("name") for b in bridges if b.get("state") != "absent"])
        result = _hostnet.apply(bridges=bridges, forwarding=forwarding, routes=routes, force=force,
                                check_mode=check_mode)
        result["fleet"] = None
        if want is not None:
            changed, before, after = _fleet.apply(ipr, want, check_mode)
            result["changed"] = result["changed"] or changed
            result["diff"]["before"]["fleet"], result["diff"]["after"]["fleet"] = before, after
            result["fleet"] = after
    finally:
        ipr.close()
    return result


PARALLEL = 16  # containers started or stopped at once


def _one(root, name, action):
    try:
        result = _container.ensure(dict(root=root, name=name, state=action))
    except CtrhostError as exc:
        return dict(name=name, failed=True, msg=exc.msg)
    return dict(name=name, changed=result["changed"], state=result["container"].get("state"))


def _each_container(root, want, action):
    """``action`` (a container state) for every container whose spec ``want`` accepts, in
    parallel (a stop mostly waits for the container's stop timeout)."""
    store = ContainerStore(Layout(root))
    names = [n for n in store.names() if want(store.load(n) or {})]
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        report = list(pool.map(lambda n: _one(root, n, action), names))
    return report, sum(1 for entry in report if entry.get("failed"))


def _keep_report(root, kind, started, report, failed):
    report = dict(at=time.time(), seconds=round(time.monotonic() - started, 2), failed=failed,
                  steps=report)
    atomic_write(os.path.join(Layout(root).root, REPORT_FILES[kind]), json_text(report),
                 parents=True)


def boot(root):
    """At boot: the network, then the autostart containers. Returns (report, failures)."""
    started = time.monotonic()
    report, failed = [], 0
    try:
        net = restore_network(root)
        if net is not None:
            report.append(dict(network=True, changed=net["changed"], bridges=sorted(net["bridges"])))
    except CtrhostError as exc:
        failed += 1
        report.append(dict(network=True, failed=True, msg=exc.msg))
    done, bad = _each_container(root, lambda spec: spec.get("autostart"), "started")
    report, failed = report + done, failed + bad
    if os.path.isdir(Layout(root).root):
        _keep_report(root, "boot", started, report, failed)
    return report, failed


def shutdown(root):
    """At shutdown: stop every container that runs (the declared state is kept)."""
    started = time.monotonic()
    report, failed = _each_container(root, lambda spec: True, "stopped")
    if os.path.isdir(Layout(root).root):
        _keep_report(root, "shutdown", started, report, failed)
    return report, failed


def network_task(params, check_mode=False):
    """The ``host_network`` module's entry: apply now, and record it for the next boot."""
    result = apply_network(params["bridges"], params["forwarding"], params["routes"],
                           params.get("fleet"), force=params["force"], check_mode=check_mode)
    result["persisted"] = params["persist"] and persist_network(
        params["root"], params["bridges"], params["forwarding"], params["routes"],
        params.get("fleet"), check_mode=check_mode)
    result["changed"] = result["changed"] or result["persisted"]
    return result


network_task.diff_on_request = True
