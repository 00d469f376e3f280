# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Container lifecycle: present / started / stopped / frozen / restarted / absent.

``ensure(params, check_mode)`` validates everything first (nothing is written
on a validation failure), then, holding the container's lock, moves the
container to the requested state:

* create: container dir, overlay rootfs, netns, network, config.json,
  spec.json, then runtime create + start when it should run;
* limits, network and autostart change live (same pid);
* template, command, hostname, env, mounts, capabilities, privileged and runtime
  need a re-create: refused (fields listed) unless ``recreate`` is true;
* stop keeps the bundle (spec, config, upper layer, netns) and unmounts the
  rootfs; absent removes process, mount, cgroups, netns, network and files.

Check mode runs the same plan with the side effects skipped: the result has
the same ``changed`` and lists the commands that would run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time

from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import oci as _ocifile
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import addrguard as _addrguard
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import spec as _ctrspec
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import idmap as _idmap
from ansible_collections.ctrhost.fleet.plugins.module_utils.limits import live as _limitlive
from ansible_collections.ctrhost.fleet.plugins.module_utils.limits import records as _limits
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import netns as _netns
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import portfilter as _portfilter
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import system as _sysctr
from ansible_collections.ctrhost.fleet.plugins.module_utils.criu import config as _criuconf
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.cli import Recorder
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.args import STATES
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.steps import (
    network_attach,
    network_remove,
    network_update,
    start,
    status_of,
    stop,
    write_config,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import (
    ConflictError,
    MissingToolError,
    ValidationError,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime.driver import runtime_for
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.store import ContainerStore, private_dir
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.rootfs import Overlay

# The run state each requested state ends in (check mode reports it).
EXPECTED = {"started": "running", "restarted": "running", "frozen": "frozen", "stopped": "stopped"}


# -- calls into the cgroup and limit libraries (one place each) -----------------
def cgroup_remove(cgroups_path):
    from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.cgroups import Cgroup

    Cgroup(cgroups_path).remove()


def limits_apply_live(runtime, name, cgroups_path, old, new, check_mode, bundle=None):
    result = _limitlive.apply_live(runtime, name, cgroups_path, old, new, check_mode, bundle)
    if check_mode and result.get("changed"):
        runtime.record(runtime.base_cmd() + ["update", "--resources", "-", name])
    return result


# -- helpers -----------------------------------------------------------------
class Ctx:
    """What one call works on."""

    def __init__(self, params, check_mode):
        self.layout = Layout(params.get("root"), params.get("run_dir"))
        self.name = params["name"]
        self.store = ContainerStore(self.layout)
        self.recorder = Recorder()
        self.warnings = []
        self.check_mode = check_mode
        self.runtime_path = params.get("runtime_path")
        self.stop_timeout = params.get("stop_timeout")
        if self.stop_timeout is None:
            self.stop_timeout = 10
        if not isinstance(self.stop_timeout, int) or self.stop_timeout < 0:
            raise ValidationError("stop_timeout", "expected seconds >= 0, got %r" % (self.stop_timeout,))
        self.bundle = self.layout.container_dir(self.name)
        # (state, pid) as this call last saw or made it; None: ask the runtime.
        self.known = None

    def runtime(self, name):
        return runtime_for(self.layout, name, self.runtime_path, recorder=self.recorder,
                           dry_run=self.check_mode)

    def overlay(self, template, idmap=None):
        return Overlay(self.layout, self.name, template, recorder=self.recorder,
                       dry_run=self.check_mode, idmap=idmap)


def remove(ctx, stored):
    """Remove everything of the container; return True if anything existed."""
    found = False
    runtimes = {(stored or {}).get("runtime") or "runc", "runc"}
    for rname in sorted(runtimes):
        rt = ctx.runtime(rname)
        try:
            st = rt.state(ctx.name)
        except MissingToolError:
            continue
        if st is not None:
            found = True
            if st["status"] == "paused":
                rt.resume(ctx.name)
            rt.delete(ctx.name, force=True)
        rt.forget(ctx.name)
    overlay = ctx.overlay((stored or {}).get("template") or "-", _idmap.of(stored))
    if overlay.is_mounted():
        found = True
    overlay.umount()
    if _netns.exists(ctx.name) or any(os.path.lexists(p) for p in (
            _netns.path(ctx.name), Layout.userns_path(ctx.name), Layout.timens_path(ctx.name))):
        found = True
        if not ctx.check_mode:
            network_remove(ctx.name, (stored or {}).get("network"))
    if os.path.exists(ctx.bundle):
        found = True
        if not ctx.check_mode:
            _limits.release(ctx.bundle)
            overlay.remove()
            shutil.rmtree(ctx.bundle)
    if not ctx.check_mode:
        cgroup_remove((stored or {}).get("cgroups_path") or _ocifile.cgroups_path(ctx.name))
        # what a restore here left: its CRIU configuration, and the checkpoints directory
        # when it holds no checkpoint (kept checkpoints stay, a later restore needs them)
        _criuconf.remove_container_config(ctx.layout.run_dir, ctx.name)
        with contextlib.suppress(OSError):
            os.rmdir(ctx.layout.checkpoint_dir(ctx.name))
    return found


def describe(ctx, spec, fallback_state=None):
    """The ``container`` result entry."""
    if spec is None:
        return dict(name=ctx.name, state="absent", pid=None)
    if ctx.known is not None:
        state, pid = ctx.known
    else:
        state, st = status_of(ctx.runtime(spec["runtime"]), ctx.name)
        pid = st.get("pid") if st and state != "stopped" else None
    if ctx.check_mode and fallback_state and fallback_state != state:
        state, pid = fallback_state, None  # what the real run would give; pid not known yet
    return dict(name=ctx.name, state=state, pid=pid or None, template=spec["template"],
                runtime=spec["runtime"], hostname=spec["hostname"], command=spec["command"],
                init=spec.get("init", "auto"), system=_sysctr.is_system(spec),
                limits=spec["limits"], network=spec["network"], autostart=spec["autostart"],
                privileged=spec.get("privileged", _ctrspec.STORED_DEFAULTS["privileged"]),
                idmap=_idmap.of(spec),
                created=spec.get("created"), cgroups_path=spec.get("cgroups_path"),
                bundle=ctx.bundle, rootfs=os.path.join(ctx.bundle, "rootfs"),
                netns=_netns.path(ctx.name))


# -- the entry point ---------------------------------------------------------
def validate(params, check_mode=False):
    """Check ``params`` (container module options) and write nothing; return (ctx, state).
    Raises ValidationError/NotFoundError naming the field."""
    state = params.get("state") or "started"
    if state not in STATES:
        raise ValidationError("state", "expected one of %s, got %r" % (", ".join(STATES), state))
    _ctrspec.validate_name(params.get("name"), "name")
    ctx = Ctx(params, check_mode)
    if state != "absent":
        _ctrspec.normalize(ctx.layout, ctx.name, params, ctx.store.load(ctx.name))
    return ctx, state


def ensure(params, check_mode=False, locked=False):
    """Converge container ``params['name']`` to ``params['state']``; return the result.
    ``locked``: the caller holds the container's lock (a migration removing its source)."""
    ctx, state = validate(params, check_mode)  # before the lock: a bad input leaves nothing
    with contextlib.nullcontext() if locked else \
            ctx.store.lock(ctx.name, remove=lambda: not os.path.isdir(ctx.bundle)):
        stored = ctx.store.load(ctx.name)
        before = _ctrspec.declared(stored) if stored else {}
        if state == "absent":
            changed = remove(ctx, stored)
            return _result(ctx, changed, before, {}, None)
        spec = _ctrspec.normalize(ctx.layout, ctx.name, params, stored)
        _addrguard.check_change(ctx.layout, ctx.name, (stored or {}).get("network"), spec["network"],
                                stored is None)
        if stored is None:
            changed, final = True, _create(ctx, spec, state)
        else:
            changed, final = _converge(ctx, stored, spec, state, params)
        expected = EXPECTED.get(state, "stopped" if stored is None else None)
        return _result(ctx, changed, before, _ctrspec.declared(final, stored), final, expected)


def _result(ctx, changed, before, after, spec, expected=None):
    result = dict(changed=changed, commands=ctx.recorder.commands,
                  container=describe(ctx, spec, expected))
    if ctx.warnings:
        result["warnings"] = ctx.warnings
    if changed:
        result["diff"] = dict(before=before, after=after)
    return result


def _create(ctx, spec, state):
    meta = _ctrspec.template_meta(ctx.layout, spec["template"])
    spec = dict(spec, template_sha256=meta.get("sha256"), cgroups_path=_ocifile.cgroups_path(ctx.name),
                created=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()))
    rt = ctx.runtime(spec["runtime"])
    rt.check_usable()
    idmap = _idmap.of(spec)
    if idmap:
        check_reachable(ctx.layout.containers_dir, idmap)
    overlay = ctx.overlay(spec["template"], idmap)
    try:
        if not ctx.check_mode:
            private_dir(ctx.bundle, (idmap or {}).get("gid"))
            for path in (overlay.upper, overlay.work, overlay.rootfs):
                os.makedirs(path, mode=0o755, exist_ok=True)
            if not idmap:  # an unprivileged one gets its netns at each start (_nethook)
                network_attach(ctx.name, _netns.ensure(ctx.name), spec["network"])
        write_config(ctx, spec)
        if not ctx.check_mode:
            ctx.store.save(ctx.name, spec)
        ctx.known = ("stopped", None)
        if state in ("started", "restarted", "frozen"):
            start(ctx, spec, rt, "stopped", configured=True)
            if state == "frozen":
                _pause(ctx, rt)
    except Exception:
        if not ctx.check_mode:
            with contextlib.suppress(Exception):  # keep the original error
                remove(ctx, spec)
        raise
    return spec


def _converge(ctx, stored, spec, state, params):
    """Existing container: live changes, re-create if allowed, then the run state."""
    spec = dict(stored, **spec)
    old_rt = ctx.runtime(stored.get("runtime") or "runc")
    status, _ = status_of(old_rt, ctx.name, ctx)
    changed = False
    recreate = _ctrspec.needs_recreate(stored, spec)
    if recreate:
        if not params.get("recreate"):
            raise ConflictError(
                "recreate: changing %s of container %s needs a re-create (the container "
                "would restart); set recreate: true to allow it. Nothing was changed."
                % (", ".join(recreate), ctx.name), field="recreate", fields=recreate)
        if "runtime" in recreate:
            ctx.runtime(spec["runtime"]).check_usable()
        was = status
        if status != "stopped":
            stop(ctx, stored, old_rt, status, ctx.stop_timeout)
        status = "stopped"
        if "template" in recreate:
            ctx.overlay(stored["template"]).reset()
            meta = _ctrspec.template_meta(ctx.layout, spec["template"])
            spec["template_sha256"] = meta.get("sha256")
        if "privileged" in recreate or "idmap_isolated" in recreate:
            _reown(ctx, stored, spec)
        changed = True
        if state == "present" and was in ("running", "frozen"):
            state = "started" if was == "running" else "frozen"
    rt = ctx.runtime(spec["runtime"])
    live = status in ("running", "frozen", "created")
    if stored.get("limits") != spec["limits"]:
        changed = True
        if live and not recreate:
            limits_apply_live(rt, ctx.name, spec["cgroups_path"], stored.get("limits") or {},
                              spec["limits"], ctx.check_mode, ctx.bundle)
    if stored.get("network") != spec["network"]:
        changed = True
        if not ctx.check_mode and _netns.exists(ctx.name):
            network_update(ctx.name, _netns.path(ctx.name), stored.get("network") or [],
                           spec["network"])
    elif spec["network"] and _netns.exists(ctx.name):
        changed |= _portfilter.repair(ctx.name, spec["network"], ctx.check_mode)  # e.g. after an upgrade
    if stored.get("autostart") != spec["autostart"]:
        changed = True
    if changed and not ctx.check_mode:
        if os.path.exists(_ocifile.config_path(ctx.bundle)) and not recreate:
            _limits.persist(ctx.bundle, spec["limits"])
        else:
            write_config(ctx, spec)
        ctx.store.save(ctx.name, spec)
    return _transition(ctx, spec, rt, status, state) or changed, spec


def check_reachable(path, idmap):
    """The container's root (a host uid that is neither owner nor group of anything above
    its directory) must pass through every directory down to ``path``."""
    blocked = _idmap.blocked_ancestor(path)
    if blocked:
        raise ValidationError(
            "privileged", "%s (mode %04o) is not searchable by others: the root of an "
            "unprivileged container (host uid %d) must pass through it to reach its rootfs; "
            "make it o+x or set privileged: true" % (blocked[0], blocked[1], idmap["uid"]))


def _reown(ctx, stored, spec):
    """A stopped container turning unprivileged (or back): its upper layer's owners
    moved into (out of) the range; its netns removed (an unprivileged one gets its own
    at each start) or made again with the same interfaces (privileged)."""
    old, new = _idmap.of(stored), _idmap.of(spec)
    if new:
        check_reachable(ctx.layout.containers_dir, new)
    if ctx.check_mode:
        return
    upper = ctx.overlay(spec["template"]).upper
    if os.path.isdir(upper):
        if old:
            _idmap.shift_in_place(upper, old, back=True)
        if new:
            _idmap.shift_in_place(upper, new)
    if old and old != new:  # an isolated range's own shifted template goes with it
        ctx.overlay(stored["template"], old).drop_own_lower()
    network_remove(ctx.name, stored.get("network"))
    if not new:
        network_attach(ctx.name, _netns.ensure(ctx.name), stored.get("network"))


def _transition(ctx, spec, rt, status, state):
    """Move the run state; return True when something was done."""
    if state == "present":
        return False
    if state == "restarted":
        if status != "stopped":
            stop(ctx, spec, rt, status, ctx.stop_timeout)
        start(ctx, spec, rt, "stopped")
        return True
    if state == "stopped":
        if status == "stopped":
            return False
        stop(ctx, spec, rt, status, ctx.stop_timeout)
        return True
    if state == "started":
        if status == "running":
            return False
        if status == "frozen":
            _resume(ctx, rt)
        else:
            start(ctx, spec, rt, status)
        return True
    # frozen
    if status == "frozen":
        return False
    if status != "running":
        start(ctx, spec, rt, status)
    _pause(ctx, rt)
    return True


def _pause(ctx, rt):
    rt.pause(ctx.name)
    ctx.known = ("frozen", ctx.known[1]) if ctx.known and not ctx.check_mode else None


def _resume(ctx, rt):
    rt.resume(ctx.name)
    ctx.known = ("running", ctx.known[1]) if ctx.known and not ctx.check_mode else None
