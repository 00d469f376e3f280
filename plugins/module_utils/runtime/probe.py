# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The OCI runtimes a host may use (``RUNTIMES``), probed: found, its version and build
features (``runtime_info``, cached per binary), and whether it can run on this host's
cgroup layout (``runtime_usable``, with the reason when not)."""

from __future__ import annotations

import re

from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CommandError, MissingToolError
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import sysinfo as _sysinfo

RUNTIMES = ("runc", "crun")


def parse_version(text):
    """Leading ``X.Y[.Z]`` of a version string as a tuple of ints, or None."""
    match = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", (text or "").strip())
    if not match:
        return None
    return tuple(int(part or 0) for part in match.groups())


def parse_runtime_version(text):
    """Output of ``runc --version`` / ``crun --version``."""
    info = dict(version=None, commit=None, spec=None, build_features=[])
    for line in (text or "").splitlines():
        line = line.strip()
        match = re.match(r"^\S+ version (\S+)", line)
        if match and info["version"] is None:
            info["version"] = match.group(1)
        elif line.startswith(("commit:", "spec:")):
            key, value = line.split(":", 1)
            info[key] = value.strip()
        elif re.match(r"^[+-][A-Z0-9_]+(\s|$)", line):
            info["build_features"] = [flag[1:] for flag in line.split() if flag.startswith("+")]
    return info


def runtime_info(name, path=None):
    """{path, version, commit, spec, build_features, error} of runtime ``name``."""
    found = _cli.which(path or name)
    if not found:
        return dict(path=None, version=None, error="%s not found on this host" % (path or name))
    return _sysinfo.cached(("runtime", found), lambda: _runtime_version(found))


def _runtime_version(path):
    try:
        result = _cli.run([path, "--version"], check=True, timeout=15)
    except (CommandError, MissingToolError) as exc:
        return dict(path=path, version=None, error=exc.msg)
    info = parse_runtime_version(result.stdout)
    info.update(path=path, error=None if info["version"] else "no version in %r" % result.stdout[:200])
    return info


def runtime_usable(name, info, cgroup):
    """(usable, reason) of runtime ``name`` on a host with ``cgroup`` (cgroup_layout())."""
    if not info.get("path"):
        return False, info.get("error") or "%s not found on this host" % name
    if not info.get("version"):
        return False, "%s does not run: %s" % (name, info.get("error"))
    if cgroup["mode"] == "none":
        return False, "no cgroup hierarchy is mounted"
    if name == "crun" and cgroup["mode"] == "hybrid" and cgroup["v2_controllers"]:
        return False, ("crun refuses a hybrid cgroup layout whose cgroup2 hierarchy (%s) has "
                       "controllers (%s): 'cgroups in hybrid mode not supported'"
                       % (cgroup["v2_mount"], ", ".join(cgroup["v2_controllers"])))
    if name == "runc" and cgroup["mode"] == "v2" and (parse_version(info["version"]) or (0,)) < (1, 0):
        return False, "runc %s predates cgroup v2 support (1.0)" % info["version"]
    return True, None
