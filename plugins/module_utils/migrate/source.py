# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Move a running container to another host (``container_migrate``), driven from the source.

Sequence: SSH to the destination (one ControlMaster) and start the agent ->
preflight there -> stage there -> rsync the rootfs upper layer while the
container runs -> start the transfer's receivers there -> freeze and dump (cold:
the page images streamed while CRIU writes them, ``_migrate_pages``) -> stream the
other images and the rootfs delta into the tar receiver (``_migrate_stream``)
-> restore there -> it runs -> commit -> remove it here. Modes: ``cold`` (stop-and-copy), ``live``
(pre-copy, ``_migrate_precopy``: pre-dump rounds streamed while it runs, then the final
dump holds only the delta; where either kernel tracks no dirty memory it falls back to
cold and says why), ``lazy`` (post-copy: restore at once, pages pulled on demand from
the source's page server through an SSH port forward).

Failures before the commit leave the container running here: a failed dump
is resumed/thawed by ``recover_running``; after a dump that stopped it, it is
restored from the local images. The destination removes an uncommitted
restore itself when the session ends (see ``_migrate_agent``).

Files: this one (the spine: entry, preflight, staging, the window, the end),
``_migrate_run`` (``Run``, the state; the result),
``_migrate_precopy`` (live: the pre-dump rounds and their policy),
``_migrate_window`` (the frozen window), ``_migrate_stream`` and ``_migrate_pages`` (its transfer),
``_migrate_recover`` (fencing and resuming), ``_migrate_ssh`` (the SSH link),
``_migrate_agent`` (+ ``_migrate_preflight``, ``_migrate_proc``: destination).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import sys

from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import store as _ckstore
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import oci as _ocifile
from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import dump as _checkpoint
from ansible_collections.ctrhost.fleet.plugins.module_utils.criu import reports as _criu
from ansible_collections.ctrhost.fleet.plugins.module_utils.criu import config as _criuconf
from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import window as _dumpwindow
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import precopy as _migrate_precopy
from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import restore as _restore
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import agent as _migrate_agent  # noqa: F401 (shipped)
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import (
    CommandError,
    ConflictError,
    CtrhostError,
    NotFoundError,
    ValidationError,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.recover import (
    close_receiver,
    fence,
    keep_failure,
    recover,
    remove_source,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.pages import PageStream
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.state import MigrationError, Run, result, timings  # noqa: F401 (API)
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.ssh import LEASE, Link
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.stream import Receiver
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.already_moved import already_moved, moved_elsewhere, record_move
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.window import cold, lazy, tree_state
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime.driver import runtime_for
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.store import ContainerStore
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.validate import validate_name

MODES = ("cold", "live", "lazy")


def memory_needed(spec):
    """Bytes a move of the container with ``spec`` carries: its memory limit, else its
    current usage (0 when unknown)."""
    limit = (spec.get("limits") or {}).get("memory")
    if limit:
        return int(limit)
    from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.cgroups import Cgroup
    with contextlib.suppress(Exception):
        usage = Cgroup(spec["cgroups_path"]).read("memory", "memory.usage_in_bytes") or \
            Cgroup(spec["cgroups_path"]).read("memory", "memory.current")
        return int(usage)
    return 0


def choose_mode(run, src_criu, dst_facts):
    """The mode used (``run.mode``): the one asked for, or cold, and why (``run.fallback``),
    when either host cannot do it."""
    if run.mode_requested == "live":  # pre-dumps need both kernels' soft-dirty tracking
        if not src_criu["pre_dump"] or not dst_facts.get("pre_dump"):
            run.mode, run.fallback = "cold", "live (pre-copy) is impossible here: %s; used cold " \
                "(stop-and-copy)" % (src_criu["pre_dump_reason"] or "the destination has no dirty "
                                     "memory tracking")
    elif run.mode_requested == "lazy":
        why = None
        if not src_criu["lazy_pages"]:
            why = "source: %s" % src_criu["lazy_pages_reason"]
        elif not dst_facts.get("lazy_pages"):
            why = "destination: %s" % dst_facts.get("lazy_pages_reason")
        if why:
            run.mode, run.fallback = "cold", "lazy (post-copy) is unusable (%s); used cold" % why


# -- the spine: read from here down ----------------------------------------------------
def migrate(root, name, dest, mode="cold", dest_root=None, ssh_config=None, identity=None,
            ssh_port=None, ssh_user=None, dest_python=None, tcp_established=False,
            file_locks=False, ext_unix_sk=False, timeout=600, runtime_path=None, criu_path=None,
            check_mode=False, hooks=None, precopy=None):
    """Move container ``name`` to ``dest``; return the module result."""
    layout = Layout(root)
    policy = _validate(name, dest, mode, precopy)

    def link():  # the destination's agent runs with this interpreter (it has pyroute2)
        return Link(dest, layout.root, ssh_config, identity, ssh_port, ssh_user,
                    dest_python or sys.executable or "python3")

    store = ContainerStore(layout)
    # The lock first: whatever another task did to it while this one waited (moved it,
    # removed it) is seen by the checks below. The lock file goes with the container, but
    # after a move it stays (in the run dir, until a reboot) as the note of where it went.
    with store.lock(name, task="container_migrate%s to %s" % (" (check mode)" if check_mode else "", dest),
                    remove=lambda: not store.exists(name) and "moved_to" not in held.mine) as held:
        moved_elsewhere(layout, name, dest, held)  # by the task this one waited for
        moved = already_moved(layout, name, dest, dest_root, link, mode, runtime_path)
        if moved is not None:  # a rerun after the move: nothing to do
            return moved
        spec = _load(store, layout, name)
        src_criu = _source_criu(layout, name, criu_path)
        rt = runtime_for(layout, spec.get("runtime"), runtime_path)
        # leave_running: the dump leaves the (frozen) source as it is; see _migrate_window.
        options = _checkpoint.criu_options(spec, leave_running=True,
                                           tcp_established=bool(tcp_established),
                                           file_locks=bool(file_locks), ext_unix_sk=bool(ext_unix_sk))
        _checkpoint.require_empty_netns(rt, name, options)  # before anything is frozen
        run = Run(layout, name, spec, mode, dest, hooks, policy=policy,
                  dest_root=dest_root or layout.root, runtime_path=runtime_path, criu_path=criu_path)
        meta = _checkpoint.build_meta(layout, name, "migrate-" + _ckstore.default_id(), spec,
                                      src_criu, rt, options, {}, "/nonexistent")
        _require_running(rt, name)
        run.link = link()
        try:
            pre = _preflight(run, meta, src_criu)
            if check_mode:
                return result(run, changed=True, preflight=pre, where="source (check mode)")
            out = _move(run, rt, src_criu, meta, pre, options, timeout)
            record_move(held, dest)  # for a task that waits for this lock
            return out
        finally:
            _close(run)


def _move(run, rt, criu, meta, pre, options, timeout):
    """Stage there and pre-copy while it runs, then the frozen window, then the end."""
    upper = run.layout.container_file(run.name, "upper")
    config = _ocifile.load_config(os.path.join(run.layout.container_dir(run.name), "config.json"))
    _new_images(run, meta)
    try:
        _stage(run, rt, criu, meta, config, upper, options, timeout)
    except Exception as exc:
        raise _failed_before_freeze(run, exc)
    try:
        answer = _window(run, rt, criu, pre, upper, options, timeout)
    except Exception as exc:
        where = recover(run, rt, meta)
        if where != run.dest:
            raise _failed(run, exc, where)
        answer = dict(pid=None)  # the destination committed; only its answer was lost
    run.step("committed")
    remove_source(run)
    run.step("source_removed")
    return result(run, changed=True, preflight=pre, where=run.dest, pid=answer.get("pid"))


# -- the steps, in the order the spine takes them ----------------------------------------
def _validate(name, dest, mode, precopy):
    """Check the options before anything is touched; return the pre-copy policy."""
    validate_name(name, "name")
    if mode not in MODES:
        raise ValidationError("mode", "expected one of %s, got %r" % (", ".join(MODES), mode))
    if not dest or not isinstance(dest, str):
        raise ValidationError("dest", "expected the destination host name or address")
    return _migrate_precopy.Policy.from_options(precopy)


def _load(store, layout, name):
    spec = store.load(name)
    if spec is None:
        raise NotFoundError("name: container %s does not exist under %s"
                            % (name, layout.containers_dir), field="name")
    return spec


def _source_criu(layout, name, criu_path):
    """This host's CRIU, checked, and the dump's CRIU options written before any freeze."""
    src_criu = _criu.discover(criu_path)
    if not src_criu["check"]:
        raise CommandError("criu: %s fails 'criu check': %s" % (src_criu["path"],
                                                                src_criu["check_output"]), [], 1)
    _criuconf.refresh_container_config(
        layout.run_dir, name, _criuconf.write_config(layout.run_dir, src_criu["path"]))
    return src_criu


def _require_running(rt, name):
    st = rt.state(name)
    if not st or st.get("status") not in ("running", "paused"):
        raise ConflictError("name: container %s is %s; only a running container is migrated"
                            % (name, (st or {}).get("status", "stopped")), field="name")


def _preflight(run, meta, src_criu):
    """SSH there, start the agent, ask whether that host can take the container, choose
    the mode; returns the destination's answer."""
    run.link.connect()
    need = memory_needed(run.spec)
    upper = run.layout.container_file(run.name, "upper")
    pre = run.link.call("preflight", root=run.dest_root, name=run.name, meta=meta,
                        memory_needed=need, disk_needed=_ckstore.dir_size(upper) + need,
                        runtime_path=run.runtime_path, criu_path=run.criu_path, timeout=120)
    run.step("preflight")
    if not pre.get("ok"):
        raise MigrationError("dest: %s cannot take container %s: %s"
                             % (run.dest, run.name, "; ".join(pre.get("problems") or
                                                              [pre.get("error", "?")])),
                             problems=pre.get("problems"), where="source", changed=False)
    choose_mode(run, src_criu, pre["facts"])
    return pre


def _new_images(run, meta):
    """The local image directory of this move, empty: on the run directory's tmpfs when
    the images fit there (``_dumpwindow``; not for live mode's pre-dump rounds), else
    under the container's checkpoints."""
    layout = run.layout
    need = _dumpwindow.expected_bytes(_ocifile.cgroups_path_of(run.spec, run.name))
    run.images, why = _dumpwindow.plan(layout, run.name, "." + meta["id"], need, run.mode != "live")
    run.stats["images"] = dict(staged=bool(run.images), why_not=why, expected_bytes=need)
    if run.images:
        return
    run.images = layout.checkpoint_dir(run.name, "." + meta["id"])
    shutil.rmtree(run.images, ignore_errors=True)
    _ckstore.checkpoints_root(layout)
    for path in (layout.checkpoint_dir(run.name), run.images):
        os.makedirs(path, mode=0o700, exist_ok=True)


def _stage(run, rt, criu, meta, config, upper, options, timeout):
    """While it runs: stage it there, pre-sync the rootfs, pre-copy its memory (live),
    start the frozen window's receiver."""
    link = run.link
    prep = link.call("prepare", root=run.dest_root, name=run.name, meta=meta,
                     runtime_path=run.runtime_path, criu_path=run.criu_path, config=config,
                     lease=LEASE, source=os.uname().nodename, timeout=120)
    if not prep.get("ok"):
        raise MigrationError("dest: prepare failed on %s: %s" % (run.dest, prep.get("error")))
    run.step("staged")
    run.incoming, run.dest_upper = prep["incoming"], prep["upper"]
    run.before_dump = _checkpoint.inspect(run.layout, rt, run.name, run.spec, rt.state(run.name),
                                          criu["path"], options)
    run.upper_snapshot = tree_state(upper)
    run.bytes += link.rsync(upper, run.dest_upper, timeout, vanished_ok=True)  # still running
    run.step("presync")
    if run.mode == "live":  # pre-dump rounds while it runs; the final dump sends the rest
        run.parent = _migrate_precopy.iterate(run, rt, criu, options, timeout)
    if run.spec.get("network"):
        run.links = _restore.HostLinks(run.spec["network"])
    # The receiver of the frozen window's transfer, started now: inside the window
    # only bytes flow (no SSH session or process start there).
    run.receiver = Receiver(link, posixpath.commonpath([run.incoming, run.dest_upper]))
    if run.mode == "cold" and (run.stats["images"]["expected_bytes"] or 0) >= _dumpwindow.STAGE_MIN:
        # the page images go while the dump writes them (small ones: the tar stream is enough)
        run.pages = PageStream(link, posixpath.join(run.incoming, "images"))
    ready = link.call("ready", timeout=30)
    run.receiver.wait_ready()  # the agent is there: only now freeze
    if run.pages is not None:
        run.pages.wait_ready()
    if not ready.get("ok"):
        raise MigrationError("dest: the agent on %s is not ready (fenced=%s)"
                             % (run.dest, ready.get("fenced")))


def _failed_before_freeze(run, exc):
    """The destination fenced, the local images dropped; the error to raise (the
    container never stopped running here)."""
    close_receiver(run)
    run.fence = fence(run)
    _dumpwindow.remove(run.images)  # pre-dump rounds, if any
    if not isinstance(exc, CtrhostError):
        return exc
    return MigrationError("migration of %s to %s failed before the freeze: %s; the "
                          "container runs on source" % (run.name, run.dest, exc.msg),
                          where="source", changed=False, fence=run.fence, steps=run.steps,
                          iterations=run.iterations, dump_log=exc.details.get("dump_log"))


def _window(run, rt, criu, pre, upper, options, timeout):
    """The frozen window (``_migrate_window``), then the destination's commit."""
    if run.mode == "lazy":
        answer = lazy(run, rt, criu, pre, upper, options, timeout)
    else:
        answer = cold(run, rt, criu, upper, options, timeout)
    run.step("restored")
    commit = run.link.call("commit", timeout=60)
    if not commit.get("ok"):
        raise MigrationError("dest: commit refused: %s" % commit.get("error"))
    return answer


def _failed(run, exc, where):
    """After ``recover`` put the container back ``where`` (not the destination): the dump
    log kept, and the error to raise, saying where it runs."""
    kept = keep_failure(run, where)
    if not isinstance(exc, CtrhostError):
        return exc
    details = dict(exc.details)
    fallback = [e for e in run.errors if e["where"] == "source"]
    details.update(where=where, mode=run.mode, fallback=run.fallback, steps=run.steps,
                   fence=run.fence, error=exc.msg, fallback_errors=fallback, **kept)
    return MigrationError("migration of %s to %s failed: %s; the container runs on %s%s"
                          % (run.name, run.dest, exc.msg, where,
                             "".join("; %s failed too: %s" % (e["step"], e["msg"])
                                     for e in fallback)), **details)


def _close(run):
    """However it ended: the receiver stopped, the SSH session and master closed."""
    close_receiver(run)
    run.link.close()
    if run.links is not None:
        run.links.close()


def task(params, check_mode=False):
    """The ``container_migrate`` module's entry: its options are ``migrate``'s keywords."""
    return migrate(check_mode=check_mode, **params)
