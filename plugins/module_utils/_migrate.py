# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Move a running container to another host (``container_migrate``), driven from the source.

Sequence: SSH to the destination (one ControlMaster) and start the agent ->
preflight there -> stage there -> rsync the rootfs upper layer while the
container runs -> start the transfer's receiver there -> freeze and dump ->
stream the images and the rootfs delta into that receiver (``_migrate_stream``)
-> restore there -> it runs -> commit -> remove it here. Modes: ``cold`` (stop-and-copy), ``live``
(pre-copy, ``_migrate_precopy``: pre-dump rounds streamed while it runs, then the final
dump holds only the delta; where either kernel tracks no dirty memory it falls back to
cold and says why), ``lazy`` (post-copy: restore at once, pages pulled on demand from
the source's page server through an SSH port forward).

Failures before the commit leave the container running here: a failed dump
is resumed/thawed by ``recover_running``; after a dump that stopped it, it is
restored from the local images. The destination removes an uncommitted
restore itself when the session ends (see ``_migrate_agent``).

Files: this one (entry, preflight, staging), ``_migrate_run`` (state, result),
``_migrate_precopy`` (live: the pre-dump rounds and their policy),
``_migrate_window`` (the frozen window), ``_migrate_stream`` (its transfer),
``_migrate_recover`` (fencing and resuming), ``_migrate_ssh`` (the SSH link),
``_migrate_agent`` (+ ``_migrate_preflight``, ``_migrate_proc``: destination).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import sys

from ansible_collections.ctrhost.fleet.plugins.module_utils import (
    _checkpoint,
    _criu,
    _criuconf,
    _migrate_precopy,
    _oci,
    _restore,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils import _migrate_agent  # noqa: F401 (shipped)
from ansible_collections.ctrhost.fleet.plugins.module_utils._errors import (
    CommandError,
    ConflictError,
    CtrhostError,
    NotFoundError,
    ValidationError,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils._migrate_recover import (
    _close_receiver,
    _fence,
    _recover,
    _remove_source,
    keep_failure,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils._migrate_run import MigrationError, Run, _result, timings  # noqa: F401 (API)
from ansible_collections.ctrhost.fleet.plugins.module_utils._migrate_ssh import LEASE, Link
from ansible_collections.ctrhost.fleet.plugins.module_utils._migrate_stream import Receiver
from ansible_collections.ctrhost.fleet.plugins.module_utils._migrate_where import already_moved
from ansible_collections.ctrhost.fleet.plugins.module_utils._migrate_window import _cold, _lazy, _tree_state
from ansible_collections.ctrhost.fleet.plugins.module_utils._paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils._runtime import runtime_for
from ansible_collections.ctrhost.fleet.plugins.module_utils._state import ContainerStore
from ansible_collections.ctrhost.fleet.plugins.module_utils._validate import validate_name

MODES = ("cold", "live", "lazy")


def memory_needed(spec):
    """Bytes a move of the container with ``spec`` carries: its memory limit, else its
    current usage (0 when unknown)."""
    limit = (spec.get("limits") or {}).get("memory")
    if limit:
        return int(limit)
    from ansible_collections.ctrhost.fleet.plugins.module_utils._cgroups import Cgroup
    with contextlib.suppress(Exception):
        usage = Cgroup(spec["cgroups_path"]).read("memory", "memory.usage_in_bytes") or \
            Cgroup(spec["cgroups_path"]).read("memory", "memory.current")
        return int(usage)
    return 0


def _choose_mode(run, src_criu, dst_facts):
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


def migrate(root, name, dest, mode="cold", dest_root=None, ssh_config=None, identity=None,
            ssh_port=None, ssh_user=None, dest_python=None, tcp_established=False,
            file_locks=False, ext_unix_sk=False, timeout=600, runtime_path=None, criu_path=None,
            check_mode=False, hooks=None, precopy=None):
    """Move container ``name`` to ``dest``; return the module result."""
    layout = Layout(root)
    validate_name(name, "name")
    if mode not in MODES:
        raise ValidationError("mode", "expected one of %s, got %r" % (", ".join(MODES), mode))
    if not dest or not isinstance(dest, str):
        raise ValidationError("dest", "expected the destination host name or address")
    policy = _migrate_precopy.Policy.from_options(precopy)
    moved = already_moved(layout, name, dest, dest_root, lambda: Link(
        dest, layout.root, ssh_config, identity, ssh_port, ssh_user, dest_python or sys.executable or "python3"),
        mode, runtime_path)
    if moved is not None:  # a rerun after the move: nothing to do
        return moved
    store = ContainerStore(layout)
    spec = store.load(name)
    if spec is None:
        raise NotFoundError("name: container %s does not exist under %s"
                            % (name, layout.containers_dir), field="name")
    src_criu = _criu.discover(criu_path)
    if not src_criu["check"]:
        raise CommandError("criu: %s fails 'criu check': %s" % (src_criu["path"],
                                                                src_criu["check_output"]), [], 1)
    _criuconf.refresh_container_config(  # the dump's CRIU options, before any freeze
        layout.run_dir, name, _criuconf.write_config(layout.run_dir, src_criu["path"]))
    rt = runtime_for(layout, spec.get("runtime"), runtime_path)
    # leave_running: the dump leaves the (frozen) source as it is; see _migrate_window.
    options = dict(leave_running=True, tcp_established=bool(tcp_established),
                   file_locks=bool(file_locks), ext_unix_sk=bool(ext_unix_sk))
    run = Run(layout, name, spec, mode, dest, hooks)
    run.policy = policy
    cid = "migrate-" + _checkpoint.default_id()
    meta = _checkpoint.build_meta(layout, name, cid, spec, src_criu, rt, options, {}, "/nonexistent")
    with store.lock(name):
        st = rt.state(name)
        if not st or st.get("status") not in ("running", "paused"):
            raise ConflictError("name: container %s is %s; only a running container is migrated"
                                % (name, (st or {}).get("status", "stopped")), field="name")
        # The destination runs the agent with the interpreter this code runs under (the
        # module's ansible_python_interpreter, which has pyroute2) unless told otherwise.
        run.link = Link(dest, layout.root, ssh_config, identity, ssh_port, ssh_user,
                        dest_python or sys.executable or "python3")
        try:
            run.link.open()
            run.link.start_agent()
            upper = layout.container_file(name, "upper")
            need = memory_needed(spec)
            pre = run.link.call("preflight", root=dest_root or layout.root, name=name, meta=meta,
                                memory_needed=need, disk_needed=_checkpoint.dir_size(upper) + need,
                                runtime_path=runtime_path, criu_path=criu_path, timeout=120)
            run.step("preflight")
            if not pre.get("ok"):
                raise MigrationError("dest: %s cannot take container %s: %s"
                                     % (dest, name, "; ".join(pre.get("problems") or
                                                              [pre.get("error", "?")])),
                                     problems=pre.get("problems"), where="source", changed=False)
            _choose_mode(run, src_criu, pre["facts"])
            if check_mode:
                return _result(run, changed=True, preflight=pre, where="source (check mode)")
            return _move(run, rt, src_criu, meta, pre, upper, dest_root or layout.root,
                         options, timeout, runtime_path, criu_path)
        finally:
            _close_receiver(run)
            run.link.close()
            if run.links is not None:
                run.links.close()


def _move(run, rt, criu, meta, pre, upper, dest_root, options, timeout, runtime_path, criu_path):
    layout, name, link = run.layout, run.name, run.link
    run.dest_root, run.runtime_path = dest_root, runtime_path
    config = _oci.load_config(os.path.join(layout.container_dir(name), "config.json"))
    run.images = layout.checkpoint_dir(name, "." + meta["id"])
    shutil.rmtree(run.images, ignore_errors=True)
    for path in (layout.checkpoints_dir, layout.checkpoint_dir(name), run.images):
        os.makedirs(path, mode=0o700, exist_ok=True)
    try:
        prep = link.call("prepare", root=dest_root, name=name, meta=meta,
                         runtime_path=runtime_path, criu_path=criu_path, config=config,
                         lease=LEASE, source=os.uname().nodename, timeout=120)
        if not prep.get("ok"):
            raise MigrationError("dest: prepare failed on %s: %s" % (run.dest, prep.get("error")))
        run.step("staged")
        run.incoming, run.dest_upper = prep["incoming"], prep["upper"]
        run.before_dump = _checkpoint.inspect(layout, rt, name, run.spec, rt.state(name),
                                              criu["path"], options)
        run.upper_snapshot = _tree_state(upper)
        run.bytes += link.rsync(upper, run.dest_upper, timeout, vanished_ok=True)  # still running
        run.step("presync")
        if run.mode == "live":  # pre-dump rounds while it runs; the final dump sends the rest
            run.parent = _migrate_precopy.iterate(run, rt, criu, options, timeout)
        if run.spec.get("network"):
            run.links = _restore.HostLinks(run.spec["network"])
        # The receiver of the frozen window's transfer, started now: inside the window
        # only bytes flow (no SSH session or process start there).
        run.receiver = Receiver(link, posixpath.commonpath([run.incoming, run.dest_upper]))
        ready = link.call("ready", timeout=30)
        run.receiver.wait_ready()  # the agent is there: only now freeze
        if not ready.get("ok"):
            raise MigrationError("dest: the agent on %s is not ready (fenced=%s)"
                                 % (run.dest, ready.get("fenced")))
    except Exception as exc:
        _close_receiver(run)
        run.fence = _fence(run)
        shutil.rmtree(run.images, ignore_errors=True)  # pre-dump rounds, if any
        if isinstance(exc, CtrhostError):
            raise MigrationError("migration of %s to %s failed before the freeze: %s; the "
                                 "container runs on source" % (name, run.dest, exc.msg),
                                 where="source", changed=False, fence=run.fence, steps=run.steps,
                                 iterations=run.iterations, dump_log=exc.details.get("dump_log"))
        raise
    try:
        if run.mode == "lazy":
            answer = _lazy(run, rt, criu, meta, pre, upper, options, timeout)
        else:
            answer = _cold(run, rt, criu, meta, upper, options, timeout)
        run.step("restored")
        commit = link.call("commit", timeout=60)
        if not commit.get("ok"):
            raise MigrationError("dest: commit refused: %s" % commit.get("error"))
    except Exception as exc:
        where = _recover(run, rt, meta, exc)
        if where != run.dest:
            kept = keep_failure(run, where)
            if isinstance(exc, CtrhostError):
                details = dict(exc.details)
                fallback = [e for e in run.errors if e["where"] == "source"]
                details.update(where=where, mode=run.mode, fallback=run.fallback,
                               steps=run.steps, fence=run.fence, error=exc.msg,
                               fallback_errors=fallback, **kept)
                raise MigrationError("migration of %s to %s failed: %s; the container runs on %s%s"
                                     % (name, run.dest, exc.msg, where,
                                        "".join("; %s failed too: %s" % (e["step"], e["msg"])
                                                for e in fallback)), **details)
            raise
        answer = dict(pid=None)  # the destination committed; only its answer was lost
    run.step("committed")
    _remove_source(run, rt)
    run.step("source_removed")
    return _result(run, changed=True, preflight=pre, where=run.dest, pid=answer.get("pid"))
