#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmarks of ctrhost.fleet side by side with Podman (and LXC where it runs).

    .venv/bin/python benchmarks/run.py [--lab NAME] [--reps N] [--only GROUP,...]
                                       [--json PATH] [--markdown PATH]

GROUPs: create (create+start, stop), checkpoint (idle and 256 MB: checkpoint to
disk, restore), density (100 idle containers), migrate (lab host 1 -> 2),
converge (ansible-playbook, 50 containers on lab host 1), fleet (evacuation of 20
containers and a rebalance, ansible-playbook on 3 lab hosts), network (each fleet network
mode of host_network on 3 lab hosts: convergence after a cold move, TCP throughput container
to container across hosts against host to host), vm (migration of a
256 MB container between two Debian 12 VMs in each mode; its own VM lab). With ``--lab`` the
measurements run inside the lab's hosts (``scripts/bench`` brings a lab named
``bench`` up and down); without it, create/checkpoint/density run in this
process's namespaces and migrate/converge are skipped.

Repetitions are interleaved (ours, podman, lxc, ours, ...). The table shows
medians with min-max and the ratio ours/peer; JSON keeps every sample.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_stats
import fleet
import inhost
import network
import scenarios
import sides as sides_mod
import vmtier
from ops import NOTES, OPS

REPO = sides_mod.REPO
HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(REPO, "benchmarks", "results")
GROUPS = ("create", "checkpoint", "density", "migrate", "converge", "fleet", "network", "vm")
PEERS = ("podman", "lxc")
CONVERGE_COUNT = 50


# ------------------------------------------------------------------ building the report
def build_ops(results):
    ops = []
    samples = results.samples
    for peer in PEERS:  # the fresh-process row compares with the same peer CLI runs
        if peer in samples.get("create_start", {}):
            samples.setdefault("create_start_proc", {})[peer] = samples["create_start"][peer]
    notes = dict(NOTES, **network.NOTES)
    for key, label, unit, target in OPS + network.ops():
        if key not in samples:
            continue
        note = notes.get(key, "")
        errors = results.errors.get(key) or {}
        if errors:
            note = "; ".join([note] * bool(note) + ["%s failed: %s" % (side, " | ".join(errs))
                                                    for side, errs in errors.items()])
        ops.append(dict(key=key, label=label, unit=unit, target=target, note=note,
                        sides=samples[key]))
    return ops


def machine_info():
    ensure = sides_mod.version_of
    mem = None
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    cgroup = None
    try:
        sides_mod.ensure_collections_tree()
        from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import sysinfo as _sysinfo
        cgroup = _sysinfo.cgroup_layout()["mode"]
    except Exception:
        pass
    return dict(cpus=os.cpu_count(), memory_gib=mem, kernel=platform.release(),
                os=_os_release(), cgroup=cgroup, python=platform.python_version(),
                runc=ensure(["runc", "--version"]), criu=ensure(["criu", "--version"]),
                podman=ensure(["podman", "--version"]), lxc=ensure(["lxc-start", "--version"]),
                cpu_model=_cpu_model())


def _os_release():
    try:
        with open("/etc/os-release") as fh:
            return dict(re.findall(r'^(\w+)="?([^"\n]*)"?$', fh.read(), re.M)).get("PRETTY_NAME")
    except OSError:
        return None


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            return re.search(r"^model name\s*:\s*(.*)$", fh.read(), re.M).group(1).strip()
    except (OSError, AttributeError):
        return None


def render(doc_ops, results, machine, args):
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = ("Run %s, %d repetitions (medians, min-max in brackets); %s cpus, %s GiB, kernel %s, "
            "cgroup %s.\n\n" % (when, args.reps, machine["cpus"], machine["memory_gib"],
                                machine["kernel"], machine["cgroup"]))
    return head + bench_stats.markdown_table(doc_ops) + "\n" + bench_stats.notes_markdown(
        doc_ops, results.notes)


