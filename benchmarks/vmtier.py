# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Migration between two Debian 12 VMs (group ``vm``; ours only).

The VM tier of the lab (``scripts/lab --name benchvm up --vm 2``) has what the namespace
lab lacks: dirty-memory tracking, so ``live`` really pre-copies. The hosts are provisioned
with the ``host`` and ``templates`` roles (``benchmarks/vm_hosts.yml``). Each repetition
moves one container holding 256 MiB and dirtying 256 KiB of fresh memory every 0.2 s from
the first VM to the second in each mode (cold, lazy, live), ``--density-reps`` times
(default 1): downtime and total time as
``container_migrate`` reports them, and for live the pre-copy rounds. The VMs run under
TCG where KVM does not work, so the figures are those of an emulated CPU: compare the
modes with each other, not with the namespace rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import types

import fleet
import scenarios
import sides as sides_mod

REPO = sides_mod.REPO
MODES = ("cold", "lazy", "live")
NAME = "bnvm"
MIB = 1024 * 1024
SSH_ENV = {"ANSIBLE_TIMEOUT": "60",
           "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=900s -o ServerAliveInterval=15"}
# the VM scenario's steady workload (extensions/molecule/vm/precopy.yml)
WORKLOAD = ["/bin/sh", "-c",
            "dd if=/dev/zero bs=256M count=1 2>/dev/null | sleep 100000 & "
            "i=0; while true; do i=$((i+1)); x=$(head -c 262144 /dev/zero | tr '\\0' y); "
            "echo $i > /counter.new; mv /counter.new /counter; sleep 0.2; done"]


def lab_cmd(lab, *cmd, timeout=1800):
    proc = subprocess.run([os.path.join(REPO, "scripts", "lab"), "--name", lab, *cmd], cwd=REPO,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)
    if proc.returncode != 0:
        out = (proc.stderr or proc.stdout)[-800:]
        raise RuntimeError("scripts/lab --name %s %s: rc=%d %s" % (lab, " ".join(cmd), proc.returncode, out))
    return proc.stdout


def only_result(data, host):
    """The one result of an ad-hoc ``ansible`` run for ``host``."""
    for play in data.get("plays", []):
        for task in play.get("tasks", []):
            if host in task.get("hosts", {}):
                return task["hosts"][host]
    raise KeyError("no result for %s" % host)


def bench_vm(args, results):
    lab = types.SimpleNamespace(lab=os.environ.get("BENCH_VM_LAB", "benchvm"))
    sides_mod.ensure_collections_tree()
    saved = {k: os.environ.get(k) for k in SSH_ENV}
    os.environ.update(SSH_ENV)  # an emulated CPU: slow SSH handshakes, one connection per host
    try:
        scenarios.log("vm: bringing up 2 VMs (lab %s) and provisioning them" % lab.lab)
        lab_cmd(lab.lab, "down")
        lab_cmd(lab.lab, "up", "--vm", "2")
        state = json.loads(lab_cmd(lab.lab, "status", "--json"))["hosts"]
        hosts = sorted(state, key=lambda h: state[h]["index"])
        fleet.playbook(lab, os.path.join(REPO, "benchmarks", "vm_hosts.yml"),
                       dict(bench_template=args.tarball, bench_template_name=sides_mod.TEMPLATE))
        dest = state[hosts[1]]["address"]
        for rep in range(args.density_reps):  # a 256 MB move under TCG takes minutes
            for mode in MODES:
                scenarios.log("vm: %s move rep %d/%d" % (mode, rep + 1, args.density_reps))
                one_move(lab, hosts, dest, mode, results)
    except Exception as exc:
        results.fail("vm_migrate_cold_downtime", "ours", exc)
    finally:
        try:
            lab_cmd(lab.lab, "down")
        except Exception as exc:
            results.notes.append("vm: lab %s did not go down cleanly: %s" % (lab.lab, exc))
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def one_move(lab, hosts, dest, mode, results):
    key = "vm_migrate_%s" % mode
    try:
        fleet.module(lab, hosts[0], "container", dict(
            name=NAME, template=sides_mod.TEMPLATE, command=WORKLOAD, state="started",
            limits=dict(memory="384M", pids=32)))
        wait_resident(lab, hosts[0])
        res = only_result(fleet.module(lab, hosts[0], "container_migrate", dict(
            name=NAME, dest=dest, mode=mode, timeout=900)), hosts[0])
        if res.get("mode") != mode:
            raise RuntimeError("%s became %s: %s" % (mode, res.get("mode"), res.get("fallback")))
        results.add(key + "_downtime", "ours", res["downtime"])
        results.add(key + "_total", "ours", res["total_time"])
        if mode == "live":
            results.fact(key + "_downtime", "ours", dict(
                rounds=[it["pages_written"] for it in res["iterations"]], stop=res["precopy"]["stop"],
                final_pages=res["stats"]["dump"]["pages_written"]))
    except Exception as exc:
        results.fail(key + "_downtime", "ours", exc)
    finally:
        for host in hosts[:2]:
            try:
                fleet.module(lab, host, "container", dict(name=NAME, state="absent", stop_timeout=2))
            except Exception as exc:
                results.notes.append("vm: removing %s on %s failed: %s" % (NAME, host, exc))


def wait_resident(lab, host, timeout=300):
    """Until the container's memory cgroup holds the 256 MiB (the dd block is written)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = only_result(fleet.module(lab, host, "container_info", dict(name=NAME)), host)
        usage = (info.get("containers") or [{}])[0].get("usage") or {}
        if usage.get("memory_current", 0) >= 256 * MIB:
            return
        time.sleep(2)
    raise RuntimeError("%s did not reach 256 MiB in %ds" % (NAME, timeout))
