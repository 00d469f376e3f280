# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Move a running container to another host (``container_migrate``), driven from the source.

Sequence: SSH to the destination (one ControlMaster) and start the agent ->
preflight there -> rsync the rootfs upper layer while the container runs ->
freeze and dump -> rsync the delta and the images -> restore there -> it runs
-> commit -> remove it here. Modes: ``cold`` (stop-and-copy), ``live``
(pre-copy; where the kernel tracks no dirty memory it falls back to cold and
says why), ``lazy`` (post-copy: restore at once, pages pulled on demand from
the source's page server through an SSH port forward).

Failures before the commit leave the container running here: a failed dump
is resumed/thawed by ``recover_running``; after a dump that stopped it, it is
restored from the local images. The destination removes an uncommitted
restore itself when the session ends (see ``_migrate_agent``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time

from ansible_collections.ctrhost.fleet.plugins.module_utils import (
    _checkpoint,
    _cli,
    _criu,
    _oci,
    _restore,
    _sysinfo,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils import _migrate_agent  # noqa: F401 (shipped)
from ansible_collections.ctrhost.fleet.plugins.module_utils._errors import (
    CommandError,
    ConflictError,
    CtrhostError,
    NotFoundError,
    ValidationError,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils._migrate_ssh import LEASE, Link
from ansible_collections.ctrhost.fleet.plugins.module_utils._paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils._state import ContainerStore
from ansible_collections.ctrhost.fleet.plugins.module_utils._validate import validate_name

MODES = ("cold", "live", "lazy")


class MigrationError(CtrhostError):
    """A migration that did not happen; ``where`` says where the container runs now."""


class Run:
    """State of one migration on the source."""

    def __init__(self, layout, name, spec, mode, dest, hooks):
        self.layout, self.name, self.spec, self.dest = layout, name, spec, dest
        self.mode_requested = mode
        self.mode = mode
        self.fallback = None
        self.hooks = hooks or {}
        self.t_start = time.monotonic()
        self.t_freeze = None
        self.downtime = None
        self.bytes = 0
        self.stats = {}
        self.steps = []
        self.images = None
        self.dumped = False  # the source process is gone (cold dump finished)
        self.link = None
        self.incoming = self.dest_upper = None
        self.upper_snapshot, self.upper_delta = None, None
        self.dest_timings = None
        self.dest_root = None
        self.fence = None  # what the destination did with its copy after a failure
        self.links_down = False  # the source's host veths are down (after the dump)
        self.links = None  # the source's host veths, looked up before the freeze

    def step(self, what):
        self.steps.append(dict(step=what, t=round(time.monotonic() - self.t_start, 3)))
        hook = self.hooks.get(what)
        if hook:
            hook(self)


def _memory_needed(layout, spec, rt, name):
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
    if run.mode_requested == "live":
        if not src_criu["pre_dump"] or not dst_facts.get("pre_dump"):
            run.mode, run.fallback = "cold", "live (pre-copy) is impossible here: %s; used cold " \
                "(stop-and-copy)" % (src_criu["pre_dump_reason"] or "the destination has no dirty "
                                     "memory tracking")
        else:  # pre-dump iterations need soft-dirty tracking; no kernel here has it
            run.mode, run.fallback = "cold", "pre-copy iterations are not implemented; used cold"
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
            check_mode=False, hooks=None):
    """Move container ``name`` to ``dest``; return the module result."""
    layout = Layout(root)
    validate_name(name, "name")
    if mode not in MODES:
        raise ValidationError("mode", "expected one of %s, got %r" % (", ".join(MODES), mode))
    if not dest or not isinstance(dest, str):
        raise ValidationError("dest", "expected the destination host name or address")
    store = ContainerStore(layout)
    spec = store.load(name)
    if spec is None:
        raise NotFoundError("name: container %s does not exist under %s"
                            % (name, layout.containers_dir), field="name")
    src_criu = _criu.discover(criu_path)
    if not src_criu["check"]:
        raise CommandError("criu: %s fails 'criu check': %s" % (src_criu["path"],
                                                               src_criu["check_output"]), [], 1)
    rt = _checkpoint.runtime_for(layout, spec, runtime_path)
    options = dict(leave_running=False, tcp_established=bool(tcp_established),
                   file_locks=bool(file_locks), ext_unix_sk=bool(ext_unix_sk))
    run = Run(layout, name, spec, mode, dest, hooks)
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
            need = _memory_needed(layout, spec, rt, name)
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
            run.link.close()
            if run.links is not None:
                run.links.close()


def _move(run, rt, criu, meta, pre, upper, dest_root, options, timeout, runtime_path, criu_path):
    layout, name, link = run.layout, run.name, run.link
    run.dest_root, run.runtime_path = dest_root, runtime_path
    config = _oci.load_config(os.path.join(layout.container_dir(name), "config.json"))
    try:
        prep = link.call("prepare", root=dest_root, name=name, meta=meta,
                         runtime_path=runtime_path, criu_path=criu_path, config=config,
                         lease=LEASE, source=os.uname().nodename, timeout=120)
        if not prep.get("ok"):
            raise MigrationError("dest: prepare failed on %s: %s" % (run.dest, prep.get("error")))
        run.step("staged")
        run.incoming, run.dest_upper = prep["incoming"], prep["upper"]
        run.upper_snapshot = _tree_state(upper)
        run.bytes += link.rsync(upper, run.dest_upper, timeout)
        run.step("presync")
        if run.spec.get("network"):
            run.links = _restore.HostLinks(run.spec["network"])
        ready = link.call("ready", timeout=30)  # the agent is there: only now freeze
        if not ready.get("ok"):
            raise MigrationError("dest: the agent on %s is not ready (fenced=%s)"
                                 % (run.dest, ready.get("fenced")))
    except Exception as exc:
        run.fence = _fence(run)
        if isinstance(exc, CtrhostError):
            raise MigrationError("migration of %s to %s failed before the freeze: %s; the "
                                 "container runs on source" % (name, run.dest, exc.msg),
                                 where="source", changed=False, fence=run.fence, steps=run.steps)
        raise
    run.images = layout.checkpoint_dir(name, "." + meta["id"])
    shutil.rmtree(run.images, ignore_errors=True)
    for path in (layout.checkpoints_dir, layout.checkpoint_dir(name), run.images):
        os.makedirs(path, mode=0o700, exist_ok=True)
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
            if isinstance(exc, CtrhostError):
                details = dict(exc.details)
                details.update(where=where, mode=run.mode, fallback=run.fallback,
                               steps=run.steps, fence=run.fence)
                raise MigrationError("migration of %s to %s failed: %s; the container runs on %s"
                                     % (name, run.dest, exc.msg, where), **details)
            raise
        answer = dict(pid=None)  # the destination committed; only its answer was lost
    run.step("committed")
    _remove_source(run, rt)
    run.step("source_removed")
    return _result(run, changed=True, preflight=pre, where=run.dest, pid=answer.get("pid"))


def _dump_cmd(rt, criu, name, images, options, extra=()):
    return _checkpoint.dump_command(rt, criu["path"], name, images, images, options, extra)


def _transfer(run, upper, timeout):
    """The one transfer of the frozen window: the images as a tar stream and the rootfs
    delta by rsync, at the same time over the same SSH master."""
    link = run.link
    pair = link.send_tar(run.images, run.incoming + "/images")
    try:
        changed = _tree_state(upper) != run.upper_snapshot
        run.upper_delta = changed
        sent = link.rsync(upper, run.dest_upper, timeout, whole_file=True) if changed else 0
    except BaseException:
        with contextlib.suppress(Exception):
            link.wait_tar(pair, 30)
        raise
    run.bytes += sent + link.wait_tar(pair, timeout)


def _tree_state(path):
    """{relative path: (ctime_ns, size, mode)} of a tree: two equal states mean the
    rootfs delta after the pre-sync is empty (ctime cannot be set back by the container)."""
    out = {}
    for base, dirs, files in os.walk(path):
        for leaf in dirs + files:
            full = os.path.join(base, leaf)
            with contextlib.suppress(OSError):
                st = os.lstat(full)
                out[os.path.relpath(full, path)] = (st.st_ctime_ns, st.st_size, st.st_mode)
    return out


def _cold(run, rt, criu, meta, upper, options, timeout):
    name, link = run.name, run.link
    run.t_freeze = time.monotonic()
    run.step("freeze")
    try:
        _cli.run(_dump_cmd(rt, criu, name, run.images, options), timeout=timeout,
                 msg="checkpoint of %s" % name)
    except CtrhostError as exc:
        raise _checkpoint.dump_failure(exc, run.images, "dump for migration", rt, name, run.spec)
    run.dumped = True
    _source_links_down(run)
    run.step("dumped")
    run.stats.update(_criu.work_stats(run.images))
    _transfer(run, upper, timeout)
    run.step("transferred")
    answer = link.call("restore", lazy=False, timeout=timeout)
    if not answer.get("ok"):
        raise MigrationError("dest: restore failed on %s: %s" % (run.dest, answer.get("error")),
                             cause=answer.get("cause"), criu_log=answer.get("criu_log"))
    run.downtime = time.monotonic() - run.t_freeze
    run.stats["restore"] = answer.get("stats")
    run.dest_timings = answer.get("timings")
    return answer


def _lazy(run, rt, criu, meta, pre, upper, options, timeout):
    name, link = run.name, run.link
    src_port = _free_port()
    dst_port = pre["facts"]["lazy_port"]
    link.forward_remote(dst_port, src_port)
    run.lazy_port = src_port
    rfd, wfd = os.pipe()
    cmd = _dump_cmd(rt, criu, name, run.images, options,
                    ["--lazy-pages", "--page-server", "127.0.0.1:%d" % src_port,
                     "--status-fd", str(wfd)])
    run.t_freeze = time.monotonic()
    run.step("freeze")
    dump = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, pass_fds=(wfd,),
                            env=dict(os.environ, PATH=_cli.search_path()))
    os.close(wfd)
    run.lazy_dump = dump
    try:
        ready = _wait_fd(rfd, timeout)
    finally:
        os.close(rfd)
    if not ready:
        _end_page_server(src_port, dump)
        _out, err = dump.communicate()
        exc = CommandError("lazy dump of %s failed" % name, cmd, dump.returncode,
                           stderr=err.decode("utf-8", "replace"))
        raise _checkpoint.dump_failure(exc, run.images, "lazy dump for migration", rt, name,
                                       run.spec)
    _source_links_down(run)
    run.step("dumped")
    _transfer(run, upper, timeout)
    run.step("transferred")
    answer = link.call("restore", lazy=True, port=dst_port, timeout=timeout)
    if not answer.get("ok"):
        _end_page_server(src_port, dump)
        raise MigrationError("dest: lazy restore failed on %s: %s" % (run.dest, answer.get("error")),
                             cause=answer.get("cause"), criu_log=answer.get("criu_log"))
    run.downtime = time.monotonic() - run.t_freeze
    run.step("running")
    try:
        _out, err = dump.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _end_page_server(src_port, dump)
        _out, err = dump.communicate()
    done = link.call("lazy_wait", timeout=timeout)
    if dump.returncode != 0 or not done.get("ok"):
        exc = CommandError("lazy page transfer failed: %s" % (done.get("error") or "dump rc=%s"
                                                             % dump.returncode),
                           cmd, dump.returncode, stderr=err.decode("utf-8", "replace"))
        raise _checkpoint.dump_failure(exc, run.images, "lazy page transfer", rt, name, run.spec)
    run.dumped = True
    run.stats.update(_criu.work_stats(run.images))
    run.stats["restore"] = answer.get("stats")
    run.dest_timings = answer.get("timings")
    run.stats["lazy_pages"] = (done.get("stats") or {}).get("restore")
    run.step("pages_done")
    return answer


def _end_page_server(port, dump):
    """Make a waiting lazy dump fail cleanly (CRIU then unfreezes and the runtime resumes)."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    try:
        dump.wait(timeout=30)
    except subprocess.TimeoutExpired:
        dump.kill()
        dump.wait()


def _source_links_down(run):
    """The dumped container's host veths down here: its netns no longer answers for
    the addresses the destination is about to take over."""
    with contextlib.suppress(Exception):
        _restore.links_down(run.spec.get("network"), run.links)
        run.links_down = True


def _fence(run, wait=10):
    """Drop the agent session and make sure the destination's uncommitted copy is gone.

    The agent fences itself when its session ends; a new session's ``fence`` waits for
    that (kills the old agent when it hangs) and removes what a killed agent left.
    Returns the destination's state: absent, fenced, committed (it runs there for
    good) or unverified (unreachable: we waited out the agent's lease instead)."""
    link = run.link
    if link is None or link.agent_id is None:
        return "absent"
    old = link.agent_id
    link.drop_agent()
    try:
        if not link.check():
            link.reopen()
        link.start_agent()
        answer = link.call("fence", root=run.dest_root or run.layout.root, name=run.name,
                           agent=old, wait=wait, runtime_path=getattr(run, "runtime_path", None),
                           timeout=wait + 60)
        if answer.get("ok") and answer.get("state") in ("absent", "fenced", "committed"):
            return answer["state"]
    except Exception:  # unreachable: the agent's lease runs out, then it fences itself
        pass
    time.sleep(LEASE + 2)
    return "unverified"


def _recover(run, rt, meta, exc):
    """Make the container run on exactly one host after ``exc``; return where it runs."""
    dump = getattr(run, "lazy_dump", None)
    run.fence = _fence(run)
    run.step("fenced")
    if run.fence == "committed":  # the commit went through, its answer did not come back
        if dump is not None and dump.poll() is None:
            _end_page_server(getattr(run, "lazy_port", 0), dump)
        return run.dest
    if dump is not None and dump.poll() is None:
        _end_page_server(getattr(run, "lazy_port", 0), dump)
    status = _checkpoint.recover_running(rt, run.name, run.spec.get("cgroups_path"))
    if status == "running":
        if run.links_down:
            _restore.links_up(run.spec.get("network"))
        return "source"
    if run.images and os.path.exists(os.path.join(run.images, "inventory.img")) and run.mode != "lazy":
        meta = dict(meta, options=dict(meta.get("options") or {}))
        _restore.restore_images(run.layout, run.name, run.images, meta, created=False)
        _restore.links_up(run.spec.get("network"))
        return "source (restored from the local images)"
    return "nowhere: container %s is stopped; its images are in %s" % (run.name, run.images)


def _remove_source(run, rt):
    from ansible_collections.ctrhost.fleet.plugins.module_utils import _container
    ctx = _container.Ctx(dict(root=run.layout.root, name=run.name), False)
    _container.remove(ctx, run.spec)
    shutil.rmtree(run.images, ignore_errors=True)


def _result(run, changed, preflight, where, pid=None):
    total = time.monotonic() - run.t_start
    return dict(changed=changed, name=run.name, dest=run.dest, mode=run.mode,
                mode_requested=run.mode_requested, fallback=run.fallback,
                downtime=round(run.downtime, 3) if run.downtime is not None else None,
                total_time=round(total, 3), bytes_moved=run.bytes, stats=run.stats,
                where=where, pid=pid, preflight=preflight, steps=run.steps,
                timings=timings(run.steps), dest_timings=run.dest_timings,
                rootfs_delta=run.upper_delta, fence=run.fence,
                kernel=_sysinfo.kernel_release())


def timings(steps):
    """Seconds each step took: {step: time since the previous step ended}."""
    out, last = {}, 0.0
    for entry in steps:
        out[entry["step"]] = round(entry["t"] - last, 3)
        last = entry["t"]
    return out


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_fd(fd, timeout):
    import select
    ready, _w, _x = select.select([fd], [], [], timeout)
    return bool(ready) and os.read(fd, 1) != b""
