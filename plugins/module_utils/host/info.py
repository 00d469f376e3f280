# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The result of ``host_info``: capacity, commitments, kernel, cgroups, runtimes, CRIU, state."""

from __future__ import annotations

import json
import os

from ansible_collections.ctrhost.fleet.plugins.module_utils.limits import records as _limits
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import idmap as _idmap
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import idranges as _idranges
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import peruser as _peruser
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import sysinfo as _sysinfo
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import probe as _probe
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import timens as _timens
from ansible_collections.ctrhost.fleet.plugins.module_utils.criu.tool import criu_for
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.host.state import host_state


# What `gather` can name; `all` is every part, `min` the ones that run no command.
PARTS = ("cpu", "memory", "kernel", "cgroup", "overlayfs", "limits", "runtimes", "criu", "criu_check",
         "criu_features", "host_state", "committed", "kernel_limits")
MIN_PARTS = ("cpu", "memory", "kernel", "cgroup", "overlayfs", "limits", "host_state", "committed",
             "kernel_limits")
GATHER_CHOICES = ("all", "min") + PARTS + tuple("!" + part for part in PARTS)


def resolve_gather(gather):
    """Names from ``gather`` (``all``, ``min``, parts, ``!part``) -> set of parts.

    Only negations (e.g. ``['!criu_check']``) start from ``all``.
    """
    items = list(gather or ["all"])
    for item in items:
        if item not in GATHER_CHOICES:
            raise ValidationError("gather", "expected items of %s, got %r" % (", ".join(GATHER_CHOICES), item))
    chosen = set(PARTS) if all(item.startswith("!") for item in items) else set()
    for item in items:
        if item == "all":
            chosen |= set(PARTS)
        elif item == "min":
            chosen |= set(MIN_PARTS)
        elif item.startswith("!"):
            chosen.discard(item[1:])
        else:
            chosen.add(item)
    return chosen


