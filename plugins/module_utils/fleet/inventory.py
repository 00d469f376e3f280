# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Containers of the container hosts as Ansible hosts (the ``containers`` inventory),
controller side: ``host_entries`` turns the hosts' reports (``host/report.py``, run
on each host through its own connection plugin by ``plugins/inventory/containers.py``)
into inventory hosts, their variables and groups. Importable without Ansible.
"""

from __future__ import annotations

import ipaddress
import re

from ansible_collections.ctrhost.fleet.plugins.module_utils.host.report import FIELDS

# Connection variables of a container host that its containers' connection
# (``ctrhost.fleet.container``, through the host's SSH) needs as well. The host's user is
# not ``ansible_user`` there (that would be a user inside the container): the inventory
# plugin resolves it (and whether the host escalates) into the ``HOST_*`` variables.
SSH_VARS = ("ansible_host", "ansible_port", "ansible_ssh_private_key_file",
            "ansible_private_key_file", "ansible_ssh_common_args", "ansible_ssh_extra_args",
            "ansible_ssh_args", "ansible_ssh_executable", "ansible_ssh_pipelining", "ansible_pipelining")
HOST_USER = "ctrhost_container_host_user"
HOST_BECOME = "ctrhost_container_host_become"
CONNECTION = "ctrhost.fleet.container"
_GROUP_SAFE = re.compile(r"[^A-Za-z0-9_]")


def python_of(hostvars):
    """The Python to run on the host: its ``ansible_python_interpreter`` unless that
    asks for discovery."""
    interp = str(hostvars.get("ansible_python_interpreter") or "")
    if not interp or interp.startswith("auto") or "{{" in interp:
        return "python3"
    return interp


def group_name(prefix, kind, value):
    """``<prefix><kind>_<value>`` with characters Ansible rejects in group names as ``_``."""
    return _GROUP_SAFE.sub("_", "%s%s_%s" % (prefix, kind, value))


def addresses(interfaces):
    """(ipv4 list, ipv6 list) of plain addresses, in interface order."""
    v4, v6 = [], []
    for nic in interfaces:
        for key, bucket in (("ipv4", v4), ("ipv6", v6)):
            if nic.get(key):
                bucket.append(str(ipaddress.ip_interface(nic[key]).ip))
    return v4, v6


def host_entries(reports, hostvars, prefix="ctrhost_", name_format="{name}", states=None,
                 connection=CONNECTION):
    """Inventory hosts from ``reports`` ({container host: report}).

    Returns ``[(inventory name, vars, [groups])]`` sorted by name. ``hostvars`` are
    the container hosts' variables (for the connection ones). ``states`` keeps only
    containers in those states. A name seen on two hosts keeps the running copy (a
    container is only ever running on one host)."""
    chosen = {}
    for host in sorted(reports):
        for ctr in reports[host].get("containers", []):
            if states and ctr.get("state") not in states:
                continue
            inv_name = name_format.format(name=ctr["name"], host=host)
            other = chosen.get(inv_name)
            if other is not None and (other[1].get("state") == "running"
                                      or ctr.get("state") != "running"):
                continue
            chosen[inv_name] = (host, ctr)
    out = []
    for inv_name in sorted(chosen):
        host, ctr = chosen[inv_name]
        v4, v6 = addresses(ctr.get("interfaces") or [])
        hv = {k: v for k, v in (hostvars.get(host) or {}).items() if k in SSH_VARS + (HOST_USER, HOST_BECOME)}
        hv.setdefault("ansible_host", host)
        if connection:
            hv["ansible_connection"] = connection
        hv.update({prefix + "container_" + key: ctr.get(key) for key in FIELDS})
        hv.update({prefix + "container_name": ctr["name"], prefix + "container_host": host,
                   prefix + "container_interfaces": ctr.get("interfaces") or [],
                   prefix + "container_ipv4": v4, prefix + "container_ipv6": v6,
                   prefix + "root": reports[host].get("root")})
        groups = [prefix + "containers", group_name(prefix, "host", host),
                  group_name(prefix, "state", ctr.get("state") or "unknown")]
        if ctr.get("template"):
            groups.append(group_name(prefix, "template", ctr["template"]))
        out.append((inv_name, hv, groups))
    return out
