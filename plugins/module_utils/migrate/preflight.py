# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The migration agent's ``preflight``: can this host take the container?"""

from __future__ import annotations

import os
import shutil
import socket

from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import leftovers as _leftovers
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import addrguard as _addrguard
from ansible_collections.ctrhost.fleet.plugins.module_utils.criu import reports as _criu
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import idmap as _idmap
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import idranges as _idranges
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import peruser as _peruser
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import sysinfo as _sysinfo
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import probe as _probe
from ansible_collections.ctrhost.fleet.plugins.module_utils.template import lifecycle as _template
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import MissingToolError
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout

# CRIU's lazy restore opens userfaultfd in the restored tasks, inside the container's
# user namespace: the kernel allows it there only with this sysctl (host-wide) set.
LAZY_UNPRIVILEGED = ("an unprivileged container's restored tasks open userfaultfd inside its "
                     "user namespace, which vm.unprivileged_userfaultfd=0 forbids here "
                     "(vm.unprivileged_userfaultfd: 1 in the host role's ctrhost_sysctls allows it)")


def check(req):
    """The agent's ``preflight`` request: what stops this host from taking the container
    (``problems``) and its facts."""
    layout = Layout(req.get("root"))
    name, meta = req["name"], req["meta"]
    spec = meta["spec"]
    problems, facts = [], {}
    problems += _template_problems(layout, spec, meta)
    problems += _idmap_problems(spec, name)
    problems += _range_problems(layout, spec, name)
    problems += _tool_problems(spec, req, facts)
    problems += _capacity_problems(spec, req, facts)
    facts["cleaned"] = _leftovers.clean_stale(layout, name, req.get("runtime_path"), problems)
    facts["agent_dirs_removed"] = _leftovers.clean_agent_dirs()
    if os.path.exists(layout.container_dir(name)) and facts["cleaned"] is not None:
        problems.append("a container named %s exists here (%s)"
                        % (name, layout.container_dir(name)))
    if os.path.lexists(Layout.netns_path(name)):
        problems.append("network namespace %s exists here" % Layout.netns_path(name))
    # its current host answers for it on a routed fleet's uplink: only the bridges are probed
    problems += _addrguard.problems(layout, name, spec.get("network") or [],
                                    own_macs=[i.get("mac") for i in spec.get("network") or []],
                                    fleet=False)
    problems += _disk_problems(layout, req, facts)
    facts["lazy_port"] = free_port()
    return dict(ok=not problems, problems=problems, facts=facts)


def _template_problems(layout, spec, meta):
    local = _template.read_meta(layout, spec["template"])
    if local is None:
        return ["template %r is not installed" % spec["template"]]
    if meta.get("template_sha256") and local.get("sha256") != meta["template_sha256"]:
        return ["template %r has sha256 %s, the container runs on %s"
                % (spec["template"], local.get("sha256"), meta["template_sha256"])]
    return []


def _idmap_problems(spec, name=""):
    """An unprivileged container needs the fleet's id range here (its files' owners), and
    its root room in the key quota (``kernel.keys.maxkeys``)."""
    idmap = _idmap.of(spec)
    missing = _idmap.missing_on_host(idmap) if idmap else []
    if missing:
        return ["the container is unprivileged (its ids map to %d-%d) but %s"
                % (idmap["uid"], idmap["uid"] + idmap["size"] - 1, "; ".join(missing))]
    # its runtime joins a session keyring here, counted to the container's root
    full = _peruser.refusal(_peruser.key_room(idmap["uid"] if idmap else 0), name)
    return [full] if full else []


def _range_problems(layout, spec, name):
    """An isolated id range must be free here: no other container of this host may hold
    any of its ids (the range goes with the container, never changes on a move)."""
    idmap = _idmap.of(spec)
    holders = _idranges.held_by(idmap, layout.containers_dir, but=name)
    if not holders:
        return []
    return ["its isolated id range (idmap_isolated) %d-%d is held here by container %s: choose "
            "another destination" % (idmap["uid"], idmap["uid"] + idmap["size"] - 1, ", ".join(holders))]


def _tool_problems(spec, req, facts):
    """The runtime and CRIU here: usable, and what they can do (into ``facts``)."""
    problems = []
    runtime = _probe.runtime_info(spec.get("runtime") or "runc", req.get("runtime_path"))
    usable, why = _probe.runtime_usable(spec.get("runtime") or "runc", runtime,
                                        _sysinfo.cgroup_layout())
    facts["runtime"] = runtime.get("version")
    if not usable:
        problems.append("runtime: %s" % why)
    try:
        criu = _criu.discover(req.get("criu_path"))
        facts.update(criu_version=criu["version"], lazy_pages=criu["lazy_pages"],
                     lazy_pages_reason=criu["lazy_pages_reason"], pre_dump=criu["pre_dump"])
        if criu["lazy_pages"] and _idmap.of(spec) and not _sysinfo.unprivileged_userfaultfd():
            facts.update(lazy_pages=False, lazy_pages_reason=LAZY_UNPRIVILEGED)
        if not criu["check"]:
            problems.append("criu %s fails 'criu check': %s" % (criu["version"],
                                                                criu["check_output"]))
    except MissingToolError as exc:
        problems.append(exc.msg)
    return problems


def _capacity_problems(spec, req, facts):
    """Memory and cpus here against what the container needs (into ``facts``)."""
    problems = []
    mem = _sysinfo.meminfo()
    facts.update(mem_available=mem["available"], cpus=_sysinfo.cpu_count(),
                 hostname=os.uname().nodename)
    if req.get("memory_needed") and mem["available"] < req["memory_needed"]:
        problems.append("%d bytes of memory available, the container needs %d"
                        % (mem["available"], req["memory_needed"]))
    cpus = (spec.get("limits") or {}).get("cpus")
    if cpus and float(cpus) > facts["cpus"]:
        problems.append("the container's cpus limit %s exceeds this host's %d cpus"
                        % (cpus, facts["cpus"]))
    return problems


def _disk_problems(layout, req, facts):
    disk = shutil.disk_usage(_existing_parent(layout.root))
    facts["disk_free"] = disk.free
    if req.get("disk_needed") and disk.free < req["disk_needed"]:
        return ["%d bytes free under %s, the move needs about %d"
                % (disk.free, layout.root, req["disk_needed"])]
    return []


def _existing_parent(path):
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def free_port():
    """A free TCP port on the loopback (a lazy migration's page server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
