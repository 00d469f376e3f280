# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fleet operations through ansible-playbook on a 3-host lab (group ``fleet``).

* evacuation: 20 idle busybox containers (32M memory limit) on host 1, drained onto
  hosts 2 and 3 with ``playbooks/evacuate.yml`` (cold): the playbook's wall time, the
  migration task's own wall time and the worst downtime of the 20 moves.
* rebalance: host 1 skewed (5 containers, 5G of memory limits, 1.5 cpus of cpu limits),
  host 2 with one small container; ``playbooks/rebalance.yml`` with thresholds of 15%
  memory and 50% cpu: its wall time and the number of moves (then the second run, which
  must report changed=0).

Ours only: no peer has these operations.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import scenarios
import sides as sides_mod

REPO = sides_mod.REPO
EVACUATE_COUNT = 20
COUNTER = ["/bin/sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/c; sleep 1; done"]
SKEWED = {"bnf-rb1": dict(memory="2G"), "bnf-rb2": dict(memory="1G", cpus=1), "bnf-rb3": dict(memory="1G", cpus=0.5),
          "bnf-rb4": dict(memory="512M"), "bnf-rb5": dict(memory="512M")}
THRESHOLDS = dict(ctrhost_rebalance_memory_threshold=0.15, ctrhost_rebalance_cpu_threshold=0.5)


def _env():
    # the integration tests' JSON callback (results of every task, stats)
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=sides_mod.COLLECTIONS, ANSIBLE_NOCOLOR="1",
                ANSIBLE_STDOUT_CALLBACK="lab_json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
                ANSIBLE_CALLBACK_PLUGINS=os.path.join(REPO, "tests", "integration", "callback_plugins"),
                ANSIBLE_FORKS="10")


def _lab(args, *cmd, timeout=1800):
    proc = subprocess.run([os.path.join(REPO, "scripts", "lab"), "--name", args.lab, "exec", "--", *cmd],
                          cwd=REPO, capture_output=True, text=True, env=_env(), stdin=subprocess.DEVNULL,
                          timeout=timeout)
    # the json callback's document starts on a line of its own (warnings may come first)
    text = proc.stdout
    start = 0 if text.startswith("{") else text.find("\n{") + 1
    data = json.loads(text[start:]) if start > 0 or text.startswith("{") else {}
    return proc, data


def playbook(args, name, extra):
    """``ansible-playbook playbooks/<name>`` (or the playbook at an absolute path) on the lab:
    (seconds, json output); raises on failure."""
    t0 = time.perf_counter()
    proc, data = _lab(args, os.path.join(REPO, ".venv", "bin", "ansible-playbook"),
                      os.path.join(REPO, "playbooks", name), "-e", json.dumps(extra))
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError("%s rc=%d: %s" % (name, proc.returncode, failures(data) or proc.stderr[-500:]))
    return elapsed, data


def failures(data):
    """The msg of every failed task result, on one line."""
    return " | ".join("%s: %s" % (host, res.get("msg")) for play in data.get("plays", [])
                      for task in play.get("tasks", []) for host, res in task.get("hosts", {}).items()
                      if res.get("failed"))


def module(args, host, name, params):
    proc, data = _lab(args, os.path.join(REPO, ".venv", "bin", "ansible"), host, "-m", "ctrhost.fleet." + name,
                      "-a", json.dumps(params), timeout=900)
    if proc.returncode != 0:
        raise RuntimeError("%s on %s rc=%d: %s" % (name, host, proc.returncode, failures(data) or proc.stderr[-500:]))
    return data


def result(data, suffix, host):
    for play in data.get("plays", []):
        for task in play.get("tasks", []):
            if task["task"]["name"].endswith(suffix) and host in task.get("hosts", {}):
                return task["hosts"][host]
    raise KeyError("no result of %r for %s" % (suffix, host))


def changed(data):
    return sum(s.get("changed", 0) for s in data.get("stats", {}).values())


def start(args, host, limits):
    module(args, host, "template", dict(name=sides_mod.TEMPLATE, src=args.tarball))
    module(args, host, "containers", dict(containers=[
        dict(name=name, template=sides_mod.TEMPLATE, state="started", command=COUNTER, limits=lim)
        for name, lim in sorted(limits.items())]))


def cleanup(args, hosts, results, what):
    for host in hosts:
        try:
            module(args, host, "host_state", dict(state="active", force=True))
            module(args, host, "containers", dict(containers=[], purge=True))
        except Exception as exc:
            results.notes.append("%s cleanup on %s failed: %s" % (what, host, exc))


def bench_fleet(args, hosts, results):
    sides_mod.ensure_collections_tree()
    for rep in range(args.density_reps):
        scenarios.log("fleet: evacuation of %d containers rep %d/%d" % (EVACUATE_COUNT, rep + 1, args.density_reps))
        one_evacuation(args, hosts, results)
        scenarios.log("fleet: rebalance rep %d/%d" % (rep + 1, args.density_reps))
        one_rebalance(args, hosts, results)


def one_evacuation(args, hosts, results):
    try:
        start(args, hosts[0], {"bnf-ev%02d" % i: dict(memory="32M") for i in range(EVACUATE_COUNT)})
        for host in hosts[1:3]:
            module(args, host, "template", dict(name=sides_mod.TEMPLATE, src=args.tarball))
        elapsed, data = playbook(args, "evacuate.yml", dict(ctrhost_evacuate_host=hosts[0], ctrhost_evacuate_mode="cold",
                                                            ctrhost_target=",".join(hosts[:3])))
        batch = result(data, "Migrate the containers, several at once", hosts[0])
        results.add("fleet_evacuate_wall", "ours", elapsed)
        results.add("fleet_evacuate_batch", "ours", batch["wall_time"])
        results.add("fleet_evacuate_downtime", "ours", batch["max_downtime"])
        results.fact("fleet_evacuate_wall", "ours", dict(peak_parallel=batch["peak_parallel"],
                                                         moved=len(batch["moved"])))
    except Exception as exc:
        results.fail("fleet_evacuate_wall", "ours", exc)
    finally:
        cleanup(args, hosts[:3], results, "evacuation")


def one_rebalance(args, hosts, results):
    try:
        start(args, hosts[0], SKEWED)
        start(args, hosts[1], {"bnf-rc1": dict(memory="256M")})
        module(args, hosts[2], "template", dict(name=sides_mod.TEMPLATE, src=args.tarball))
        extra = dict(THRESHOLDS, ctrhost_target=",".join(hosts[:3]))
        elapsed, data = playbook(args, "rebalance.yml", extra)
        plan = result(data, "Plan the fewest moves that bring every host under the thresholds", hosts[0])
        results.add("fleet_rebalance_wall", "ours", elapsed)
        results.add("fleet_rebalance_moves", "ours", len(plan["ansible_facts"]["__ctrhost_rebalance_plan"]["moves"]))
        again, data2 = playbook(args, "rebalance.yml", extra)
        results.add("fleet_rebalance_second", "ours", again)
        if changed(data2):
            results.notes.append("rebalance: the second run reported changed=%d" % changed(data2))
    except Exception as exc:
        results.fail("fleet_rebalance_wall", "ours", exc)
    finally:
        cleanup(args, hosts[:3], results, "rebalance")
