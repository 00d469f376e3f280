# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checkpoints of containers (CRIU through the runtime's ``checkpoint``).

A checkpoint lives in ``<root>/checkpoints/<name>/<id>/`` (mode 0700: the
images hold the container's memory): CRIU's images, ``dump.log``,
``stats-dump``, the bundle's ``config.json``, the overlay upper layer as
``rootfs-diff.tar`` (so that another host can restore it) and
``checkpoint.json`` {id, created, spec, template, template_sha256,
criu_version, kernel, runtime, stats, size, options}. It is written under a
temporary name and renamed when complete: a listed checkpoint is whole.

A failed dump leaves the container running (resumed/thawed when the runtime
left it paused) and raises CommandError with a classified ``cause`` and the
CRIU log lines. Restoring is in ``_restore``.
"""

from __future__ import annotations

import datetime
import os
import shutil
import time

from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import prescan as _prescan
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import oci as _ocifile
from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.criu import reports as _criu
from ansible_collections.ctrhost.fleet.plugins.module_utils.criu import config as _criuconf
from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import window as _dumpwindow
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import idmap as _idmap
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import netns as _netns
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import system as _sysctr
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import sysinfo as _sysinfo
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.atomic import atomic_write_json
from ansible_collections.ctrhost.fleet.plugins.module_utils.criu import tool as _criutool
from ansible_collections.ctrhost.fleet.plugins.module_utils.criu.tool import criu_for
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import (
    CommandError,
    ConflictError,
    CtrhostError,
    NotFoundError,
    ValidationError,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint.store import (
    META_FILE,
    root_only_dir,
    checkpoints_root,
    default_id,
    dir_size,
    list_checkpoints,
    private_tree,
    prune,
    validate_id,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime.driver import runtime_for
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.store import ContainerStore
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.atomic import read_json
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.validate import validate_name

ROOTFS_TAR = "rootfs-diff.tar"
CONFIG_COPY = "config.json"
OPTIONS = ("leave_running", "tcp_established", "file_locks", "ext_unix_sk")
CRIU_FLAGS = {"leave_running": "--leave-running", "tcp_established": "--tcp-established",
              "file_locks": "--file-locks", "ext_unix_sk": "--ext-unix-sk",
              "empty_netns": "--empty-ns=network"}
# Flags a restore must repeat when the dump used them. ``empty_netns`` (not an option of
# the modules: set for an unprivileged container, see ``criu_options``): the netns is
# dumped empty, and made again by the restore for ``_nethook`` to fill.
RESTORE_FLAGS = ("tcp_established", "file_locks", "ext_unix_sk", "empty_netns")


def criu_args(rt, criu_path):
    """The runtime's way to name the CRIU binary: runc takes ``--criu PATH``; crun links
    libcriu (it must be built with it: ``+CRIU`` in ``crun --version``, and find
    ``libcriu.so.2`` when it runs) and has no such option. A crun without CRIU, or
    without its library, is refused here, before anything is frozen."""
    if rt.name == "runc":
        return ["--criu", criu_path] if criu_path else []
    info = rt.info()
    if "CRIU" not in info.get("build_features", []):
        raise ConflictError(
            "runtime: %s %s at %s was built without CRIU support (no +CRIU in `%s --version`), "
            "so it cannot checkpoint, restore or migrate a container; use runc for this "
            "container or a %s built with CRIU" % (rt.name, info.get("version") or "", rt.binary,
                                                   rt.name, rt.name), field="runtime")
    loadable, why = _criutool.libcriu_loadable()
    if not loadable:
        raise ConflictError(
            "runtime: %s %s at %s is built with CRIU but cannot load CRIU's library %s (%s), so "
            "it cannot checkpoint, restore or migrate a container; install it (Debian: package "
            "libcriu2) or use runc for this container. Nothing was frozen: the container is "
            "running" % (
                rt.name, info.get("version") or "", rt.binary, _criutool.LIBCRIU, why),
            field="runtime")
    return []


# ---------------------------------------------------------------- listing


# ---------------------------------------------------------------- dump

def recover_running(rt, name, cgroups_path=None):
    """After a failed dump or migration: make sure the container runs (resume/thaw) and
    that no CRIU network lock is left in its netns; return its status."""
    st = rt.state(name)
    if st and st.get("status") == "paused":
        rt.resume(name)
        st = rt.state(name)
    if st and st.get("status") == "running" and cgroups_path:
        thaw(cgroups_path)
    _criuconf.remove_lock_tables(_netns.path(name))
    return (st or {}).get("status", "absent")


def thaw(cgroups_path):
    """Thaw the container's cgroup if the freezer holds it (a dump killed mid-way)."""
    from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.cgroups import Cgroup
    try:
        cg = Cgroup(cgroups_path)
        if cg.v2:
            if cg.read("freezer", "cgroup.freeze") == "1":
                cg.write("freezer", "cgroup.freeze", "0")
        elif cg.read("freezer", "freezer.state") in ("FROZEN", "FREEZING"):
            cg.write("freezer", "freezer.state", "THAWED")
    except (OSError, CtrhostError):
        pass


def inspect(layout, rt, name, spec, state, criu_path, options):
    """Before the freeze: refuse what CRIU cannot dump (nested namespaces, named by
    unit), turn ``file_locks`` on when a process holds one, point CRIU's inode map at
    the directories the container watches, record a system container's cgroup tree.
    Returns the facts (``_prescan.before_dump``); updates ``options`` in place."""
    from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.cgroups import Cgroup
    facts = _prescan.before_dump(Cgroup(_ocifile.cgroups_path_of(spec, name)),
                                 layout.container_file(name, "rootfs"), (state or {}).get("pid"),
                                 _sysctr.is_system(spec))
    if facts["file_locks"] and not options.get("file_locks"):
        options["file_locks"] = True
        facts["file_locks_auto"] = True
    _criuconf.refresh_container_config(layout.run_dir, name, _criuconf.write_config(
        layout.run_dir, criu_path, facts["scan_paths"]))
    return facts


def require_empty_netns(rt, name, options):
    """Refuse, before anything is frozen, a dump that needs ``--empty-ns network`` (an
    unprivileged container, ``criu_options``) from a runtime without that option: crun
    (1.21 included) has none, and without it CRIU would dump the namespace's interfaces
    and a restore would never hand the new namespace to the network hook."""
    if options.get("empty_netns") and rt.name != "runc":
        raise ConflictError(
            "runtime: %s cannot checkpoint, restore or migrate container %s: it is unprivileged "
            "(a user namespace), so its restore must make its network namespace again, empty, "
            "for its interfaces to be attached (CRIU's --empty-ns network, which only runc "
            "passes on; `%s checkpoint` has no such option). Nothing was frozen: the container is "
            "running. Use runtime: runc for it, or make it privileged" % (rt.name, name, rt.name),
            field="runtime")


def dump_command(rt, criu_path, name, image_dir, work_dir, options, extra=()):
    args = criu_args(rt, criu_path)
    require_empty_netns(rt, name, options)
    args += ["checkpoint", "--image-path", image_dir, "--work-path", work_dir]
    args += [CRIU_FLAGS[key] for key in OPTIONS + ("empty_netns",) if options.get(key)]
    return rt.base_cmd() + args + list(extra) + [name]


def criu_options(spec, **options):
    """The options of a dump of the container of ``spec`` (and of its restore, saved with
    the images): ``options`` and, for an unprivileged container, ``empty_netns``."""
    return dict(options, empty_netns=bool(_idmap.of(spec)))


def dump_failure(exc, work_dir, what, rt, name, spec):
    """CommandError of a failed dump with cause + log lines, after recovering the container."""
    cause, hint, lines = _criu.classify_work_dir(work_dir, "dump.log", getattr(exc, "stderr", ""))
    status = recover_running(rt, name, (spec or {}).get("cgroups_path"))
    return CommandError(
        "%s of container %s failed: %s (%s)%s; the container is %s"
        % (what, name, cause, hint, ": " + lines[0] if lines else "", status),
        getattr(exc, "cmd", []), getattr(exc, "rc", -1), getattr(exc, "stdout", ""),
        getattr(exc, "stderr", ""), cause=cause, criu_log=lines, container_status=status)


def tar_upper(upper, target):
    """The overlay upper layer (whiteouts, xattrs, owners) as a tarball."""
    _cli.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls",
              "-C", upper, "-cf", target, "."], msg="tar of the rootfs changes", timeout=3600)


