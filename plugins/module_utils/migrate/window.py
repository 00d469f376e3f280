# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The frozen window of a migration, on the source: freeze, dump, transfer, restore there.

The source is frozen first (its cgroup's freezer, ``_dumpwindow.freeze_first``) and its
host-side veths go down, so that from then on nothing of it runs and its network
stack accepts nothing. The dump leaves it that way (``--leave-running`` on a frozen
cgroup: CRIU returns the freezer to the state it found), with every process
intact, until the destination has committed; only then is it killed (still
frozen). Whatever fails before, thawing it is the whole recovery: no restore.

``cold`` dumps to local images and ships them (in live mode only what changed since
the last pre-dump, ``_migrate_precopy``); ``lazy`` dumps all but the
memory pages, which the destination's ``criu lazy-pages`` pulls from the dump's
page server through an SSH port forward after the restore.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import socket
import subprocess
import time

from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import oci as _ocifile
from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import dump as _checkpoint
from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.criu import reports as _criu
from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import window as _dumpwindow
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import stream as _migrate_stream
from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import restore as _restore
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.preflight import free_port
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CommandError, CtrhostError
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.state import MigrationError


def _dump_cmd(rt, criu, name, images, options, extra=()):
    return _checkpoint.dump_command(rt, criu["path"], name, images, images, options, extra)


def _transfer(run, upper, timeout):
    """The one transfer of the frozen window: the images and the rootfs delta as one tar
    stream into the receiver started before the freeze. A delta tar cannot carry
    exactly (deletions, xattrs, hard links) goes by rsync after it."""
    recv, run.receiver = run.receiver, None
    pages, run.pages = run.pages, None
    t0 = time.monotonic()
    try:
        sent_pages = pages.finish(timeout) if pages is not None else {}
        tp = time.monotonic()
        changed = _migrate_stream.delta(upper, run.upper_snapshot, tree_state(upper))
        run.upper_delta = changed is None or bool(changed)
        t1 = time.monotonic()
        recv.add_dir_files(run.images, posixpath.join(run.incoming, "images"), skip=sent_pages)
        for rel in changed or ():
            recv.add(os.path.join(upper, rel), posixpath.join(run.dest_upper, rel))
        t2 = time.monotonic()
        sent = recv.finish(timeout)
    finally:
        recv.close()
        if pages is not None:
            pages.close()
    run.stats["transfer"] = dict(pages_tail=round(tp - t0, 3), delta_scan=round(t1 - tp, 3),
                                 stream=round(t2 - t1, 3), finish=round(time.monotonic() - t2, 3),
                                 bytes=sent, pages_bytes=sum(sent_pages.values()))
    sent += sum(sent_pages.values())
    if changed is None:
        sent += run.link.rsync(upper, run.dest_upper, timeout, whole_file=True)
    run.stats["transfer"].update(rsync=changed is None, rootfs_entries=len(changed or ()))
    run.bytes += sent


def tree_state(path):
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


def _freeze(run, rt):
    """The start of the frozen window: the source's processes stop, its veths go down."""
    run.t_freeze = time.monotonic()
    run.step("freeze")
    # The cgroup frozen directly (polled every millisecond) rather than by a runtime
    # process; the runtime's pause (which retries a freezer that does not settle) when
    # that does not work out.
    cgroups_path = _ocifile.cgroups_path_of(run.spec, run.name)
    if _dumpwindow.freeze_first(rt, cgroups_path, dict(status="running")) is None:
        rt.pause(run.name)
    run.frozen = True
    _source_links_down(run)


def _restore_request(run, options, **extra):
    """What the destination's restore must know of the dump (it was made after the
    destination was prepared): the options used and the cgroup tree."""
    return dict(extra, meta=dict(options=dict(options),
                                 cgroup_tree=(run.before_dump or {}).get("cgroup_tree")))


def _restore_failed(run, answer, what):
    return MigrationError("dest: %s failed on %s: %s" % (what, run.dest, answer.get("error")),
                          cause=answer.get("cause"), criu_log=answer.get("criu_log"),
                          dest_log=answer.get("log"))


def cold(run, rt, criu, upper, options, timeout):
    """Stop-and-copy (and live mode's final dump): freeze, dump to local images (in live
    mode only what changed since the last pre-dump), ship them, restore there."""
    name = run.name
    parent = ["--parent-path", run.parent] if run.parent else []  # live: only the delta
    _freeze(run, rt)
    if run.pages is not None:
        run.pages.start(run.images)
    try:
        _cli.run(_dump_cmd(rt, criu, name, run.images, options, parent), timeout=timeout,
                 msg="checkpoint of %s" % name)
    except CtrhostError as exc:
        if run.pages is not None:
            run.pages.stop()
        raise _checkpoint.dump_failure(exc, run.images, "dump for migration", rt, name, run.spec)
    run.dumped = True
    run.step("dumped")
    run.stats.update(_criu.work_stats(run.images))
    _transfer(run, upper, timeout)
    run.step("transferred")
    answer = run.link.call("restore", lazy=False, timeout=timeout, **_restore_request(run, options))
    if not answer.get("ok"):
        raise _restore_failed(run, answer, "restore")
    run.downtime = time.monotonic() - run.t_freeze
    run.stats["restore"] = answer.get("stats")
    run.dest_timings = answer.get("timings")
    return answer


def lazy(run, rt, criu, pre, upper, options, timeout):
    """Post-copy: dump all but the memory pages and restore there at once; the
    destination's ``criu lazy-pages`` then pulls the pages from this host's page server."""
    dst_port = pre["facts"]["lazy_port"]
    cmd = _start_lazy_dump(run, rt, criu, options, dst_port, timeout)
    run.step("dumped")
    _transfer(run, upper, timeout)
    run.step("transferred")
    answer = run.link.call("restore", lazy=True, port=dst_port, timeout=timeout,
                           **_restore_request(run, options))
    if not answer.get("ok"):
        end_page_server(run.lazy_port, run.lazy_dump)
        raise _restore_failed(run, answer, "lazy restore")
    run.downtime = time.monotonic() - run.t_freeze
    run.step("running")
    _pages_done(run, rt, cmd, answer, timeout)
    run.step("pages_done")
    return answer


def _start_lazy_dump(run, rt, criu, options, dst_port, timeout):
    """The destination's ``dst_port`` forwarded to a page server here, the freeze, the
    dump started; returns its command once it serves the pages (else raises)."""
    run.lazy_port = free_port()
    run.link.forward_remote(dst_port, run.lazy_port)
    rfd, wfd = os.pipe()
    cmd = _dump_cmd(rt, criu, run.name, run.images, options,
                    ["--lazy-pages", "--page-server", "127.0.0.1:%d" % run.lazy_port,
                     "--status-fd", str(wfd)])
    _freeze(run, rt)
    run.lazy_dump = dump = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, pass_fds=(wfd,),
                                            env=dict(os.environ, PATH=_cli.search_path()))
    os.close(wfd)
    try:
        ready = _wait_fd(rfd, timeout)
    finally:
        os.close(rfd)
    if not ready:
        end_page_server(run.lazy_port, dump)
        _out, err = dump.communicate()
        exc = CommandError("lazy dump of %s failed" % run.name, cmd, dump.returncode,
                           stderr=err.decode("utf-8", "replace"))
        raise _checkpoint.dump_failure(exc, run.images, "lazy dump for migration", rt, run.name,
                                       run.spec)
    return cmd


