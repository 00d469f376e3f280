# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""State of one migration on the source (``Run``), its error and its result."""

from __future__ import annotations

import time

from ansible_collections.ctrhost.fleet.plugins.module_utils import _sysinfo
from ansible_collections.ctrhost.fleet.plugins.module_utils._errors import CtrhostError


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
        self.dumped = False  # the dump finished (the source stays frozen, intact)
        self.frozen = False  # the source was frozen for the dump
        self.before_dump = None  # _checkpoint.inspect's facts
        self.errors = []  # what failed, in order: {where, msg}
        self.link = None
        self.incoming = self.dest_upper = None
        self.upper_snapshot, self.upper_delta = None, None
        self.dest_timings = None
        self.dest_root = None
        self.fence = None  # what the destination did with its copy after a failure
        self.links_down = False  # the source's host veths are down (after the dump)
        self.links = None  # the source's host veths, looked up before the freeze
        self.receiver = None  # the transfer's receiver on the destination (_migrate_stream)
        self.policy = None  # live mode: when to stop pre-dumping (_migrate_precopy.Policy)
        self.iterations = []  # live mode: each pre-dump round (pages, bytes, seconds)
        self.precopy = None  # live mode: why the rounds stopped, after how many
        self.parent = None  # live mode: the final dump's --parent-path (the last round)

    def step(self, what):
        self.steps.append(dict(step=what, t=round(time.monotonic() - self.t_start, 3)))
        hook = self.hooks.get(what)
        if hook:
            hook(self)


def _result(run, changed, preflight, where, pid=None):
    total = time.monotonic() - run.t_start
    return dict(changed=changed, name=run.name, dest=run.dest, mode=run.mode,
                mode_requested=run.mode_requested, fallback=run.fallback,
                downtime=round(run.downtime, 3) if run.downtime is not None else None,
                total_time=round(total, 3), bytes_moved=run.bytes, stats=run.stats,
                where=where, pid=pid, preflight=preflight, steps=run.steps,
                timings=timings(run.steps), dest_timings=run.dest_timings,
                rootfs_delta=run.upper_delta, fence=run.fence,
                iterations=run.iterations, precopy=_precopy(run),
                kernel=_sysinfo.kernel_release())


def _precopy(run):
    """Live mode's stop of the rounds plus what the final dump wrote and how long it froze."""
    if run.precopy is None:
        return None
    final = run.stats.get("dump") or {}
    return dict(run.precopy, final_pages_written=final.get("pages_written"),
                final_frozen_time=final.get("frozen_time"))


def timings(steps):
    """Seconds each step took: {step: time since the previous step ended}."""
    out, last = {}, 0.0
    for entry in steps:
        out[entry["step"]] = round(entry["t"] - last, 3)
        last = entry["t"]
    return out