def checkpoint(root, name, cid=None, leave_running=False, tcp_established=False,
               file_locks=False, ext_unix_sk=False, keep=None, rootfs=True,
               runtime_path=None, criu_path=None, check_mode=False):
    """Checkpoint running container ``name``; return the module result."""
    layout = Layout(root)
    validate_name(name, "name")
    cid = validate_id(cid) if cid is not None else default_id()
    if keep is not None and (not isinstance(keep, int) or keep < 1):
        raise ValidationError("keep", "expected a positive integer, got %r" % (keep,))
    store = ContainerStore(layout)
    spec = store.load(name)
    if spec is None:
        raise NotFoundError("name: container %s does not exist under %s"
                            % (name, layout.containers_dir), field="name")
    options = criu_options(spec, leave_running=bool(leave_running),
                           tcp_established=bool(tcp_established), file_locks=bool(file_locks),
                           ext_unix_sk=bool(ext_unix_sk))
    final = layout.checkpoint_dir(name, cid)
    existing = read_json(os.path.join(final, META_FILE))
    recorder = _cli.Recorder()
    if existing:  # idempotent: the same id is not dumped twice
        pruned = prune(layout, name, keep, exclude=(cid,), check_mode=check_mode)
        return _result(existing, final, bool(pruned), pruned, recorder)
    criu = criu_for(layout, criu_path).require()
    rt = runtime_for(layout, spec.get("runtime"), runtime_path, recorder, check_mode)
    with store.lock(name):
        st = rt.state(name)
        if not st or st.get("status") not in ("running", "paused"):
            raise ConflictError("name: container %s is %s; only a running or frozen container "
                                "can be checkpointed" % (name, (st or {}).get("status", "stopped")),
                                field="name")
        if check_mode:
            recorder.add(dump_command(rt, criu["path"], name, final, final, options))
            meta = dict(id=cid, name=name, options=options, spec=spec)
            return _result(meta, final, True, prune(layout, name, keep, check_mode=True), recorder)
        meta = _dump(layout, rt, criu, name, cid, spec, options, rootfs, recorder)
        pruned = prune(layout, name, keep, exclude=(cid,))
    return _result(meta, final, True, pruned, recorder)


