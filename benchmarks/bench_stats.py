# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Statistics and the markdown table of the benchmark harness (no I/O here).

A result set is ``{"operations": [op, ...]}`` where each op is::

    {"key": "create_start", "label": "create+start", "unit": "s",
     "sides": {"ours": [0.21, 0.19, ...], "podman": [...], "lxc": [...]},
     "target": {"kind": "ratio", "peer": "podman", "max": 0.5}   # or
     "target": {"kind": "abs", "side": "ours", "max": 1.5}       # or None
     "note": "..."}

Samples are numbers; ``None`` samples (a failed repetition) are dropped and
counted in ``failed``.
"""

from __future__ import annotations

import math
import statistics

SIDES = ("ours", "podman", "lxc")
SIDE_TITLES = {"ours": "ctrhost.fleet", "podman": "Podman", "lxc": "LXC"}


def summarize(samples):
    """{n, failed, median, min, max, mean, stdev} of ``samples`` (None: a failed run)."""
    values = [float(v) for v in samples or () if v is not None and not _nan(v)]
    failed = len([v for v in samples or () if v is None or _nan(v)])
    if not values:
        return dict(n=0, failed=failed, median=None, min=None, max=None, mean=None, stdev=None)
    return dict(n=len(values), failed=failed, median=statistics.median(values),
                min=min(values), max=max(values), mean=statistics.fmean(values),
                stdev=statistics.stdev(values) if len(values) > 1 else 0.0)


def _nan(value):
    return isinstance(value, float) and math.isnan(value)


def ratio(ours, peer):
    """ours/peer of two medians; None when either is missing or the peer is 0."""
    if ours is None or peer is None or peer == 0:
        return None
    return ours / peer


def evaluate_target(target, stats):
    """(met: bool or None, text) of an op's target given {side: summary}."""
    if not target:
        return None, ""
    ours = (stats.get("ours") or {}).get("median")
    if target["kind"] == "ratio":
        peer = (stats.get(target["peer"]) or {}).get("median")
        value = ratio(ours, peer)
        text = "<= %sx %s" % (_num(target["max"]), SIDE_TITLES.get(target["peer"], target["peer"]))
    else:
        value = ours
        text = "< %s %s" % (_num(target["max"]), target.get("unit", "s"))
    if value is None:
        return None, text
    return value <= target["max"], text


def summarize_op(op):
    """The op with ``stats`` {side: summary}, ``ratios`` {peer: ours/peer} and ``met``."""
    stats = {side: summarize(samples) for side, samples in (op.get("sides") or {}).items()}
    ratios = {side: ratio((stats.get("ours") or {}).get("median"), s["median"])
              for side, s in stats.items() if side != "ours"}
    met, target_text = evaluate_target(op.get("target"), stats)
    return dict(op, stats=stats, ratios=ratios, met=met, target_text=target_text)


def _num(value):
    return ("%g" % value) if isinstance(value, (int, float)) else str(value)


def fmt_value(value, unit):
    """A number for the table: seconds with 2-3 significant decimals, MiB as integers."""
    if value is None:
        return "-"
    if unit == "s":
        if value >= 100:
            return "%.0f" % value
        if value >= 10:
            return "%.1f" % value
        if value >= 1:
            return "%.2f" % value
        return "%.3f" % value
    if unit == "MiB":
        return "%.0f" % value if value >= 10 else "%.1f" % value
    return "%g" % value


def fmt_cell(summary, unit):
    """``median (min-max)`` or ``-``; a failed repetition count is appended."""
    if not summary or summary.get("n", 0) == 0:
        if summary and summary.get("failed"):
            return "failed x%d" % summary["failed"]
        return "-"
    text = fmt_value(summary["median"], unit)
    if summary["n"] > 1:
        text += " (%s-%s)" % (fmt_value(summary["min"], unit), fmt_value(summary["max"], unit))
    if summary.get("failed"):
        text += " +%d failed" % summary["failed"]
    return text


def fmt_ratio(value):
    return "-" if value is None else "%.2fx" % value


def peers_present(ops):
    """Peer sides that have at least one sample somewhere, in SIDES order."""
    present = set()
    for op in ops:
        for side, samples in (op.get("sides") or {}).items():
            if side != "ours" and samples:
                present.add(side)
    return [s for s in SIDES if s in present]


def markdown_table(ops):
    """The table of medians (min-max), ratios ours/peer and targets; ``ops`` unsummarized."""
    summarized = [summarize_op(op) for op in ops]
    peers = peers_present(ops)
    head = ["operation", "unit", SIDE_TITLES["ours"]]
    for peer in peers:
        head += [SIDE_TITLES[peer], "ours/%s" % SIDE_TITLES[peer]]
    head += ["target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for op in summarized:
        unit = op.get("unit", "s")
        row = [op.get("label", op["key"]), unit, fmt_cell(op["stats"].get("ours"), unit)]
        for peer in peers:
            row += [fmt_cell(op["stats"].get(peer), unit), fmt_ratio(op["ratios"].get(peer))]
        met = {True: "yes", False: "**no**", None: "-" if op.get("target") else ""}[op["met"]]
        row += [op["target_text"], met]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def notes_markdown(ops, notes=()):
    """Footnotes: per-op notes then general notes, as a markdown list."""
    out = ["- %s: %s" % (op.get("label", op["key"]), op["note"]) for op in ops if op.get("note")]
    out += ["- %s" % note for note in notes]
    return "\n".join(out) + ("\n" if out else "")


def report_json(ops, **extra):
    """The JSON document: raw samples plus the summaries the table shows."""
    doc = dict(extra)
    doc["operations"] = [summarize_op(op) for op in ops]
    return doc
