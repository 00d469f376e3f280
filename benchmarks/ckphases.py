# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The checkpoint rows split into CRIU's phases, from CRIU's own statistics (``stats-dump``).

Each checkpoint of the ``checkpoint`` group (idle and 256 MB) adds one sample per phase:

- **freezing**: from the freeze request to every task seized. Ours freezes the cgroup
  itself before CRIU starts (``_dumpwindow.freeze_first``); that time is added to CRIU's
  ``freezing_time`` so the rows compare the same span.
- **frozen**: from the tasks seized to the dump's end (``frozen_time``), the memory
  phases included.
- **memdump**: the memory dump, its write included (``memdump_time``).
- **memwrite**: writing the pages into the images (``memwrite_time``).

Ours reads them from the checkpoint's result (``stats``, seconds; ``images.freeze_time``),
Podman from ``podman container checkpoint --print-stats`` (``criu_statistics``,
microseconds). Values are milliseconds.
"""

from __future__ import annotations

import json

PHASES = ("freezing", "frozen", "memdump", "memwrite")
WORKLOADS = (("idle", "idle"), ("mem", "256 MB"))


def key(workload, phase):
    return "ckphase_%s_%s" % (workload, phase)


def ops(workload):
    """The rows (key, label, unit, target) of ``workload``'s phases, after its checkpoint row."""
    label = dict(WORKLOADS)[workload]
    return tuple((key(workload, phase), "checkpoint %s: CRIU %s" % (label, phase), "ms", None)
                 for phase in PHASES)


NOTES = {
    key("idle", "freezing"): "CRIU's own statistics (stats-dump), per phase (benchmarks/ckphases.py); "
                             "ours: its freeze before CRIU plus CRIU's freezing_time",
    key("mem", "memwrite"): "ours writes the images to the run directory's tmpfs when they fit "
                            "and moves them to disk after the dump (in the checkpoint row, not here)",
}


def from_ours(result):
    """{phase: ms} of our checkpoint's result."""
    stats = (result or {}).get("stats") or {}
    images = ((result or {}).get("checkpoint") or {}).get("images") or {}
    out = {}
    for phase in PHASES:
        value = stats.get(phase + "_time")
        if isinstance(value, (int, float)):
            out[phase] = value * 1000.0
    if "freezing" in out:
        out["freezing"] += (images.get("freeze_time") or 0.0) * 1000.0
    return out


def from_podman(text):
    """{phase: ms} of ``podman container checkpoint --print-stats``'s output."""
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    stats = ((doc.get("container_statistics") or [{}])[0] or {}).get("criu_statistics") or {}
    return {phase: stats[phase + "_time"] / 1000.0 for phase in PHASES
            if isinstance(stats.get(phase + "_time"), (int, float))}


def record(res, workload, side, phases):
    """One sample per phase of one checkpoint (a phase CRIU did not report: no sample)."""
    for phase, value in phases.items():
        res.add(key(workload, phase), side, round(value, 2))