# ------------------------------------------------------------------ phases (inside a host)
# ------------------------------------------------------------------ the controller side
def make_template():
    out = subprocess.run([os.path.join(REPO, "scripts", "make-busybox-template")],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def lab_hosts(lab):
    out = subprocess.run([os.path.join(REPO, "scripts", "lab"), "--name", lab, "status",
                          "--json"], capture_output=True, text=True)
    state = json.loads(out.stdout or "{}")
    if not state.get("healthy"):
        raise SystemExit("run.py: lab %r is not up and healthy (scripts/lab --name %s up 3)"
                         % (lab, lab))
    hosts = state["hosts"]
    return sorted(hosts, key=lambda h: hosts[h]["index"])


def run_phase(args, phase, host, dest=None):
    """``inhost.py PHASE`` inside lab host ``host``; returns its results dict."""
    os.makedirs(RESULTS, exist_ok=True)
    out = os.path.join(RESULTS, ".phase-%s.json" % phase)
    cmd = [os.path.join(REPO, "scripts", "lab"), "--name", args.lab, "host-exec", host, "--",
           sys.executable, os.path.join(HERE, "inhost.py"), phase, "--out", out,
           "--reps", str(args.reps), "--density-reps", str(args.density_reps),
           "--only", ",".join(args.only), "--peers", args.peers, "--tarball", args.tarball]
    if dest:
        cmd += ["--dest", dest]
    proc = subprocess.run(cmd, cwd=REPO, stdin=subprocess.DEVNULL)
    try:
        with open(out) as fh:
            data = json.load(fh)
        os.unlink(out)
    except (OSError, ValueError):
        data = dict(notes=["phase %s on %s failed (rc=%s) before writing results"
                           % (phase, host, proc.returncode)])
    return data


CONVERGE_HEAD = """---
- name: Converge containers (benchmark%s)
  hosts: "{{ bench_host }}"
  gather_facts: false
  tasks:
    - name: Busybox template
      ctrhost.fleet.template:
        name: %s
        src: "{{ bench_tarball }}"
      when: bench_state != 'absent'
"""

CONVERGE_BATCH = """    - name: Containers
      ctrhost.fleet.containers:
        containers: "{{ bench_containers }}"
"""

CONVERGE_LOOP = """    - name: Containers
      ctrhost.fleet.container:
        name: "bno-cv{{ '%%02d' | format(item) }}"
        template: %s
        command: ["/bin/sh", "-c", "{{ bench_idle }}"]
        state: "{{ bench_state }}"
      loop: "{{ range(bench_count | int) | list }}"
"""


def converge_playbook(path, batch=False):
    """The converge playbook: ``container`` looped over the items, or (``batch``) one
    ``containers`` task given the whole list (``bench_containers``)."""
    head = CONVERGE_HEAD % (", batch module" if batch else "", sides_mod.TEMPLATE)
    body = CONVERGE_BATCH if batch else CONVERGE_LOOP % sides_mod.TEMPLATE
    with open(path, "w") as fh:
        fh.write(head + body)


def batch_items(state):
    return [dict(name="bno-cb%02d" % i, template=sides_mod.TEMPLATE, state=state,
                 command=["/bin/sh", "-c", sides_mod.IDLE_SH]) for i in range(CONVERGE_COUNT)]


def playbook(args, path, host, state, batch=False):
    extra = dict(bench_host=host, bench_tarball=args.tarball, bench_state=state,
                 bench_count=CONVERGE_COUNT, bench_idle=sides_mod.IDLE_SH)
    if batch:
        extra["bench_containers"] = batch_items(state)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=sides_mod.COLLECTIONS, ANSIBLE_NOCOLOR="1",
               ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_FORKS="10")
    cmd = [os.path.join(REPO, "scripts", "lab"), "--name", args.lab, "exec", "--",
           os.path.join(REPO, ".venv", "bin", "ansible-playbook"), path, "-e", json.dumps(extra)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=1800)
    elapsed = time.perf_counter() - t0
    recap = re.search(r"%s\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)"
                      % re.escape(host), proc.stdout)
    if proc.returncode != 0 or not recap:
        raise RuntimeError("ansible-playbook (%s) rc=%d: %s" % (state, proc.returncode,
                                                                proc.stdout[-1500:]))
    return elapsed, int(recap.group(2))


def bench_converge(args, host, results):
    sides_mod.ensure_collections_tree()
    with tempfile.TemporaryDirectory(prefix="bn-converge.") as tmp:
        for batch, key in ((False, "converge"), (True, "converge_batch")):
            path = os.path.join(tmp, "%s.yml" % key)
            converge_playbook(path, batch)
            for rep in range(args.density_reps):
                scenarios.log("%s %d containers rep %d/%d" % (key, CONVERGE_COUNT, rep + 1,
                                                              args.density_reps))
                one_converge(args, path, host, results, key, batch)