def _dump(layout, rt, criu, name, cid, spec, options, rootfs, recorder):
    final = layout.checkpoint_dir(name, cid)
    tmp = layout.checkpoint_dir(name, ".%s.partial" % cid)
    state = rt.state(name)
    facts = inspect(layout, rt, name, spec, state, criu["path"], options)  # before any file of it
    dump_command(rt, criu["path"], name, tmp, tmp, options)  # may refuse: before any write
    checkpoints_root(layout)
    root_only_dir(layout.checkpoint_dir(name))
    if os.path.isdir(tmp):
        shutil.rmtree(tmp)
    root_only_dir(tmp)
    cgroups_path = _ocifile.cgroups_path_of(spec, name)
    t0 = time.monotonic()
    frozen = _dumpwindow.freeze_first(rt, cgroups_path, state)
    freeze_time = time.monotonic() - t0
    stage, why = _dumpwindow.plan(layout, name, cid, _dumpwindow.expected_bytes(cgroups_path),
                                  options["leave_running"] or (
                                      frozen is not None and not options["tcp_established"]))
    # Staged without leave_running: dumped leaving it frozen, stopped once its images are on disk.
    cmd = dump_command(rt, criu["path"], name, stage or tmp, tmp,
                       dict(options, leave_running=options["leave_running"] or bool(stage)))
    follower = _dumpwindow.Follower(stage, tmp) if stage else None  # the move overlaps the dump
    try:
        result = _cli.run(cmd, recorder=recorder, timeout=3600, msg="checkpoint of %s" % name)
    except CommandError as exc:
        if follower is not None:
            follower.stop()
        _dumpwindow.remove(stage)
        err = dump_failure(exc, tmp, "checkpoint", rt, name, spec)
        log = _keep_failed_log(layout, name, tmp)
        if log:
            err.details["log"] = log
            err.msg += "; CRIU's log: %s" % log
            err.args = (err.msg,)
        raise err
    if frozen is not None and options["leave_running"]:  # CRIU left it frozen
        _dumpwindow.thaw_after(rt, name, frozen)
    t0 = time.monotonic()
    if stage:
        try:
            follower.finish()
        except OSError as exc:  # still frozen or running: a failed checkpoint leaves it running
            status = recover_running(rt, name, cgroups_path)
            shutil.rmtree(tmp, ignore_errors=True)
            raise CommandError("checkpoint of %s failed: its images could not be moved to %s: %s; "
                               "the container is %s" % (name, tmp, exc, status), [], -1,
                               cause="no_space" if exc.errno == 28 else "unknown",
                               container_status=status)
        if not options["leave_running"]:
            _dumpwindow.stop_frozen(rt, name, frozen)
    images = dict(staged=bool(stage), why_not=why, move_time=round(time.monotonic() - t0, 3),
                  frozen_first=frozen is not None, freeze_time=round(freeze_time, 4))
    bundle = layout.container_dir(name)
    if os.path.exists(os.path.join(bundle, "config.json")):
        shutil.copy2(os.path.join(bundle, "config.json"), os.path.join(tmp, CONFIG_COPY))
    upper = os.path.join(bundle, "upper")
    if rootfs and os.path.isdir(upper):
        tar_upper(upper, os.path.join(tmp, ROOTFS_TAR))
    meta = build_meta(layout, name, cid, spec, criu, rt, options,
                      _criu.work_stats(tmp).get("dump", {}), tmp, result.duration)
    meta.update(cgroup_tree=facts["cgroup_tree"], images=images)
    atomic_write_json(os.path.join(tmp, META_FILE), meta, mode=0o600)
    private_tree(tmp)
    os.rename(tmp, final)
    return meta