def _limit(value, field, integer):
    """A declared limit as a number; None when unset; ValueError naming what was expected."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("%s: expected a number, got %r" % (field, value))
    if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
        value = float(value) if "." in value else int(value)
    if not isinstance(value, (int, float)) or value < 0:
        raise ValueError("%s: expected %s, got %r" % (
            field, "bytes as a non-negative integer" if integer else "a non-negative number", value))
    return int(value) if integer else float(value)


def committed(layout):
    """Sums of the limits declared in containers/*/spec.json, and warnings for unreadable specs."""
    total = dict(memory=0, cpus=0.0, containers=0, without_memory_limit=0, without_cpus_limit=0)
    warnings = []
    try:
        names = sorted(os.listdir(layout.containers_dir))
    except FileNotFoundError:
        names = []
    for name in names:
        path = layout.container_file(name, "spec.json")
        if not os.path.isfile(path):
            continue
        total["containers"] += 1
        try:
            with open(path, encoding="utf-8") as handle:
                spec = json.load(handle)
            limits = spec.get("limits") or {}
            if not isinstance(limits, dict):
                raise ValueError("limits: expected a mapping, got %r" % (limits,))
            memory = _limit(limits.get("memory"), "limits.memory", True)
            cpus = _limit(limits.get("cpus"), "limits.cpus", False)
        except (OSError, ValueError, AttributeError) as exc:
            warnings.append("%s: %s; its limits are not counted" % (path, exc))
            total["without_memory_limit"] += 1
            total["without_cpus_limit"] += 1
            continue
        if memory is None:
            total["without_memory_limit"] += 1
        else:
            total["memory"] += memory
        if cpus is None:
            total["without_cpus_limit"] += 1
        else:
            total["cpus"] += cpus
    total["cpus"] = round(total["cpus"], 6)
    return total, warnings


def overlayfs(base="/"):
    """Whether overlay mounts will work: registered now, or an installed module (not loaded here)."""
    if "overlay" in _sysinfo.filesystems(base):
        return dict(supported=True, source="registered")
    if _sysinfo.kernel_module_available("overlay", base):
        return dict(supported=True, source="module")
    return dict(supported=False, source=None)


def cgroup_summary(layout):
    return dict(
        mode=layout["mode"], version=layout["version"],
        controllers=sorted(layout["controllers"]),
        mounts={name: info["mount"] for name, info in sorted(layout["controllers"].items())},
        v2_mount=layout["v2_mount"], v2_controllers=layout["v2_controllers"],
    )


def runtimes(cgroup, paths=None):
    result = {}
    for name in _probe.RUNTIMES:
        info = _probe.runtime_info(name, (paths or {}).get(name))
        usable, reason = _probe.runtime_usable(name, info, cgroup)
        entry = dict(path=info.get("path"), version=info.get("version"), usable=usable, reason=reason)
        if info.get("path") and info.get("version"):
            entry.update(commit=info.get("commit"), spec=info.get("spec"))
            if name == "crun":
                entry["checkpoint"] = "CRIU" in info.get("build_features", [])
        result[name] = entry
    return result


def criu(parts, path=None, base="/", layout=None):
    tool = criu_for(layout or Layout(), path)
    found = tool.found
    result = dict(path=found, version=tool.version if found else None)
    if "criu_check" in parts:
        if found:
            passed, output = tool.check()
        else:
            passed, output = False, "criu not found on this host"
        result.update(check_passed=passed, check_output=output)
    if "criu_features" in parts and found:
        result.update(tool.host_features(base, probe=base in ("/", "", None)))
        usable, reason = _timens.continuity(result["features"].get("timens"),
                                            _sysinfo.host_path(base, "/proc"))
        result["features"]["clock_continuity"] = usable
        result["clock_continuity_reason"] = reason
        if base in ("/", "", None):  # this process's mount table is the host's
            kept, why = tool.kdat_cache()
            result["features"]["kdat_cache"] = kept
            result["kdat_cache_reason"] = why
    return result


def kernel_limits(layout, base="/"):
    """The per-user and host-wide limits many containers hit (``linux/peruser.py``): values,
    what this host's memory calls for, and the key quota of the roots of unprivileged
    containers (the shared range's, the first range of root in ``/etc/subuid``, then those
    of this host's containers with an isolated range) with its headroom."""
    subuid = _sysinfo.read_text(_sysinfo.host_path(base, _idmap.SUBUID), "")
    roots = [start for start, count in _idmap.parse_subids(subuid) if count >= _idmap.SIZE][:1]
    roots += sorted(m["uid"] for m in _idranges.taken(layout.containers_dir).values() if m.get("isolated"))
    return _peruser.report(roots, _sysinfo.meminfo(base)["total"], base)


def gather(root=None, gather=None, base="/", runtime_paths=None, criu_path=None):
    """The ``host_info`` result (without ``changed``) for the host below ``base``."""
    parts = resolve_gather(gather)
    layout = Layout(root)
    result = dict(gathered=sorted(parts), root=layout.root)
    warnings = []
    if "cpu" in parts:
        result.update(cpus=_sysinfo.cpu_count(base), cpus_online=_sysinfo.online_cpu_count(base))
    if "memory" in parts:
        mem = _sysinfo.meminfo(base)
        result.update(memory_total=mem["total"], memory_available=mem["available"],
                      swap_total=mem["swap_total"])
    if "kernel" in parts:
        result["kernel"] = _sysinfo.kernel_release(base)
        result["kernels_installed"] = _sysinfo.installed_kernels(base)
    layout_info = None
    if parts & {"cgroup", "runtimes"}:
        layout_info = _sysinfo.cgroup_layout(base)
    if "cgroup" in parts:
        result["cgroup"] = cgroup_summary(layout_info)
    if "overlayfs" in parts:
        result["overlayfs"] = overlayfs(base)
    if "limits" in parts:  # the limits kept on the containers' directories, under the root
        result["limits"] = _limits.availability(layout.root)
    if "runtimes" in parts:
        result["runtimes"] = runtimes(layout_info, runtime_paths)
    if parts & {"criu", "criu_check", "criu_features"}:
        result["criu"] = criu(parts, criu_path, base, layout)
    if "host_state" in parts:
        result["host_state"], detail = host_state(layout)
        result["host_state_detail"] = detail
    if "kernel_limits" in parts:
        result["kernel_limits"] = kernel_limits(layout, base)
    if "committed" in parts:
        result["committed"], spec_warnings = committed(layout)
        result["container_count"] = result["committed"]["containers"]
        warnings.extend(spec_warnings)
    if warnings:
        result["warnings"] = warnings
    return result


def task(params, check_mode=False):
    """The ``host_info`` module's entry."""
    return dict(gather(root=params["root"], gather=params["gather"]), changed=False)
