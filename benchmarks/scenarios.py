# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What is measured on one host, interleaved side by side: create+start and stop,
checkpoint/restore (idle and 256 MB), density (100 idle containers), and
migration from this host to another (ours in each mode, Podman by export/copy/import).

Every function takes the sides, the repetition count and a ``Results`` to fill;
a failed repetition is recorded as ``None`` with its error, never hidden.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shlex
import sys
import time
import traceback

import ckphases
from sides import (
    MEM_BYTES,
    mem_available,
    memory_cgroup_usage,
    rss_bytes,
    sh,
)

MIB = 1024 * 1024
DENSITY = 100


class Results:
    """Samples per (op key, side), errors and extra facts; JSON-able."""

    def __init__(self):
        self.samples = {}
        self.errors = {}
        self.extra = {}
        self.notes = []

    def add(self, key, side, value):
        self.samples.setdefault(key, {}).setdefault(side, []).append(value)

    def fail(self, key, side, exc):
        self.add(key, side, None)
        text = "%s: %s" % (type(exc).__name__, str(exc).strip().splitlines()[-1][:400]
                           if str(exc).strip() else "")
        self.errors.setdefault(key, {}).setdefault(side, [])
        if text not in self.errors[key][side]:
            self.errors[key][side].append(text)
        print("  ! %s %s: %s" % (side, key, text), file=sys.stderr, flush=True)
        if os.environ.get("BENCH_DEBUG"):
            traceback.print_exc()

    def fact(self, key, side, value):
        self.extra.setdefault(key, {}).setdefault(side, []).append(value)

    def as_dict(self):
        return dict(samples=self.samples, errors=self.errors, extra=self.extra, notes=self.notes)

    def merge(self, other):
        for attr in ("samples", "errors", "extra"):
            mine = getattr(self, attr)
            for key, per_side in (other.get(attr) or {}).items():
                for side, values in per_side.items():
                    mine.setdefault(key, {}).setdefault(side, []).extend(values)
        self.notes.extend(other.get("notes") or [])