def build_meta(layout, name, cid, spec, criu, rt, options, stats, image_dir, duration=None):
    info = rt.info()  # disk-cached `runtime --version`
    return dict(
        id=cid, name=name,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        spec=spec, template=spec.get("template"), template_sha256=spec.get("template_sha256"),
        criu_version=criu.get("version"), kernel=_sysinfo.kernel_release(),
        runtime=dict(name=rt.name, version=info.get("version")), stats=stats,
        size=dir_size(image_dir), options=options, host=os.uname().nodename,
        rootfs_tar=os.path.exists(os.path.join(image_dir, ROOTFS_TAR)),
        duration=round(duration, 3) if duration is not None else None,
    )


def _keep_failed_log(layout, name, tmp):
    """Keep the dump log of a failed dump as ``last-failure.log``; return its path."""
    log, kept = os.path.join(tmp, "dump.log"), None
    if os.path.exists(log):
        kept = layout.checkpoint_dir(name, "last-failure.log")
        shutil.copy2(log, kept)
    shutil.rmtree(tmp, ignore_errors=True)
    return kept


def _result(meta, path, changed, pruned, recorder):
    return dict(changed=changed, id=meta.get("id"), checkpoint_dir=path, size=meta.get("size"),
                stats=meta.get("stats") or {}, options=meta.get("options") or {},
                checkpoint={k: v for k, v in meta.items() if k != "spec"},
                pruned=pruned, commands=recorder.commands)


def delete(root, name, cid, check_mode=False):
    """``state: absent``: remove checkpoint ``cid`` (every checkpoint of ``name`` when None)."""
    layout = Layout(root)
    validate_name(name, "name")
    if cid is not None:
        validate_id(cid)
    targets = [m for m in list_checkpoints(layout, name) if cid is None or m["id"] == cid]
    if not check_mode:
        for meta in targets:
            shutil.rmtree(meta["path"])
    return dict(changed=bool(targets), deleted=[m["id"] for m in targets], id=cid,
                diff=dict(before=dict(checkpoints=[m["id"] for m in targets]),
                          after=dict(checkpoints=[])) if targets else None)


def ensure(params, check_mode=False):
    """Module entry: ``state`` present (dump) or absent (delete)."""
    state = params.get("state") or "present"
    if state not in ("present", "absent"):
        raise ValidationError("state", "expected present or absent, got %r" % (state,))
    if state == "absent":
        return delete(params.get("root"), params["name"], params.get("id"), check_mode)
    return checkpoint(params.get("root"), params["name"], params.get("id"),
                      params.get("leave_running"), params.get("tcp_established"),
                      params.get("file_locks"), params.get("ext_unix_sk"), params.get("keep"),
                      params.get("rootfs", True), params.get("runtime_path"),
                      params.get("criu_path"), check_mode)
