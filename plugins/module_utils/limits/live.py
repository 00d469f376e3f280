# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Limits on a running container: read back from the cgroup files (and the
directory-backed keys from their backend), compared with the declared ones, and
moved there without a restart. Every key's files and conversions come from its
record in ``_limits.LIMITS``; ``_cgroups.Cgroup`` only reads and writes files."""

from __future__ import annotations

from ansible_collections.ctrhost.fleet.plugins.module_utils.limits import records as _limits
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.cgroups import Cgroup
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CommandError, LimitError


def mismatches(cgroup, limits, keys=None):
    """[(key, file, expected, actual)] for every cgroup key whose file differs."""
    out = []
    for key in keys or _limits.CGROUP_KEYS:
        limit = _limits.OPTIONS[key]
        controller, name = limit.where(cgroup)
        if key == "io_weight" and not cgroup.has(controller, name) and limits.get(key) is None:
            continue
        want, have = limit.show(cgroup, limits.get(key)), limit.actual(cgroup)
        if want != have:
            out.append((key, cgroup.file(controller, name) or name, want, have))
    return out


def read_limits(cgroup):
    """Effective cgroup limits in the normalised shape (unset keys left out)."""
    out = {}
    for key in _limits.CGROUP_KEYS:
        limit = _limits.OPTIONS[key]
        have = limit.actual(cgroup)
        if have is not None and have != limit.show(cgroup, None):
            out[key] = limit.load(cgroup, have)
    return out


def effective(cgroup, bundle=None):
    """The limits in force: the cgroup's and those kept on the bundle's directories."""
    out = read_limits(cgroup)
    if bundle:
        out.update(_limits.read_dirs(bundle))
    return out


def update_resources(keys, limits, cgroup):
    """The ``runc update --resources -`` document that moves ``keys`` to ``limits``:
    each key's OCI mapping when set, its reset (unlimited, the parent's cpuset, the
    default weight) when not."""
    res = {}
    for key in keys:
        limit = _limits.OPTIONS[key]
        if limit.live != "runtime":
            continue
        if key in limits:
            limit.oci(res, limits[key], limits)
        else:
            limit.reset(res, cgroup, limits)
    return {k: v for k, v in res.items() if v}


def apply_live(runtime, container_id, cgroup, current_limits, new_limits, check_mode=False,
               bundle=None):
    """Move a running container to ``new_limits`` without restarting it.

    Runtime keys go through ``runtime.update(container_id, resources)`` (``runc update
    --resources -``), cgroup keys (the io throttles) straight to their files, directory
    keys to their backend on ``bundle``'s directories. Lowering memory below the
    current usage is prepared with ``Cgroup.lower_memory`` (reclaim or fail cleanly,
    never an OOM kill). Every key is verified afterwards; a mismatch raises LimitError
    naming the file, the expected and the actual value.

    ``cgroup`` is a ``_cgroups.Cgroup`` or a cgroups path. Returns {changed, before,
    after, changes, declared_changes}: before/after are the effective limits (after is
    the prediction in check mode).
    """
    if isinstance(cgroup, str):
        cgroup = Cgroup(cgroup)
    new_limits = dict(new_limits or {})
    before = effective(cgroup, bundle)
    io_weight = _limits.OPTIONS["io_weight"]
    controller, name = io_weight.where(cgroup)
    if "io_weight" in new_limits and not cgroup.has(controller, name):
        raise LimitError("limits.io_weight: this host's cgroup has no %s file (the io weight needs the "
                         "BFQ scheduler or the cgroup v2 io controller)" % name,
                         field="limits.io_weight", file=name)
    pending = [m[0] for m in mismatches(cgroup, new_limits)]
    pending += [k for k in _limits.DIR_KEYS if bundle and before.get(k) != new_limits.get(k)]
    changes = {k: dict(before=before.get(k), after=new_limits.get(k)) for k in pending}
    result = dict(changed=bool(pending), before=before, changes=changes,
                  declared_changes=_limits.diff(current_limits, new_limits))
    if not pending or check_mode:
        result["after"] = before if not pending else _predict(before, new_limits, pending)
        return result
    if "memory" in pending and "memory" in new_limits:
        cgroup.lower_memory(new_limits["memory"])
    for key in pending:  # directory keys first: they refuse what they cannot hold
        if key in _limits.DIR_KEYS:
            _limits.apply_dir(bundle, key, new_limits.get(key))
    runtime_keys = [k for k in pending if _limits.OPTIONS[k].live == "runtime"]
    if runtime_keys:
        resources = update_resources(runtime_keys, new_limits, cgroup)
        try:
            runtime.update(container_id, resources)
        except CommandError as exc:
            raise LimitError("limits: the runtime refused the update of %s: %s"
                             % (", ".join(sorted(runtime_keys)), (exc.stderr or exc.msg).strip()),
                             field="limits", resources=resources, stderr=exc.stderr)
    # runc update re-applies the throttles of the original config on v1: set ours last.
    for key in _limits.CGROUP_KEYS:
        if _limits.OPTIONS[key].live == "cgroup" and mismatches(cgroup, new_limits, [key]):
            _limits.OPTIONS[key].write(cgroup, new_limits.get(key))
    wrong = mismatches(cgroup, new_limits, [k for k in pending if k in _limits.CGROUP_KEYS])
    if wrong:
        key, path, want, have = wrong[0]
        raise LimitError("limits.%s: %s shows %r after the update, expected %r"
                         % (key, path, have, want), field="limits." + key, file=path,
                         expected=want, actual=have,
                         mismatches=[dict(key=k, file=p, expected=w, actual=h) for k, p, w, h in wrong])
    result["after"] = effective(cgroup, bundle)
    return result


def _predict(before, new_limits, keys):
    after = dict(before)
    for key in keys:
        if key in new_limits:
            after[key] = new_limits[key]
        else:
            after.pop(key, None)
    return after
