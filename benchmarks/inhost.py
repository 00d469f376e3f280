#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host side of the benchmarks: what ``run.py`` starts inside a lab host.

    inhost.py local   --out PATH [run.py's options]   create, checkpoint, density here
    inhost.py migrate --out PATH --dest HOST [...]    migrations from here to HOST
    inhost.py agent   JSON                            one action for the migration phase,
                                                      run over SSH on the destination

The phases write their results (``scenarios.Results``) as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import scenarios
import sides as sides_mod


def build_sides(args, results):
    ours = sides_mod.Ours(args.root)
    peers = []
    wanted = [p for p in (args.peers or "").split(",") if p]
    for cls, sub in ((sides_mod.Podman, "podman-bench"), (sides_mod.Lxc, "lxc-bench")):
        if cls.name not in wanted:
            continue
        side = cls(os.path.join(ours.layout.root, sub))
        ok, reason = side.available()
        if ok:
            peers.append(side)
        else:
            results.notes.append("%s not measured: %s" % (cls.name, reason))
    return ours, peers


def phase_local(args, results):
    ours, peers = build_sides(args, results)
    everyone = [ours] + peers
    try:
        for side in everyone:
            side.prepare(args.tarball)
        if "create" in args.only:
            scenarios.bench_create(everyone, ours, args.reps, results)
        if "checkpoint" in args.only:
            scenarios.bench_checkpoint(everyone, args.reps, results)
        if "density" in args.only:
            scenarios.bench_density(everyone, args.density_reps, results)
    finally:
        for side in everyone:
            side.cleanup()


def lazy_usable(results):
    """Whether this host's CRIU can serve lazy pages, as the library decides it; the
    reason goes into the notes when not."""
    from ansible_collections.ctrhost.fleet.plugins.module_utils.criu.tool import Criu
    feat = Criu().host_features()
    if not feat["features"]["lazy_pages_usable"]:
        results.notes.append("lazy moves not measured: %s" % feat.get("lazy_pages_reason"))
        return False
    return True


def phase_migrate(args, results):
    ours, peers = build_sides(args, results)
    podman = next((p for p in peers if p.name == "podman"), None)
    remote = scenarios.Remote(args.dest, args.ssh_config)
    try:
        from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import source as _migrate  # noqa: F401
        migrating = ours
    except ImportError as exc:
        migrating = None
        results.notes.append("ours: migration not measured, the library has no _migrate (%s)"
                             % exc)
    try:
        ours.prepare(args.tarball)
        if podman:
            podman.prepare(args.tarball)
        remote.agent("prepare", tarball=args.tarball, root=args.root,
                     base=podman.base if podman else None)
        scenarios.bench_migrate(migrating, podman, remote, args.reps, results, lazy_usable(results),
                                args.root)
    finally:
        try:
            remote.agent("cleanup", root=args.root, base=podman.base if podman else None)
        except Exception as exc:
            results.notes.append("cleanup on %s failed: %s" % (args.dest, exc))
        ours.cleanup()
        if podman:
            podman.cleanup()


def agent(request):
    """One action on this host for the migration phase (called over SSH); prints JSON."""
    action, root, base = request["action"], request.get("root"), request.get("base")
    ours = sides_mod.Ours(root)
    podman = sides_mod.Podman(base) if base else None
    out = {}
    if action == "prepare":
        ours.prepare(request["tarball"])
        if podman:
            podman.prepare(request["tarball"])
    elif action in ("ours_status", "podman_status"):
        side = ours if action == "ours_status" else podman
        pid = side.init_pid(request["name"])
        out = dict(pid=pid, memory=sides_mod.memory_cgroup_usage(pid) if pid else None)
    elif action == "ours_remove":
        ours.remove(request["name"])
    elif action == "cleanup":
        ours.cleanup()
        if podman:
            podman.cleanup()
    print(json.dumps(out))
    return 0


def parse(argv):
    p = argparse.ArgumentParser(prog="benchmarks/inhost.py", description=__doc__.split("\n\n")[0])
    p.add_argument("phase", choices=("local", "migrate", "agent"))
    p.add_argument("request", nargs="?", help="agent: the JSON request")
    p.add_argument("--out")
    p.add_argument("--dest")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--density-reps", type=int, default=1)
    p.add_argument("--only", default="")
    p.add_argument("--peers", default="")
    p.add_argument("--root")
    p.add_argument("--tarball")
    p.add_argument("--ssh-config", default="/var/lib/ctrhost/ssh/config")
    args = p.parse_args(argv)
    args.only = [g.strip() for g in args.only.split(",") if g.strip()]
    if args.ssh_config and not os.path.exists(args.ssh_config):
        args.ssh_config = None
    if args.phase == "agent" and not args.request:
        p.error("agent: the JSON request is missing")
    if args.phase != "agent" and not args.out:
        p.error("%s: --out is required" % args.phase)
    return args


def main(argv):
    args = parse(argv)
    if args.phase == "agent":
        return agent(json.loads(args.request))
    results = scenarios.Results()
    try:
        if args.phase == "local":
            phase_local(args, results)
        else:
            phase_migrate(args, results)
    finally:
        with open(args.out, "w") as fh:
            json.dump(results.as_dict(), fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