def _pages_done(run, rt, cmd, answer, timeout):
    """After the lazy restore: wait until every page went over, then record the stats."""
    dump = run.lazy_dump
    try:
        _out, err = dump.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        end_page_server(run.lazy_port, dump)
        _out, err = dump.communicate()
    done = run.link.call("lazy_wait", timeout=timeout)
    if dump.returncode != 0 or not done.get("ok"):
        exc = CommandError("lazy page transfer failed: %s" % (done.get("error") or "dump rc=%s"
                                                              % dump.returncode),
                           cmd, dump.returncode, stderr=err.decode("utf-8", "replace"))
        raise _checkpoint.dump_failure(exc, run.images, "lazy page transfer", rt, run.name, run.spec)
    run.dumped = True
    run.stats.update(_criu.work_stats(run.images))
    run.stats["dump"] = _criu.lazy_dump_stats(run.stats.get("dump"), run.downtime)
    run.stats["restore"] = answer.get("stats")
    run.dest_timings = answer.get("timings")
    run.stats["lazy_pages"] = (done.get("stats") or {}).get("restore")


def end_page_server(port, dump):
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


def _wait_fd(fd, timeout):
    import select
    ready, _w, _x = select.select([fd], [], [], timeout)
    return bool(ready) and os.read(fd, 1) != b""
