# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pre-copy (``mode: live``): memory sent while the container runs, then only the rest.

``iterate`` is the spine, read top to bottom. Each round asks the runtime for a
pre-dump (``runc checkpoint --pre-dump``: CRIU freezes the container for a moment,
takes its pages and resets the kernel's soft-dirty bits, and it runs on) into
``<images>/pre-N``, whose parent is the previous round (``--parent-path ../pre-N-1``:
only the pages dirtied since are written). That directory then streams to the
destination's incoming images, at the same relative place, over the SSH master
(a tar stream, as the frozen window's transfer), and the ``Policy`` says whether
another round is worth it. The final dump (``_migrate_window``) names the last round
as its parent (``--parent-path pre-N``): it writes only what changed since, and the
destination restores from that chain (CRIU's ``parent`` links, relative, resolve
there as here).

The container runs all along, so a failure in here is a failure before the freeze:
the caller fences the destination (which drops what it received) and the container
simply keeps running on the source.
"""

from __future__ import annotations

import glob
import os
import posixpath
import shutil
import time

from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import dump as _checkpoint
from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.criu import reports as _criu
from ansible_collections.ctrhost.fleet.plugins.module_utils.core import units as _units
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CtrhostError, ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.stream import Receiver

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PREFIX = "pre-"

# The convergence policy's knobs: the module option ``precopy`` (suboptions) is this
# table; ``Policy.from_options`` reads the same defaults for library callers.
OPTIONS = dict(
    max_iterations=dict(type="int", default=5),
    dirty_threshold=dict(type="str", default="2M"),
    min_progress=dict(type="int", default=10),
)
# The module option (container_migrate, container_migrate_batch; docs: the PRECOPY fragment).
ARGS = dict(precopy=dict(type="dict", default={}, options=OPTIONS))


class Policy:
    """When to stop pre-dumping and do the final dump.

    Stop when the last round's dirty set is at most ``dirty_threshold`` bytes (it has
    converged: the final dump will be about as small), when it shrank by less than
    ``min_progress`` percent against the round before (the workload dirties memory as
    fast as it is sent; 0 turns this rule off), or after ``max_iterations`` rounds."""

    def __init__(self, max_iterations, dirty_threshold, min_progress):
        self.max_iterations = max_iterations
        self.dirty_threshold = dirty_threshold
        self.min_progress = min_progress

    @classmethod
    def from_options(cls, options):
        """``options`` as the module gives it (None or a dict of ``OPTIONS``); checked."""
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise ValidationError("precopy", "expected a dict with %s, got %r"
                                  % (", ".join(sorted(OPTIONS)), options))
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValidationError("precopy", "unknown key(s) %s; expected %s"
                                  % (", ".join(unknown), ", ".join(sorted(OPTIONS))))
        values = {key: OPTIONS[key]["default"] if options.get(key) is None else options[key]
                  for key in OPTIONS}
        maxi = values["max_iterations"]
        if isinstance(maxi, bool) or not isinstance(maxi, int) or not 1 <= maxi <= 100:
            raise ValidationError("precopy.max_iterations",
                                  "expected a whole number from 1 to 100, got %r" % (maxi,))
        progress = values["min_progress"]
        if isinstance(progress, bool) or not isinstance(progress, int) or not 0 <= progress <= 100:
            raise ValidationError("precopy.min_progress",
                                  "expected a percentage from 0 to 100, got %r" % (progress,))
        threshold = _units.parse_size(values["dirty_threshold"], "precopy.dirty_threshold")
        return cls(maxi, threshold, progress)

    def as_dict(self):
        return dict(max_iterations=self.max_iterations, dirty_threshold=self.dirty_threshold,
                    min_progress=self.min_progress)

    def verdict(self, rounds):
        """None to go on after ``rounds`` (each with ``bytes_dirty``), else why to stop:
        (reason, sentence), reason one of converged, not_shrinking, max_iterations."""
        last = rounds[-1]["bytes_dirty"]
        if last <= self.dirty_threshold:
            return "converged", "%d bytes dirty, at most the threshold of %d" % (
                last, self.dirty_threshold)
        if len(rounds) > 1 and self.min_progress:
            before = rounds[-2]["bytes_dirty"]
            if last * 100 > before * (100 - self.min_progress):
                return "not_shrinking", "%d bytes dirty after %d: shrank by less than %d%%" % (
                    last, before, self.min_progress)
        if len(rounds) >= self.max_iterations:
            return "max_iterations", "%d rounds, the maximum" % len(rounds)
        return None


def iterate(run, rt, criu, options, timeout):
    """Pre-dump rounds while the container runs, each streamed to the destination as
    soon as it is written, until ``run.policy`` stops them. Records each round in
    ``run.iterations`` and the stop in ``run.precopy``; returns the final dump's
    ``--parent-path`` (relative to ``run.images``)."""
    parent = None
    while True:
        number = len(run.iterations) + 1
        leaf = PREFIX + str(number)
        t0 = time.monotonic()
        stats = pre_dump(run, rt, criu, leaf, parent, options, timeout)
        t1 = time.monotonic()
        sent = ship(run, leaf, timeout)
        run.bytes += sent
        t2 = time.monotonic()
        pages = stats.get("pages_written")
        if pages is None:  # no stats image: count what was written
            pages = _pages_bytes(os.path.join(run.images, leaf)) // PAGE_SIZE
        run.iterations.append(dict(
            iteration=number, pages_written=pages, bytes_dirty=pages * PAGE_SIZE,
            bytes_sent=sent, frozen_time=stats.get("frozen_time"),
            dump_seconds=round(t1 - t0, 3), transfer_seconds=round(t2 - t1, 3),
            seconds=round(t2 - t0, 3)))
        run.step("iteration%d" % number)
        stop = run.policy.verdict(run.iterations)
        if stop is not None:
            run.precopy = dict(iterations=number, stop=stop[0], why=stop[1],
                               policy=run.policy.as_dict())
            return leaf
        parent = posixpath.join("..", leaf)


def pre_dump(run, rt, criu, leaf, parent, options, timeout):
    """One ``runtime checkpoint --pre-dump`` into ``<images>/<leaf>``; its CRIU stats.
    A failure keeps the dump log (``last-migrate-failure.log``) and leaves the container
    running (``_checkpoint.dump_failure`` thaws it if CRIU left it frozen)."""
    target = os.path.join(run.images, leaf)
    os.makedirs(target, mode=0o700)
    extra = ["--pre-dump"] + (["--parent-path", parent] if parent else [])
    cmd = _checkpoint.dump_command(rt, criu["path"], run.name, target, target, options, extra)
    try:
        _cli.run(cmd, timeout=timeout, msg="pre-dump %s of %s" % (leaf, run.name))
    except CtrhostError as exc:
        failure = _checkpoint.dump_failure(exc, target, "pre-dump %s for migration" % leaf, rt,
                                           run.name, run.spec)
        log = os.path.join(target, "dump.log")
        if os.path.exists(log):
            kept = run.layout.checkpoint_dir(run.name, "last-migrate-failure.log")
            os.makedirs(os.path.dirname(kept), mode=0o700, exist_ok=True)
            shutil.copy2(log, kept)
            failure.details["dump_log"] = kept
        raise failure
    return _criu.work_stats(target).get("dump") or {}


def ship(run, leaf, timeout):
    """Stream ``<images>/<leaf>`` (its files and its ``parent`` link) to the same place
    under the destination's incoming images; returns the bytes sent."""
    source = os.path.join(run.images, leaf)
    dest = posixpath.join(run.incoming, "images", leaf)
    recv = Receiver(run.link, run.incoming)
    try:
        recv.wait_ready()
        recv.add(source, dest)
        recv.add_dir_files(source, dest)
        return recv.finish(timeout)
    finally:
        recv.close()


def _pages_bytes(path):
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(path, "pages-*.img")))
