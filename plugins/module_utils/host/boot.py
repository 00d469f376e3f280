# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a container host does at boot and at shutdown, without Ansible.

Bridges, forwarding, NAT and routes are kernel state that a reboot loses, and containers
die with the host. ``host_network`` therefore keeps what it applied in
``<root>/host-network.json`` (``network.py``); at boot the host's own unit (``ctrhost.service``, installed
by the ``host`` role) applies that declaration again through the same library and then
starts the containers declared with ``autostart``. At shutdown the same unit stops every
running container in order (its init gets the stop signal and the stop timeout, then
SIGKILL), before the network goes down, so that a container neither holds the shutdown up
nor is killed without a chance to stop cleanly.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.ctrhost.fleet.plugins.module_utils.container import lifecycle as _container
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CtrhostError
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.host import network as _hostnetwork
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.atomic import atomic_write, json_text
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.store import ContainerStore

# What the last boot and the last shutdown did, for the operator (and the tests).
REPORT_FILES = dict(boot="last-boot.json", shutdown="last-shutdown.json")


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
        net = _hostnetwork.restore_network(root)
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
