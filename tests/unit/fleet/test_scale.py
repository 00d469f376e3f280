"""Placement and rebalance planning at fleet scale: the indexed search for the least loaded
host (``placement.LoadIndex``) gives exactly the answers of trying every host, and 1,000
hosts with 20,000 containers plan in seconds, not minutes.

The reference is the planners' former search, kept here: ``min`` of the load-after key over
every eligible host that fits (placement, a rebalance's destination), and a rebalance's pick
that looks up a destination for every container of the over host before choosing. The
fleets are random (seeded) with many ties: hosts of a few identical sizes and loads, hosts
without cpus, cordoned hosts, pinned containers, containers without a memory limit.
"""

from __future__ import annotations

import os
import random
import sys
import time

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.fleet import placement as _placement
from ansible_collections.ctrhost.fleet.plugins.module_utils.fleet import rebalance as _rebalance
from ansible_collections.ctrhost.fleet.plugins.module_utils.fleet.placement import PlacementError

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "benchmarks"))

import scale_plan

MiB = 1024 * 1024
GiB = 1024 * MiB
STATES = ("active",) * 8 + ("cordoned", "drained")


def every_host(self, ctr, skip=None):
    """The former search: every host of the index that fits, the least key."""
    fitting = [h for h in self.hosts.values() if h is not skip and self.fits(h, ctr)]
    return min(fitting, key=lambda h: self.key(h, ctr)) if fitting else None


def former_pick(rec, index, excess):
    """The rebalance's former pick: a destination for every container, then the choice."""
    ex_mem, ex_cpu = excess
    movable = [(c, every_host(index, c, skip=rec)) for c in rec["ctrs"]]
    movable = [(c, d) for c, d in movable if d is not None]
    if not movable:
        return None, None

    def size(c):
        return (c["memory"] / float(rec["memory_total"] or 1) + c["cpus"] / float(rec["cpus"] * 100000 or 1),
                c["name"])
    whole = [(c, d) for c, d in movable if c["memory"] >= ex_mem and c["cpus"] >= ex_cpu]
    if whole:
        return min(whole, key=lambda cd: size(cd[0]))

    def gain(cd):
        c = cd[0]
        return (-(min(c["memory"], ex_mem) / float(ex_mem or 1) + min(c["cpus"], ex_cpu) / float(ex_cpu or 1)),
                size(c))
    best = min(movable, key=gain)
    return best if gain(best)[0] < 0 else (None, None)


def random_fleet(rnd, nhosts, nctrs):
    sizes = [(rnd.choice([4, 8, 16, 64]) * GiB, rnd.choice([0, 1, 2, 8])) for _ in range(3)]
    hosts = {}
    for i in range(nhosts):
        memory, cpus = rnd.choice(sizes)
        hosts["h%03d" % i] = dict(memory_total=memory, cpus=cpus, host_state=rnd.choice(STATES),
                                  committed=dict(memory=rnd.choice([0, 0, GiB // 2]), cpus=rnd.choice([0, 0, 0.5]),
                                                 containers=rnd.choice([0, 0, 3])))
    ctrs = []
    for i in range(nctrs):
        ctr = dict(name="c%04d" % i, limits={})
        memory = rnd.choice([0, 64, 256, 256, 512, 1024]) * MiB
        if rnd.random() < 0.2:
            ctr["usage"] = dict(memory=memory)
        else:
            ctr["limits"]["memory"] = memory
        if rnd.random() < 0.5:
            ctr["limits"]["cpus"] = rnd.choice([0.25, 0.5, 1, 2])
        if rnd.random() < 0.05:
            ctr["dest"] = rnd.choice(sorted(hosts))
        ctrs.append(ctr)
    return hosts, ctrs


def both(func, monkeypatch):
    """func() with the index, then with the former search: both outcomes."""
    def outcome():
        try:
            return func()
        except PlacementError as exc:
            return ("error", exc.msg)
    new = outcome()
    with monkeypatch.context() as patch:
        patch.setattr(_placement.LoadIndex, "best", every_host)
        patch.setattr(_rebalance, "_pick", former_pick)
        old = outcome()
    return new, old


@pytest.mark.parametrize("seed", range(12))
def test_placement_is_the_same_as_trying_every_host(seed, monkeypatch):
    rnd = random.Random(seed)
    hosts, ctrs = random_fleet(rnd, rnd.choice([3, 12, 40]), rnd.choice([10, 60, 200]))
    source, overcommit = rnd.choice([None, "h000"]), rnd.choice([1.0, 1.5])
    new, old = both(lambda: _placement.place(ctrs, hosts, source=source, memory_headroom=0.1,
                                             cpu_overcommit=overcommit), monkeypatch)
    assert new == old


@pytest.mark.parametrize("seed", range(12))
def test_rebalance_is_the_same_as_trying_every_host(seed, monkeypatch):
    rnd = random.Random(seed)
    hosts, ctrs = random_fleet(rnd, rnd.choice([3, 12, 40]), rnd.choice([30, 120, 300]))
    per_host = {name: [] for name in hosts}
    for ctr in ctrs:
        ctr.pop("dest", None)
        per_host[rnd.choice(sorted(hosts)[: max(1, len(hosts) // 3)] if rnd.random() < 0.5 else sorted(hosts))].append(ctr)
    thresholds = dict(memory_threshold=rnd.choice([0.5, 0.8]), cpu_threshold=rnd.choice([0.5, 0.8, 1.0]))
    new, old = both(lambda: _rebalance.plan(hosts, per_host, **thresholds), monkeypatch)
    assert new == old
    assert new["moves"] or new["unresolved"] or not any(r["over_before"] for r in new["hosts"].values())


def test_the_benchmark_fleet_plans_the_same_as_trying_every_host(monkeypatch):
    hosts, ctrs = scale_plan.fleet(60, 1200, seed=7)
    new, old = both(lambda: _placement.place(ctrs, hosts, memory_headroom=0.1, cpu_overcommit=1.5), monkeypatch)
    assert new == old and len(new) == 1200
    hosts, per_host = scale_plan.skewed(60, 1200, seed=7)
    new, old = both(lambda: _rebalance.plan(hosts, per_host, **scale_plan.THRESHOLDS), monkeypatch)
    assert new == old and new["moves"]


def test_1000_hosts_and_20000_containers_plan_in_seconds():
    """A loose bound (the former search took about 95 s for the placement alone; now well
    under a second on a quiet machine: ``benchmarks/scale_plan.py`` reports the figure)."""
    hosts, ctrs = scale_plan.fleet(1000, 20000, seed=1)
    t0 = time.process_time()
    placed = _placement.place(ctrs, hosts, memory_headroom=0.1, cpu_overcommit=1.5)
    placing = time.process_time() - t0
    hosts, per_host = scale_plan.skewed(1000, 20000, seed=1)
    t0 = time.process_time()
    out = _rebalance.plan(hosts, per_host, **scale_plan.THRESHOLDS)
    planning = time.process_time() - t0
    assert len(placed) == 20000 and out["moves"] and not out["unresolved"]
    assert placing < 10 and planning < 10, (placing, planning)
