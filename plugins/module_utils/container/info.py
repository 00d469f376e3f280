# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``container_info``: what the containers of a host are and what they use.

Read-only. Each container is one flat-ish dict (a list of them is easy to
filter with ``json_query``): state from the runtime plus the freezer, pid,
template, declared limits (spec.json) and effective limits (cgroup files),
usage (memory current and peak, cpu time, pids), rootfs, created time and,
when the netlink library is there, the interfaces read back from the netns.
"""

from __future__ import annotations

import contextlib
import os

from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import oci as _ocifile
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import netns as _netns
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import system as _sysctr
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import timens as _timens
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.spec import STORED_DEFAULTS, mask
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import (
    CtrhostError,
    MissingToolError,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime.driver import runtime_for
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.store import ContainerStore
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.rootfs import is_mounted
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.validate import validate_name


# -- calls into the cgroup and netlink libraries (one place each) --------------
def cgroup_facts(cgroups_path, bundle=None):
    """(freezer state, effective limits, usage) of a cgroup (limits kept on the
    ``bundle``'s directories included); Nones when it is gone."""
    from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.cgroups import Cgroup
    from ansible_collections.ctrhost.fleet.plugins.module_utils.limits.live import effective

    group = Cgroup(cgroups_path)
    if not group.exists():
        return None, None, None
    return group.freezer_state(), effective(group, bundle), group.usage()


def network_facts(name, netns_path):
    try:
        from ansible_collections.ctrhost.fleet.plugins.module_utils.net import links as _netlink
    except ImportError:  # pragma: no cover - depends on the installed library
        return None
    return _netlink.info(name, netns_path)


# ------------------------------------------------------------------------------
def runtime_of(layout, name, runtime_path=None, cache=None):
    """The runtime ``name`` (one per name in ``cache``); ``runtime_path`` is documented as
    the runc binary's, so other runtimes are searched for."""
    cache = {} if cache is None else cache
    if name not in cache:
        cache[name] = runtime_for(layout, name, runtime_path if name == "runc" else None)
    return cache[name]


def state_of(runtime_state, freezer):
    """One word: running, frozen, stopped, created (runtime state + freezer)."""
    if runtime_state is None:
        return "stopped"
    status = runtime_state.get("status")
    if status == "paused" or (status == "running" and freezer == "frozen"):
        return "frozen"
    return status


def container_info(layout, name, spec, runtimes=None, runtime_path=None, network=True):
    """The info dict of container ``name`` whose stored spec is ``spec``."""
    rname = spec.get("runtime") or "runc"
    rt_state, error = None, None
    try:
        rt_state = runtime_of(layout, rname, runtime_path, runtimes).state(name)
    except (MissingToolError, CtrhostError) as exc:
        error = exc.msg
    cgroups = spec.get("cgroups_path") or _ocifile.cgroups_path(name)
    freezer, effective, usage = cgroup_facts(cgroups, layout.container_dir(name))
    state = state_of(rt_state, freezer)
    pid = rt_state.get("pid") if rt_state and state != "stopped" else None
    bundle = layout.container_dir(name)
    rootfs = os.path.join(bundle, "rootfs")
    out = dict(
        name=name, state=state, running=state in ("running", "frozen"), pid=pid or None,
        clock=_timens.clock(pid),
        template=spec.get("template"), template_sha256=spec.get("template_sha256"),
        runtime=rname, command=spec.get("command"), hostname=spec.get("hostname"),
        init=spec.get("init") or "auto", system=_sysctr.is_system(spec),
        env=spec.get("env") or {}, secret_env=mask(spec.get("secret_env")), mounts=spec.get("mounts") or [],
        capabilities=spec.get("capabilities") or {}, autostart=bool(spec.get("autostart")),
        privileged=spec.get("privileged", STORED_DEFAULTS["privileged"]), idmap=spec.get("idmap") or None,
        created=spec.get("created"), started=(rt_state or {}).get("created") if pid else None,
        bundle=bundle, rootfs=rootfs, rootfs_mounted=is_mounted(rootfs),
        cgroups_path=cgroups, freezer=freezer,
        limits=spec.get("limits") or {}, effective_limits=effective or {},
        usage=usage or {}, netns=_netns.path(name), netns_exists=_netns.exists(name),
        network_declared=spec.get("network") or [],
        incoming=spec.get("incoming"),  # a migration's uncommitted staging: {from, since, agent}
    )
    if network and out["netns_exists"]:
        with contextlib.suppress(CtrhostError, OSError):
            out["network"] = network_facts(name, out["netns"])
    if error:
        out["error"] = error
    return out


def gather(root, names=None, runtime_path=None, network=True):
    """``{changed: False, containers: [...]}`` for every (or each named) container."""
    layout = Layout(root)
    store = ContainerStore(layout)
    if names:
        for i, name in enumerate(names):
            validate_name(name, "name[%d]" % i if len(names) > 1 else "name")
        wanted = list(dict.fromkeys(names))
    else:
        wanted = store.names()
    runtimes = {}
    containers, missing = [], []
    for name in wanted:
        spec = store.load(name)
        if spec is None:
            missing.append(name)
            continue
        containers.append(container_info(layout, name, spec, runtimes, runtime_path, network))
    return dict(changed=False, containers=containers, missing=missing,
                count=len(containers))


def task(params, check_mode=False):
    """The ``container_info`` module's entry."""
    return gather(params["root"], names=params["name"], runtime_path=params["runtime_path"],
                  network=params["network"])
