# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The container_limits task: merge, validate, apply live (same pid), persist."""

from __future__ import annotations

import os

from ansible_collections.ctrhost.fleet.plugins.module_utils.limits import live as _limitlive
from ansible_collections.ctrhost.fleet.plugins.module_utils.limits import records as _limits
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.cgroups import Cgroup
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import (
    LimitError,
    NotFoundError,
    ValidationError,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime.driver import runtime_for
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.store import ContainerStore
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.validate import validate_name

LIVE_STATES = ("running", "paused", "created")


def merge(stored, raw, replace=False):
    """Stored normalised limits updated with the user's ``raw`` ones; a key set to
    null is removed. ``replace`` makes ``raw`` the whole set."""
    if raw is None:
        raise ValidationError("limits", "expected a dict of limits")
    if not isinstance(raw, dict):
        raise ValidationError("limits", "expected a dict of limits, got %r" % (raw,))
    merged = {} if replace else dict(stored or {})
    for key, value in raw.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    unknown = sorted(k for k in raw if k not in _limits.OPTIONS)
    if unknown:  # named even when null
        raise ValidationError("limits." + unknown[0], "unknown limit; valid keys: %s"
                              % ", ".join(_limits.KEYS))
    return merged


def adjust(params, check_mode=False, host=None, cgroup_base=None):
    """Change the limits of one container; live when it runs. Returns the module result."""
    name = validate_name(params.get("name"))
    layout = Layout(params.get("root"), params.get("run_dir"))
    store = ContainerStore(layout)
    host = host or _limits.host_facts(layout.root)
    with store.lock(name):
        spec = store.load(name)
        if spec is None:
            raise NotFoundError("name: container %s does not exist under %s" % (name, layout.root),
                                field="name")
        stored = spec.get("limits") or {}
        new = _limits.normalize_for(host, merge(stored, params.get("limits"), params.get("replace")))
        runtime_name = params.get("runtime") or spec.get("runtime") or "runc"
        runtime = runtime_for(layout, runtime_name, params.get("runtime_path"))
        if not spec.get("cgroups_path"):
            raise NotFoundError("name: the spec of %s has no cgroups_path" % name, field="name")
        cgroup = Cgroup(spec["cgroups_path"], **({"base": cgroup_base} if cgroup_base else {}))
        state = runtime.state(name)
        live = bool(state) and state.get("status") in LIVE_STATES and cgroup.exists()
        result = dict(name=name, running=live, pid=state.get("pid") if live else None,
                      before=stored, after=new, changes=_limits.diff(stored, new))
        changed = stored != new
        if live:
            applied = _limitlive.apply_live(runtime, name, cgroup, stored, new, check_mode,
                                            bundle=layout.container_dir(name))
            changed = changed or applied["changed"]
            result.update(effective_before=applied["before"], effective=applied["after"],
                          live_changes=applied["changes"])
            after_state = runtime.state(name) if not check_mode else state
            if not after_state or after_state.get("pid") != state.get("pid"):
                raise LimitError("name: the init pid of %s changed during the update (%s -> %s)"
                                 % (name, state.get("pid"), (after_state or {}).get("pid")),
                                 field="name")
        if os.path.exists(layout.container_file(name, "config.json")):
            changed = _limits.persist(layout.container_dir(name), new, check_mode) or changed
        if stored != new and not check_mode:
            spec["limits"] = new
            store.save(name, spec)
        result["usage"] = cgroup.usage() if live else None
    result.update(changed=changed, diff=dict(before=dict(limits=stored), after=dict(limits=new)))
    return result
