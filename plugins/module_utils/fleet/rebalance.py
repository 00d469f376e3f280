# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which containers to move so that every host is under the operator's thresholds.

Pure Python, no Ansible: the ``rebalance_plan`` filter is a thin wrapper around ``plan``.

* A host's load is what ``_placement`` counts: each container's declared memory limit
  (else its current memory usage) and cpu limit, summed, as fractions of the host's
  memory and cpus. A host is over when either fraction passes its threshold.
* Only ``active`` hosts take part, as sources and as destinations: a cordoned, draining,
  drained or upgrading host (or one whose facts failed) is left alone entirely.
* Fewest moves, greedily, per over host (the most loaded first): when one container
  alone removes the whole excess and fits elsewhere, the smallest such one moves; else
  the one that removes most of the excess, and again. A move never brings its
  destination over a threshold nor past the placement bounds (``memory_headroom``,
  ``cpu_overcommit``), so nothing is ever over-committed; the destination is the
  least loaded after the move (the ``placement`` filter's order).
* A host that cannot be brought under (nothing fits elsewhere) is reported in
  ``unresolved`` with what is left over; the moves that help are still planned.
* Hosts already under their thresholds give no move. The same input gives the same plan.
* Destinations are found without trying every host (``_placement.LoadIndex``), and only
  for the candidates in their order of preference: a skewed fleet of 1,000 hosts and
  20,000 containers is planned in well under a second (``benchmarks/scale_plan.py``).
"""

from __future__ import annotations

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.fleet.placement import (
    CPU_UNITS,
    DEFAULT_CPU_OVERCOMMIT,
    DEFAULT_MEMORY_HEADROOM,
    LoadIndex,
    check_options,
    human,
    normalise_container,
    normalise_host,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.units import parse_size


def _fraction(value, field):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValidationError(field, "expected a fraction in (0, 1], got %r" % (value,)) from None
    if not 0 < value <= 1:
        raise ValidationError(field, "expected a fraction in (0, 1], got %r" % (value,))
    return float(value)


def _host(name, info, containers, headroom, overcommit, mem_thr, cpu_thr):
    rec = normalise_host(name, info, headroom, overcommit)
    if not isinstance(containers, list):
        raise ValidationError("containers[%s]" % name, "expected the host's container_info entries (a list), got %r"
                              % (containers,))
    rec["ctrs"] = [normalise_container(item, index) for index, item in enumerate(containers)]
    if not rec["excluded"]:  # the containers counted as placement counts them
        rec["memory_used"] = sum(c["memory"] for c in rec["ctrs"])
        rec["cpu_used"] = sum(c["cpus"] for c in rec["ctrs"])
        rec["containers"] = len(rec["ctrs"])
    total = parse_size(info["memory_total"], "hosts[%s].memory_total" % name) if info.get("memory_total") else 0
    cpus = float(info.get("cpus") or 0)
    rec["memory_total"], rec["cpus"] = total, cpus
    # What a host may hold: under its thresholds and within the placement bounds.
    rec["memory_limit"] = min(int(total * mem_thr), rec["memory_capacity"])
    rec["cpu_limit"] = min(int(cpus * cpu_thr * CPU_UNITS + 1e-6), rec["cpu_capacity"])
    return rec


def _loads(rec):
    mem = rec["memory_used"] / rec["memory_total"] if rec["memory_total"] else 0.0
    cpu = rec["cpu_used"] / (rec["cpus"] * CPU_UNITS) if rec["cpus"] else 0.0
    return round(mem, 4), round(cpu, 4)


def _excess(rec, mem_thr, cpu_thr):
    """(bytes, cpu units) above the thresholds (0 when under)."""
    return (max(0, rec["memory_used"] - int(rec["memory_total"] * mem_thr)),
            max(0, rec["cpu_used"] - int(rec["cpus"] * cpu_thr * CPU_UNITS + 1e-6)))


def _room(rec, ctr):
    return (rec["memory_used"] + ctr["memory"] <= rec["memory_limit"]
            and rec["cpu_used"] + ctr["cpus"] <= rec["cpu_limit"])


def _after(rec, ctr):
    mem = (rec["memory_used"] + ctr["memory"]) / rec["memory_total"] if rec["memory_total"] else 1.0
    cpu = (rec["cpu_used"] + ctr["cpus"]) / (rec["cpus"] * CPU_UNITS) if rec["cpus"] else 1.0
    return (round(max(mem, cpu), 9), round(min(mem, cpu), 9), rec["containers"], rec["name"])


def _denominators(rec):
    return rec["memory_total"], rec["cpus"] * CPU_UNITS


def _pick(rec, index, excess):
    """(container, destination) of the next move off ``rec``, or (None, None). Destinations
    are looked up (``LoadIndex``) in the order of preference, only until one is found."""
    ex_mem, ex_cpu = excess

    def size(c):
        return (c["memory"] / float(rec["memory_total"] or 1) + c["cpus"] / float(rec["cpus"] * CPU_UNITS or 1),
                c["name"])

    def gain(c):
        return (-(min(c["memory"], ex_mem) / float(ex_mem or 1) + min(c["cpus"], ex_cpu) / float(ex_cpu or 1)),
                size(c))
    # the smallest that removes the whole excess and fits elsewhere, else the one that removes most
    whole = [c for c in rec["ctrs"] if c["memory"] >= ex_mem and c["cpus"] >= ex_cpu]
    for ctr in sorted(whole, key=size):
        dest = index.best(ctr, skip=rec)
        if dest is not None:
            return ctr, dest
    for ctr in sorted(rec["ctrs"], key=gain):
        dest = index.best(ctr, skip=rec)
        if dest is not None:
            return (ctr, dest) if gain(ctr)[0] < 0 else (None, None)
    return None, None


def plan(hosts, containers, memory_threshold, cpu_threshold, memory_headroom=DEFAULT_MEMORY_HEADROOM,
         cpu_overcommit=DEFAULT_CPU_OVERCOMMIT):
    """``hosts``: host -> host_info result; ``containers``: host -> container_info entries.

    Returns {moves: [{name, source, dest, memory, cpus}], hosts: {host: {before, after,
    over_before, over_after, excluded}}, unresolved: [text]}."""
    mem_thr = _fraction(memory_threshold, "memory_threshold")
    cpu_thr = _fraction(cpu_threshold, "cpu_threshold")
    if not isinstance(hosts, dict):
        raise ValidationError("hosts", "expected a mapping of host name to host_info result, got %r" % (hosts,))
    if not isinstance(containers, dict):
        raise ValidationError("containers", "expected a mapping of host name to container_info entries, got %r"
                              % (containers,))
    headroom, overcommit = check_options(memory_headroom, cpu_overcommit)
    records = [_host(name, hosts[name], containers.get(name, []), headroom, overcommit, mem_thr, cpu_thr)
               for name in sorted(hosts)]
    before = {r["name"]: _loads(r) for r in records}
    over_before = {r["name"]: not r["excluded"] and any(_excess(r, mem_thr, cpu_thr)) for r in records}
    moves, unresolved = [], []
    index = LoadIndex([r for r in records if not r["excluded"]], _denominators, _room, _after)
    for rec in sorted((r for r in records if over_before[r["name"]]), key=lambda r: (-max(_loads(r)), r["name"])):
        while any(_excess(rec, mem_thr, cpu_thr)):
            ctr, dest = _pick(rec, index, _excess(rec, mem_thr, cpu_thr))
            if ctr is None:
                ex_mem, ex_cpu = _excess(rec, mem_thr, cpu_thr)
                unresolved.append("%s: still %d bytes of memory and %.2f cpus over its thresholds; nothing more "
                                  "fits on another active host" % (rec["name"], ex_mem, ex_cpu / CPU_UNITS))
                break
            rec["ctrs"].remove(ctr)
            for r, sign in ((rec, -1), (dest, 1)):
                index.remove(r)
                r["memory_used"] += sign * ctr["memory"]
                r["cpu_used"] += sign * ctr["cpus"]
                r["containers"] += sign
                index.add(r)
            dest["ctrs"].append(dict(ctr, moved=True))
            moves.append(dict(name=ctr["name"], source=rec["name"], dest=dest["name"], memory=ctr["memory"],
                              cpus=ctr["cpus"] / float(CPU_UNITS)))
    report = {}
    for r in records:
        mem, cpu = _loads(r)
        report[r["name"]] = dict(before=dict(memory=before[r["name"]][0], cpu=before[r["name"]][1]),
                                 after=dict(memory=mem, cpu=cpu),
                                 over_before=over_before[r["name"]],
                                 over_after=not r["excluded"] and any(_excess(r, mem_thr, cpu_thr)),
                                 excluded=r["excluded"])
    return dict(moves=moves, hosts=report, unresolved=unresolved, lines=lines(moves, report, unresolved))


def lines(moves, report, unresolved):
    """The plan for people: one line per move, one per host (load before -> after), the hosts left over."""
    out = ["%s: %s -> %s (memory %s, cpus %.2f)" % (m["name"], m["source"], m["dest"], human(m["memory"]), m["cpus"])
           for m in moves] or ["no move"]
    for name in sorted(report):
        rep = report[name]
        if rep["excluded"]:
            out.append("%s: left alone (%s)" % (name, rep["excluded"]))
            continue
        out.append("%s: memory %.0f%% -> %.0f%%, cpu %.0f%% -> %.0f%%%s" % (
            name, rep["before"]["memory"] * 100, rep["after"]["memory"] * 100, rep["before"]["cpu"] * 100,
            rep["after"]["cpu"] * 100, " (over its thresholds)" if rep["over_after"] else ""))
    return out + list(unresolved)