def timed(fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def wait_ready(side, name, workload, timeout=60):
    """The init pid once the workload is in place; for ``mem``, once the container's
    memory cgroup holds at least 97% of 256 MiB (else RuntimeError). Returns (pid, bytes)."""
    deadline = time.monotonic() + timeout
    pid, usage = None, None
    while time.monotonic() < deadline:
        pid = side.init_pid(name)
        if pid:
            usage = memory_cgroup_usage(pid)
            if workload != "mem":
                return pid, usage
            if usage is not None and usage >= 0.97 * MEM_BYTES:
                return pid, usage
        time.sleep(0.05)
    raise RuntimeError("%s: %s not ready after %ss (pid %s, memory cgroup %s bytes)"
                       % (side.name, name, timeout, pid, usage))


def short(side):
    return {"ours": "o", "podman": "p", "lxc": "l"}[side.name]


# ------------------------------------------------------------------ create/stop
def bench_create(sides, ours, reps, res):
    for rep in range(reps):
        log("create+start/stop rep %d/%d" % (rep + 1, reps))
        for side in sides:
            name = "bn%s-cs%d" % (short(side), rep)
            try:
                res.add("create_start", side.name, timed(side.create_start, name, "idle"))
                wait_ready(side, name, "idle")
                res.add("stop", side.name, timed(side.stop, name))
            except Exception as exc:
                res.fail("create_start", side.name, exc)
            finally:
                side.remove(name)
        if ours is not None:
            name = "bno-cp%d" % rep
            try:
                res.add("create_start_proc", "ours", timed(sh, ours.one_shot_cmd(name, "idle")))
            except Exception as exc:
                res.fail("create_start_proc", "ours", exc)
            finally:
                ours.remove(name)


# ------------------------------------------------------------------ checkpoint
def bench_checkpoint(sides, reps, res, workloads=("idle", "mem")):
    for workload in workloads:
        for rep in range(reps):
            log("checkpoint/restore %s rep %d/%d" % (workload, rep + 1, reps))
            for side in sides:
                one_checkpoint(side, workload, rep, res)


def one_checkpoint(side, workload, rep, res):
    name = "bn%s-ck%s%d" % (short(side), workload, rep)
    ck, rs = "checkpoint_%s" % workload, "restore_%s" % workload
    try:
        if side.name == "lxc":
            side.create_start(name, workload, copy=True)
        else:
            side.create_start(name, workload)
        _pid, usage = wait_ready(side, name, workload)
        res.fact(ck, side.name, dict(memory_before=usage))
        try:
            t0 = time.perf_counter()
            out = side.checkpoint(name, "c1")
            res.add(ck, side.name, time.perf_counter() - t0)
            if isinstance(out, dict):
                res.fact(ck, side.name, dict(stats=out.get("stats"), size=out.get("size"),
                                             images=(out.get("checkpoint") or {}).get("images")))
                ckphases.record(res, workload, side.name, ckphases.from_ours(out))
            elif isinstance(out, str):
                ckphases.record(res, workload, side.name, ckphases.from_podman(out))
        except Exception as exc:
            res.fail(ck, side.name, exc)
            return
        try:
            t0 = time.perf_counter()
            side.restore(name, "c1")
            elapsed = time.perf_counter() - t0
            pid = side.init_pid(name)
            if not pid:
                raise RuntimeError("%s: %s does not run after restore" % (side.name, name))
            usage = memory_cgroup_usage(pid)
            if workload == "mem" and (usage or 0) < 0.9 * MEM_BYTES:
                raise RuntimeError("%s: %s holds %s bytes after restore, expected ~256 MiB"
                                   % (side.name, name, usage))
            res.add(rs, side.name, elapsed)
            res.fact(rs, side.name, dict(memory_after=usage))
        except Exception as exc:
            res.fail(rs, side.name, exc)
    except Exception as exc:
        res.fail(ck, side.name, exc)
    finally:
        side.remove(name)


# ------------------------------------------------------------------ density
def bench_density(sides, reps, res, count=DENSITY):
    for rep in range(reps):
        for side in sides:
            log("density %s: %d containers, rep %d/%d" % (side.name, count, rep + 1, reps))
            one_density(side, rep, res, count)


def one_density(side, rep, res, count):
    names = ["bn%s-d%d-%03d" % (short(side), rep, i) for i in range(count)]
    gc.collect()
    time.sleep(1)
    before = mem_available()
    started = []
    try:
        t0 = time.perf_counter()
        for name in names:
            side.create_start(name, "idle")
            started.append(name)
        wall = time.perf_counter() - t0
        time.sleep(2)
        after = mem_available()
        pids = [side.init_pid(name) for name in names]
        if not all(pids):
            raise RuntimeError("%s: %d of %d containers do not run"
                               % (side.name, len([p for p in pids if not p]), count))
        cgroups = sum(memory_cgroup_usage(pid) or 0 for pid in pids)
        monitors = rss_bytes(side.supervisor_pids(names))
        res.add("density_wall", side.name, wall)
        res.add("density_host_mem", side.name, (before - after) / MIB)
        res.add("density_accounted", side.name, (cgroups + monitors) / MIB)
        res.fact("density_accounted", side.name, dict(cgroups=cgroups, monitors=monitors))
    except Exception as exc:
        res.fail("density_wall", side.name, exc)
    finally:
        if hasattr(side, "remove_many"):
            side.remove_many(started)
        for name in started:
            side.remove(name)


# ------------------------------------------------------------------ migration
class Remote:
    """Commands on the destination host over the hosts' own SSH trust."""

    def __init__(self, dest, ssh_config=None):
        self.dest = dest
        self.ssh_config = ssh_config
        self.ssh = ["ssh"] + (["-F", ssh_config] if ssh_config else []) + [
            "-o", "BatchMode=yes", dest]
        self.scp = ["scp", "-q"] + (["-F", ssh_config] if ssh_config else []) + [
            "-o", "BatchMode=yes"]

    def run(self, argv, check=True, timeout=600):
        return sh(self.ssh + [shlex.join(argv)], check=check, timeout=timeout)

    def agent(self, action, **kwargs):
        """``inhost.py agent`` on the destination; returns its JSON answer."""
        here = os.path.abspath(os.path.join(os.path.dirname(__file__), "inhost.py"))
        out = self.run([sys.executable, here, "agent", json.dumps(dict(kwargs, action=action))])
        return json.loads(out.strip().splitlines()[-1])

    def copy(self, path):
        sh(self.scp + [path, "%s:%s" % (self.dest, path)], timeout=600)


def migrate_modes(lazy_usable):
    return ["cold", "live"] + (["lazy"] if lazy_usable else [])


def call_migrate(root, name, dest, mode, ssh_config=None):
    """The library's entry, as the container_migrate module calls it."""
    from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import source as _migrate
    return _migrate.migrate(root, name, dest, mode=mode, ssh_config=ssh_config)


def pick(result, *keys):
    for key in keys:
        value = result.get(key)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, dict):  # e.g. {"downtime": {"seconds": ..}}
            for sub in ("seconds", "s", "value"):
                if isinstance(value.get(sub), (int, float)):
                    return float(value[sub])
    return None


