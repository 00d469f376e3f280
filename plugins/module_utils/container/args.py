# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The argument spec of a container, defined once.

``ctrhost.fleet.container`` takes ``CONTAINER_OPTIONS`` (plus the common
``root``); ``ctrhost.fleet.containers`` takes a list of them under
``containers``. Their documentation is the doc fragment
``ctrhost.fleet.container`` (plugins/doc_fragments/container.py), shared the
same way. The ``limits`` suboptions come from the limit records (``_limits``).
"""

from __future__ import annotations

import copy

from ansible_collections.ctrhost.fleet.plugins.module_utils.limits import records as _limits
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.module import (
    COMMON_ARGS,
    argument_spec,
)

STATES = ("present", "started", "stopped", "frozen", "restarted", "absent")

MOUNT_OPTIONS = dict(
    source=dict(type="path"),
    destination=dict(type="str", required=True),
    readonly=dict(type="bool", default=False),
    type=dict(type="str", choices=["bind", "tmpfs"], default="bind"),
)

CAPABILITY_OPTIONS = dict(
    add=dict(type="list", elements="str"),
    drop=dict(type="list", elements="str"),
)

# ``limits`` (validated and normalised by _limits; sizes and cpus keep their human form).
LIMIT_OPTIONS = _limits.argument_spec()

# One item of ``network`` (validated and normalised by _netconf).
NETWORK_OPTIONS = dict(
    ifname=dict(type="str"),
    bridge=dict(type="str", required=True),
    ipv4=dict(type="str"),
    gateway=dict(type="str"),
    ipv6=dict(type="str"),
    gateway6=dict(type="str"),
    mac=dict(type="str"),
    mtu=dict(type="int"),
    rate=dict(type="raw"),
    filtering=dict(type="bool"),
)

# The options of one container (every option of the container module but root).
CONTAINER_OPTIONS = dict(
    name=dict(type="str", required=True),
    state=dict(type="str", default="started", choices=list(STATES)),
    template=dict(type="str"),
    command=dict(type="raw"),
    init=dict(type="str", choices=["auto", "systemd", "none"]),
    hostname=dict(type="str"),
    env=dict(type="dict"),
    secret_env=dict(type="dict", no_log=True),
    mounts=dict(type="list", elements="dict", options=MOUNT_OPTIONS),
    capabilities=dict(type="dict", options=CAPABILITY_OPTIONS),
    privileged=dict(type="bool"),
    idmap_isolated=dict(type="bool"),
    limits=dict(type="dict", options=LIMIT_OPTIONS),
    network=dict(type="list", elements="dict", options=NETWORK_OPTIONS),
    autostart=dict(type="bool"),
    runtime=dict(type="str", choices=["runc", "crun"]),
    runtime_path=dict(type="path"),
    recreate=dict(type="bool", default=False),
    stop_timeout=dict(type="int", default=10),
)

BATCH_OPTIONS = dict(
    containers=dict(type="list", elements="dict", required=True, options=CONTAINER_OPTIONS),
    purge=dict(type="bool", default=False),
)


def container_spec():
    """argument_spec of ``ctrhost.fleet.container``."""
    return copy.deepcopy(argument_spec(COMMON_ARGS, CONTAINER_OPTIONS))


def containers_spec():
    """argument_spec of ``ctrhost.fleet.containers``."""
    return copy.deepcopy(argument_spec(COMMON_ARGS, BATCH_OPTIONS))
