#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Placement and rebalance planning past one machine, on paper: synthetic fleets of up to
1,000 hosts and 20,000 containers, planned by the library's own code (what the
``placement`` and ``rebalance_plan`` filters run), timed in this process.

    .venv/bin/python benchmarks/scale_plan.py                 # the default cases, 3 reps
    .venv/bin/python benchmarks/scale_plan.py --reps 5 --case 1000x20000

A fleet (``fleet``): hosts of three sizes (64G/16 cpus, 128G/32, 256G/64), 5% of them not
active (cordoned, draining, drained, upgrading), each with some memory and cpus already
committed; containers with a memory limit of 256M to 4G (one in five without one: its
usage counts), three in five with a cpu limit of 0.25 to 2 cpus. The same seed gives the
same fleet.

* placement: every container placed at once onto the hosts (``placement.plan``).
* rebalance: the containers spread over the active hosts, one host in ten skewed to about
  95% of its memory; thresholds 80% memory and 80% cpu (``rebalance.plan``).

One row per case: the median, min and max wall seconds, the median cpu seconds of this
process, the reps (each a new seed), what the last plan did (containers placed, moves
planned, hosts left over), the machine (with its load average) and the date.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The working tree as ansible_collections.ctrhost.fleet (the tree tests/conftest.py makes).
COLLECTIONS = os.path.join(REPO, ".cache", "pytest-collections")
if not os.path.islink(os.path.join(COLLECTIONS, "ansible_collections", "ctrhost", "fleet")):
    os.makedirs(os.path.join(COLLECTIONS, "ansible_collections", "ctrhost"), exist_ok=True)
    os.symlink("../../../..", os.path.join(COLLECTIONS, "ansible_collections", "ctrhost", "fleet"))
sys.path.insert(0, COLLECTIONS)

from ansible_collections.ctrhost.fleet.plugins.module_utils.fleet import placement as _placement  # noqa: E402
from ansible_collections.ctrhost.fleet.plugins.module_utils.fleet import rebalance as _rebalance  # noqa: E402

MiB = 1024 * 1024
GiB = 1024 * MiB
SIZES = ((64 * GiB, 16), (128 * GiB, 32), (256 * GiB, 64))
OTHER_STATES = ("cordoned", "draining", "drained", "upgrading")
CASES = ((10, 200), (100, 2000), (1000, 20000))
THRESHOLDS = dict(memory_threshold=0.8, cpu_threshold=0.8)


def fleet(nhosts, ncontainers, seed=1):
    """(hosts: {name: host_info result}, containers: [container_info entry]) of a synthetic fleet."""
    rnd = random.Random(seed)
    hosts = {}
    for i in range(nhosts):
        memory, cpus = rnd.choice(SIZES)
        hosts["h%04d" % i] = dict(
            memory_total=memory, cpus=cpus,
            host_state="active" if rnd.random() >= 0.05 else rnd.choice(OTHER_STATES),
            committed=dict(memory=rnd.randrange(0, memory // 4 // MiB) * MiB,
                           cpus=rnd.randrange(0, cpus * 25) / 100.0, containers=rnd.randrange(0, 10)))
    containers = []
    for i in range(ncontainers):
        memory = rnd.randrange(1, 17) * 256 * MiB
        ctr = dict(name="c%05d" % i, state="running", limits={})
        if rnd.random() < 0.2:
            ctr["usage"] = dict(memory=memory)
        else:
            ctr["limits"]["memory"] = memory
        if rnd.random() < 0.6:
            ctr["limits"]["cpus"] = rnd.randrange(1, 9) / 4.0
        containers.append(ctr)
    return hosts, containers


def skewed(nhosts, ncontainers, seed=1):
    """(hosts, containers per host) for a rebalance: the containers of ``fleet`` spread over
    the active hosts, every tenth host filled to about 95% of its memory."""
    hosts, containers = fleet(nhosts, ncontainers, seed)
    rnd = random.Random(seed + 1)
    active = [name for name in sorted(hosts) if hosts[name]["host_state"] == "active"]
    per_host = {name: [] for name in hosts}
    used = {name: 0 for name in hosts}
    hot = set(active[::10])
    for ctr in containers:
        for _ in range(20):
            name = rnd.choice(active)
            limit = hosts[name]["memory_total"] * (0.95 if name in hot else 0.6)
            need = ctr["limits"].get("memory") or ctr["usage"]["memory"]
            if used[name] + need <= limit:
                break
        per_host[name].append(ctr)
        used[name] += need
    for ctr_list in per_host.values():  # what the hot hosts miss, from the others
        ctr_list.sort(key=lambda c: c["name"])
    for name in hot:
        while used[name] < hosts[name]["memory_total"] * 0.9:
            ctr = dict(name="x%s-%d" % (name, len(per_host[name])), state="running",
                       limits=dict(memory=rnd.randrange(1, 17) * 256 * MiB))
            per_host[name].append(ctr)
            used[name] += ctr["limits"]["memory"]
    return hosts, per_host


def time_placement(hosts, containers):
    t0, c0 = time.perf_counter(), time.process_time()
    placed = _placement.place(containers, hosts, memory_headroom=0.1, cpu_overcommit=1.5)
    return time.perf_counter() - t0, time.process_time() - c0, "%d placed" % len(placed)


def time_rebalance(hosts, per_host):
    t0, c0 = time.perf_counter(), time.process_time()
    out = _rebalance.plan(hosts, per_host, **THRESHOLDS)
    return (time.perf_counter() - t0, time.process_time() - c0,
            "%d moves, %d hosts left over" % (len(out["moves"]), len(out["unresolved"])))


def machine():
    """The machine, and its load average (the wall time of a busy machine is longer than
    the cpu time; the cpu time is the figure to compare)."""
    return "%s, %d cpus, Python %s, load %.1f" % (platform.machine(), os.cpu_count(), platform.python_version(),
                                                  os.getloadavg()[0])


def run(cases, reps):
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = []
    print("| case | hosts | containers | median s | min s | max s | cpu s (median) | reps | result | machine | date |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |")
    for nhosts, nctrs in cases:
        for what, make, timer in (("placement", fleet, time_placement), ("rebalance plan", skewed, time_rebalance)):
            samples, cpu, note = [], [], ""
            for rep in range(reps):
                data = make(nhosts, nctrs, seed=rep + 1)
                seconds, cpu_seconds, note = timer(*data)
                samples.append(seconds)
                cpu.append(cpu_seconds)
            row = dict(case=what, hosts=nhosts, containers=nctrs, median=statistics.median(samples),
                       min=min(samples), max=max(samples), cpu=statistics.median(cpu), reps=reps, result=note)
            rows.append(row)
            print("| %s | %d | %d | %.3f | %.3f | %.3f | %.3f | %d | %s | %s | %s |" % (
                what, nhosts, nctrs, row["median"], row["min"], row["max"], row["cpu"], reps, note, machine(),
                when), flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions per case (default 3), each a new seed")
    parser.add_argument("--case", action="append", metavar="HOSTSxCONTAINERS",
                        help="a case such as 1000x20000 (repeatable; default: 10x200, 100x2000, 1000x20000)")
    args = parser.parse_args(argv)
    cases = CASES
    if args.case:
        try:
            cases = [tuple(int(n) for n in case.lower().split("x", 1)) for case in args.case]
        except ValueError:
            parser.error("--case: expected HOSTSxCONTAINERS such as 1000x20000, got %s" % args.case)
    if args.reps < 1:
        parser.error("--reps: expected an integer >= 1")
    run(cases, args.reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