def bench_migrate(ours, podman, remote, reps, res, lazy_usable, root=None):
    modes = migrate_modes(lazy_usable)
    if not lazy_usable:
        res.notes.append("lazy migration not measured: the host reports lazy pages unusable")
    for rep in range(reps):
        for mode in modes if ours is not None else ():
            log("migration ours %s rep %d/%d" % (mode, rep + 1, reps))
            one_migrate_ours(ours, remote, mode, rep, res, root)
        if podman is not None:
            log("migration podman rep %d/%d" % (rep + 1, reps))
            one_migrate_podman(podman, remote, rep, res, modes)


def one_migrate_ours(ours, remote, mode, rep, res, root):
    name = "bno-mg%s%d" % (mode, rep)
    key = "migrate_%s" % mode
    try:
        ours.create_start(name, "mem")
        wait_ready(ours, name, "mem")
        t0 = time.perf_counter()
        result = call_migrate(root, name, remote.dest, mode, remote.ssh_config)
        wall = time.perf_counter() - t0
        there = remote.agent("ours_status", name=name, root=root)
        if not there.get("pid") or (there.get("memory") or 0) < 0.9 * MEM_BYTES:
            raise RuntimeError("after migration %s on %s: %s" % (name, remote.dest, there))
        if ours.init_pid(name):
            raise RuntimeError("after migration %s still runs on the source" % name)
        res.add(key + "_downtime", "ours", pick(result, "downtime", "downtime_s"))
        res.add(key + "_total", "ours", pick(result, "total_time", "total", "duration") or wall)
        res.fact(key + "_downtime", "ours", dict(
            mode_used=result.get("mode"), wall=wall, bytes=result.get("bytes_moved"),
            fallback=result.get("fallback"), timings=result.get("timings"),
            dest_timings=result.get("dest_timings"), stats=result.get("stats")))
    except Exception as exc:
        res.fail(key + "_downtime", "ours", exc)
    finally:
        with contextlib.suppress(Exception):
            remote.agent("ours_remove", name=name, root=root)
        ours.remove(name)


def one_migrate_podman(podman, remote, rep, res, modes=("cold",)):
    """The operator's way: checkpoint --export, scp, restore --import on the destination."""
    name = "bnp-mg%d" % rep
    export = os.path.join(podman.base, "export", name + ".tar.gz")
    os.makedirs(os.path.dirname(export), exist_ok=True)
    try:
        podman.create_start(name, "mem")
        wait_ready(podman, name, "mem")
        remote.run(["mkdir", "-p", os.path.dirname(export)])
        t0 = time.perf_counter()
        podman.p("container", "checkpoint", "--export", export, name, timeout=600)
        t1 = time.perf_counter()
        remote.copy(export)
        t2 = time.perf_counter()
        remote.run(podman.cmd + ["container", "restore", "--import", export])
        t3 = time.perf_counter()
        there = remote.agent("podman_status", name=name, base=podman.base)
        if not there.get("pid") or (there.get("memory") or 0) < 0.9 * MEM_BYTES:
            raise RuntimeError("after migration %s on %s: %s" % (name, remote.dest, there))
        for mode in modes:  # Podman has one way whatever mode ours uses
            res.add("migrate_%s_downtime" % mode, "podman", t3 - t0)
            res.add("migrate_%s_total" % mode, "podman", t3 - t0)
        res.fact("migrate_cold_downtime", "podman", dict(
            checkpoint=t1 - t0, copy=t2 - t1, restore=t3 - t2, bytes=os.path.getsize(export)))
    except Exception as exc:
        res.fail("migrate_cold_downtime", "podman", exc)
    finally:
        with contextlib.suppress(Exception):
            remote.run(podman.cmd + ["rm", "-f", "-t", "0", name], check=False)
            remote.run(["rm", "-f", export], check=False)
        podman.remove(name)
        with contextlib.suppress(OSError):
            os.unlink(export)