def one_converge(args, path, host, results, key, batch):
    try:
        first, changed1 = playbook(args, path, host, "started", batch)
        results.add(key + "_first", "ours", first)
        second, changed2 = playbook(args, path, host, "started", batch)
        results.add(key + "_second", "ours", second)
        results.fact(key + "_second", "ours", dict(changed_first=changed1,
                                                   changed_second=changed2))
        if changed2:
            results.notes.append("%s: the second run reported changed=%d" % (key, changed2))
    except Exception as exc:
        results.fail(key + "_first", "ours", exc)
    finally:
        try:
            playbook(args, path, host, "absent", batch)
        except Exception as exc:
            results.notes.append("%s cleanup failed: %s" % (key, exc))


def controller(args):
    results = scenarios.Results()
    args.tarball = args.tarball or make_template()
    machine = machine_info()
    if args.lab:
        hosts = lab_hosts(args.lab)
        if set(args.only) & {"create", "checkpoint", "density"}:
            results.merge(run_phase(args, "local", hosts[0]))
        if "migrate" in args.only:
            if len(hosts) < 2:
                results.notes.append("migration not measured: the lab has one host")
            else:
                results.merge(run_phase(args, "migrate", hosts[0], dest=hosts[1]))
        if "converge" in args.only:
            bench_converge(args, hosts[0], results)
        if "fleet" in args.only:
            if len(hosts) < 3:
                results.notes.append("fleet not measured: it needs a lab of 3 hosts")
            else:
                fleet.bench_fleet(args, hosts, results)
        if "network" in args.only:
            if len(hosts) < 3:
                results.notes.append("network not measured: it needs a lab of 3 hosts")
            else:
                network.bench_network(args, hosts, results)
    if "vm" in args.only:
        vmtier.bench_vm(args, results)
    if not args.lab:
        inhost.phase_local(args, results)
        skipped = [g for g in ("migrate", "converge", "fleet", "network") if g in args.only]
        if skipped:
            results.notes.append("%s not measured: they need a lab (--lab NAME)"
                                 % " and ".join(skipped))
    ops = build_ops(results)
    doc = bench_stats.report_json(ops, machine=machine, notes=results.notes,
                                  errors=results.errors, extra=results.extra,
                                  config=dict(reps=args.reps, density_reps=args.density_reps,
                                              only=args.only, peers=args.peers, lab=args.lab))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(doc, fh, indent=2, sort_keys=True)
    text = render(ops, results, machine, args)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(text)
    print(text)
    return 0


def parse(argv):
    p = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5, help="repetitions per operation (default 5)")
    p.add_argument("--density-reps", type=int, default=1,
                   help="repetitions of density and converge (default 1)")
    p.add_argument("--only", default=",".join(GROUPS),
                   help="comma-separated groups: %s (default all)" % ",".join(GROUPS))
    p.add_argument("--peers", default=",".join(PEERS), help="peers to measure (default all found)")
    p.add_argument("--json", default=os.path.join(RESULTS, "latest.json"))
    p.add_argument("--markdown", help="also write the table to this file")
    p.add_argument("--lab", default=os.environ.get("BENCH_LAB"),
                   help="measure inside this lab's hosts (scripts/bench uses 'bench')")
    p.add_argument("--root", help="ctrhost root (default /var/lib/ctrhost)")
    p.add_argument("--tarball", help="busybox rootfs tarball (default: make-busybox-template)")
    p.add_argument("--ssh-config", default="/var/lib/ctrhost/ssh/config",
                   help="ssh config for host-to-host commands (the lab's host trust)")
    args = p.parse_args(argv)
    args.only = [g.strip() for g in args.only.split(",") if g.strip()]
    bad = [g for g in args.only if g not in GROUPS]
    if bad or args.reps < 1 or args.density_reps < 1:
        p.error("--only: expected some of %s, got %s; --reps/--density-reps >= 1"
                % (",".join(GROUPS), ",".join(bad) or "-"))
    if args.ssh_config and not os.path.exists(args.ssh_config):
        args.ssh_config = None
    return args


def main(argv):
    return controller(parse(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
