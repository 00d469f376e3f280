# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""State of one migration on the source (``Run``), its error and its result."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import sysinfo as _sysinfo
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CtrhostError


class MigrationError(CtrhostError):
    """A migration that did not happen; ``where`` says where the container runs now."""


@dataclasses.dataclass(eq=False)
class Run:
    """State of one migration on the source: every field it ever has, declared here."""

    # -- what was asked
    layout: Any  # _paths.Layout of the source
    name: str
    spec: dict  # the container's stored spec
    mode_requested: str
    dest: str
    hooks: dict | None = None  # {step: callable(run)}, called by ``step``
    policy: Any = None  # live mode: when to stop pre-dumping (_migrate_precopy.Policy)
    dest_root: str | None = None  # the destination's root
    runtime_path: str | None = None
    criu_path: str | None = None
    # -- what was decided
    mode: str | None = None  # the mode used (cold when the requested one is impossible)
    fallback: str | None = None  # why the requested mode was not used
    # -- timing and what moved
    t_start: float = dataclasses.field(default_factory=time.monotonic)
    t_freeze: float | None = None
    downtime: float | None = None
    bytes: int = 0
    stats: dict = dataclasses.field(default_factory=dict)
    steps: list = dataclasses.field(default_factory=list)
    errors: list = dataclasses.field(default_factory=list)  # what failed, in order: {where, msg}
    # -- the connection to the destination
    link: Any = None  # _migrate_ssh.Link
    receiver: Any = None  # the transfer's receiver on the destination (_migrate_stream)
    pages: Any = None  # cold: the page images' stream during the dump (_migrate_pages)
    fence: str | None = None  # what the destination did with its copy after a failure
    incoming: str | None = None  # the destination's incoming directory (images/ under it)
    dest_upper: str | None = None  # the destination's rootfs upper layer
    dest_timings: dict | None = None
    # -- the source's copy
    images: str | None = None  # the local image directory
    before_dump: dict | None = None  # _checkpoint.inspect's facts
    upper_snapshot: dict | None = None  # the rootfs upper layer at the pre-sync (tree_state)
    upper_delta: bool | None = None  # whether the frozen window sent rootfs changes
    frozen: bool = False  # the source was frozen for the dump
    dumped: bool = False  # the dump finished (the source stays frozen, intact)
    links: Any = None  # the source's host veths, looked up before the freeze
    links_down: bool = False  # the source's host veths are down (after the dump)
    # -- live mode (pre-copy)
    iterations: list = dataclasses.field(default_factory=list)  # each pre-dump round
    precopy: dict | None = None  # why the rounds stopped, after how many
    parent: str | None = None  # the final dump's --parent-path (the last round)
    # -- lazy mode (post-copy)
    lazy_port: int | None = None  # the source's page server port
    lazy_dump: Any = None  # the lazy dump's process (subprocess.Popen)

    def __post_init__(self):
        self.hooks = self.hooks or {}
        self.mode = self.mode or self.mode_requested

    def step(self, what):
        self.steps.append(dict(step=what, t=round(time.monotonic() - self.t_start, 3)))
        hook = self.hooks.get(what)
        if hook:
            hook(self)


def result(run, changed, preflight, where, pid=None):
    """The module result of ``run``."""
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
