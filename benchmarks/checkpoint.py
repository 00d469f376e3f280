#!/usr/bin/env python3
"""Checkpoint, restore and migration timings of ctrhost.fleet (real runc + CRIU).

    .venv/bin/python benchmarks/checkpoint.py [--reps N] [--no-migrate]

Workloads: ``idle`` (busybox sleeping) and ``mem256`` (a process holding 256 MiB of
random, incompressible data). Checkpoint/restore run on this machine in a scratch layout root;
migrations run between two hosts of a private lab (``scripts/lab --name mhb``) in
every mode this kernel supports (``live`` falls back to cold where the kernel tracks
no dirty memory and is reported as such). Prints a table; the functions return dicts
of timings for other harnesses (``benchmarks/run.py``):

    checkpoint_restore(root, workload) -> {checkpoint, frozen, restore, size}
    migrate_once(lab, workload, mode)  -> {downtime, total, mode, fallback, bytes, timings}
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, ".cache", "pytest-collections"))
PY = os.path.join(ROOT, ".venv", "bin", "python")

WORKLOADS = {
    "idle": "exec sleep 100000",
    "mem256": "dd if=/dev/urandom bs=256M count=1 iflag=fullblock 2>/dev/null | sleep 100000",
}


def _link_tree():
    link = os.path.join(ROOT, ".cache", "pytest-collections", "ansible_collections", "ctrhost",
                        "fleet")
    if not os.path.islink(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(ROOT, link)


def make_template(root):
    """A busybox template written directly into layout ``root``."""
    base = os.path.join(root, "templates", "busybox")
    if os.path.exists(os.path.join(base, "template.json")):
        return
    busybox = shutil.which("busybox")
    for d in ("bin", "etc", "dev", "proc", "sys", "root", "tmp", "run"):
        os.makedirs(os.path.join(base, "rootfs", d), exist_ok=True)
    shutil.copy2(busybox, os.path.join(base, "rootfs", "bin", "busybox"))
    for applet in subprocess.run([busybox, "--list"], capture_output=True, text=True).stdout.split():
        if applet != "busybox":
            os.symlink("busybox", os.path.join(base, "rootfs", "bin", applet))
    with open(os.path.join(base, "template.json"), "w") as handle:
        json.dump(dict(name="busybox", sha256="b" * 64, source=dict(type="src", src="bench"),
                       size=0, created="2000-01-01T00:00:00Z"), handle)


def _settle(workload):
    time.sleep(3.0 if workload == "mem256" else 0.2)  # dd has filled its buffer (~1.4 s)


def checkpoint_restore(root, workload, name="mgbench"):
    """Checkpoint (to disk, process stopped) and restore one container; seconds."""
    _link_tree()
    from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import dump as _checkpoint
    from ansible_collections.ctrhost.fleet.plugins.module_utils.container import lifecycle as _container
    from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import restore as _restore
    make_template(root)
    _container.ensure(dict(root=root, name=name, template="busybox", state="started",
                           command=["/bin/sh", "-c", WORKLOADS[workload]]))
    try:
        _settle(workload)
        t0 = time.monotonic()
        res = _checkpoint.ensure(dict(root=root, name=name, id="bench", rootfs=False))
        t1 = time.monotonic()
        _restore.restore(root, name, "bench")
        t2 = time.monotonic()
        return dict(checkpoint=round(t1 - t0, 3), restore=round(t2 - t1, 3),
                    frozen=res["stats"].get("frozen_time"), size=res["size"])
    finally:
        _container.ensure(dict(root=root, name=name, state="absent"))
        _checkpoint.delete(root, name, None)


_LAB_HELPER = r'''
import json, sys, time
sys.path.insert(0, @TREE@)
sys.path.insert(0, @BENCH@)
import checkpoint as b
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import lifecycle as _container
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import source as _migrate
R = "/var/lib/ctrhost"
op, a = sys.argv[1], json.loads(sys.argv[2])
b.make_template(R)
if op == "start":
    _container.ensure(dict(root=R, name=a["name"], template="busybox", state="started",
                           command=["/bin/sh", "-c", b.WORKLOADS[a["workload"]]]))
    b._settle(a["workload"])
    print("{}")
elif op == "migrate":
    print(json.dumps(_migrate.migrate(R, a["name"], a["dest"], mode=a["mode"]), default=str))
elif op == "remove":
    _container.ensure(dict(root=R, name=a["name"], state="absent"))
    print("{}")
'''.replace("@TREE@", repr(os.path.join(ROOT, ".cache", "pytest-collections"))).replace(
    "@BENCH@", repr(os.path.dirname(os.path.abspath(__file__))))


def _lab_call(lab, host, op, **args):
    proc = lab.host_exec(host, [PY, "-c", _LAB_HELPER, op, json.dumps(args)], timeout=600)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def migrate_once(lab, workload, mode, name="mgbench"):
    """Start ``workload`` on the lab's first host and move it to the second; seconds."""
    a, b = lab.hosts[:2]
    _lab_call(lab, b, "remove", name=name)  # also installs the template there
    _lab_call(lab, a, "start", name=name, workload=workload)
    try:
        res = _lab_call(lab, a, "migrate", name=name, dest=lab.host(b)["address"], mode=mode)
    finally:
        for host in (a, b):
            _lab_call(lab, host, "remove", name=name)
    return dict(downtime=res["downtime"], total=res["total_time"], mode=res["mode"],
                fallback=res["fallback"], bytes=res["bytes_moved"], timings=res["timings"],
                dest_timings=res.get("dest_timings"))


def _median(rows, key):
    values = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-migrate", action="store_true")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--lab", default="mhb", help="name of the scratch lab (default mhb)")
    ap.add_argument("--modes", default="cold,live,lazy", help="migration modes to run")
    opts = ap.parse_args(argv)
    results = {}
    root = tempfile.mkdtemp(prefix="mgbench-")
    try:
        for workload in WORKLOADS:
            rows = [checkpoint_restore(root, workload) for _ in range(opts.reps)]
            results["checkpoint/" + workload] = rows
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if not opts.no_migrate:
        from lab import Lab
        lab = Lab(opts.lab, 2)
        lab.down()
        lab.up()
        try:
            for workload in WORKLOADS:
                for mode in opts.modes.split(","):
                    rows = [migrate_once(lab, workload, mode) for _ in range(opts.reps)]
                    results["migrate-%s/%s" % (mode, workload)] = rows
        finally:
            lab.down()
    print("| operation | workload | checkpoint s | restore s | downtime s | total s | mode used |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for key, rows in results.items():
        op, workload = key.split("/")
        print("| %s | %s | %s | %s | %s | %s | %s |" % (
            op, workload, _median(rows, "checkpoint") or "", _median(rows, "restore") or "",
            _median(rows, "downtime") or "", _median(rows, "total") or "",
            rows[0].get("mode", "")))
    if opts.json:
        with open(opts.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
