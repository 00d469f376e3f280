# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parallel evacuation on a 3-host lab: real SSH, runc, CRIU.

20 busybox containers (32M memory limit, a counter in a file of their rootfs) leave
host 1 for hosts 2 and 3 through ``ansible-playbook playbooks/evacuate.yml``; then a
batch with a fault injected into one move (its images damaged on the destination)
leaves that one on its source and moves the others. Where each container runs is read
from the runtime's state on every host; that it was restored (not restarted) from its
counter, which only grows.
"""

import json
import os
import re
import subprocess

import pytest
from lab import ROOT, Lab

pytestmark = [pytest.mark.lab, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

LAB_NAME = (os.environ.get("CTRHOST_IT_LAB") or "it") + "3"
RUNC = "runc --root /run/ctrhost/runtime/runc"
PY = os.path.join(ROOT, ".venv", "bin", "python")
COUNT = 20
COUNTER = ["/bin/sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/c; "
           "sleep 0.2; done"]

# Runs inside a lab host: a batch with one move's destination images damaged after the transfer.
FAULT = r'''
import json, subprocess, sys
sys.path.insert(0, @COLL@)
from ansible_collections.ctrhost.fleet.plugins.module_utils import _migrate_batch
a = json.loads(sys.argv[1])
def corrupt(run):
    subprocess.run(run.link.ssh_cmd(run.dest, "cd %s/images && for f in pages-*.img inventory.img; "
                                    "do truncate -s 7 $f; done" % run.incoming), check=True)
try:
    out = _migrate_batch.migrate_batch("/var/lib/ctrhost", a["moves"], parallel=4, per_dest=2,
                                       hooks={a["victim"]: {"transferred": corrupt}}, timeout=120)
except Exception as exc:
    out = dict(exc.details, failed=True, msg=exc.msg)
print(json.dumps(out, default=str))
'''.replace("@COLL@", repr(os.path.join(ROOT, ".cache", "pytest-collections")))


@pytest.fixture(scope="module")
def lab3():
    lab = Lab(LAB_NAME, 3)
    lab.down()
    lab.up()
    try:
        tarball = subprocess.run([os.path.join(ROOT, "scripts", "make-busybox-template")], capture_output=True,
                                 text=True, check=True).stdout.strip()
        lab.ansible("all", "ctrhost.fleet.template", dict(name="evbusybox", src=tarball))
        yield lab
    finally:
        lab.down()


def start(lab, host, names):
    lab.ansible(host, "ctrhost.fleet.containers", dict(containers=[
        dict(name=name, template="evbusybox", state="started", command=COUNTER, limits=dict(memory="32M"))
        for name in names]))


def where(lab, names):
    """{name: [hosts where the runtime runs it]} read on every host."""
    out = {name: [] for name in names}
    for host in lab.hosts:
        listing = json.loads(lab.host_exec(host, f"{RUNC} list -f json").stdout or "null") or []
        for entry in listing:
            if entry["id"] in out and entry["status"] == "running":
                out[entry["id"]].append(host)
    return out


def counters(lab, placement):
    """{name: counter} read from each container's rootfs on the host that runs it."""
    out = {}
    for name, hosts in placement.items():
        text = lab.host_exec(hosts[0], f"cat /var/lib/ctrhost/containers/{name}/rootfs/tmp/c", check=False).stdout
        out[name] = int(text.strip() or 0)
    return out


def task_result(run, suffix, host):
    found = [res for task, h, res in run.results() if h == host and (task or "").endswith(suffix)]
    assert found, run.stdout[-5000:]
    return found[0]


def test_twenty_containers_leave_in_parallel(lab3):
    h1, h2, h3 = lab3.hosts
    names = ["ev%02d" % i for i in range(COUNT)]
    start(lab3, h1, names)
    before = where(lab3, names)
    assert all(hosts == [h1] for hosts in before.values()), before
    counts = counters(lab3, before)
    run = lab3.playbook(os.path.join(ROOT, "playbooks", "evacuate.yml"),
                        extra_vars=dict(ctrhost_evacuate_host=h1, ctrhost_evacuate_mode="cold"))
    try:
        batch = task_result(run, "Migrate the containers, several at once", h1)
        after = where(lab3, names)
        # nothing lost: each runs on exactly one host, not the source
        assert all(len(hosts) == 1 and hosts[0] in (h2, h3) for hosts in after.values()), after
        assert {hosts[0] for hosts in after.values()} == {h2, h3}
        later = counters(lab3, after)
        assert all(later[n] >= counts[n] for n in names), (counts, later)  # restored, not restarted
        assert sorted(batch["moved"]) == names and batch["peak_parallel"] > 1, batch
        downtimes = sorted(r["downtime"] for r in batch["results"])
        print("evacuation of %d containers: batch wall %.2f s, worst downtime %.3f s, median %.3f s, peak %d"
              % (COUNT, batch["wall_time"], downtimes[-1], downtimes[len(downtimes) // 2], batch["peak_parallel"]))
        assert batch["wall_time"] < 15, batch["wall_time"]
        assert downtimes[-1] < 1.0, downtimes
        lines = [r["msg"] for task, host, res in run.results() if host == h1
                 and (task or "").endswith("Progress (one line per container)") for r in res["results"]]
        assert len(lines) == COUNT
        assert all(re.fullmatch(r"ev\d\d: moved to %s \(cold, downtime [0-9.]+ s, [0-9.]+ (Bytes|[KMGT]B)\)"
                                % f"({h2}|{h3})", line) for line in lines), lines
        state = lab3.ansible(h1, "ctrhost.fleet.host_state", {})[h1]
        assert state["state"] == "drained", state
        assert sorted(state["progress"]["evacuation"]["moved"]) == names, state
    finally:
        lab3.ansible(h1, "ctrhost.fleet.host_state", dict(state="active", force=True), check=False)
        for host in (h2, h3):
            lab3.ansible(host, "ctrhost.fleet.containers", dict(containers=[], purge=True), check=False)


def test_a_fault_in_one_move_leaves_it_on_its_source_and_the_others_move(lab3):
    h1, h2, h3 = lab3.hosts
    names = ["evf%d" % i for i in range(6)]
    start(lab3, h1, names)
    counts = counters(lab3, where(lab3, names))
    addr = {h: lab3.host(h)["address"] for h in (h2, h3)}
    moves = [dict(name=n, dest=addr[(h2, h3)[i % 2]]) for i, n in enumerate(names)]
    victim = names[2]
    try:
        proc = lab3.host_exec(h1, [PY, "-c", FAULT, json.dumps(dict(moves=moves, victim=victim))], timeout=600)
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        assert res["failed"] and res["failed_moves"] == [victim], res
        bad = next(r for r in res["results"] if r["name"] == victim)
        assert bad["where"] == "source" and "restore failed" in bad["msg"], bad
        assert sorted(res["moved"]) == sorted(set(names) - {victim}), res
        after = where(lab3, names)
        assert after[victim] == [h1], after  # exactly one host: its source
        for i, name in enumerate(names):
            if name != victim:
                assert after[name] == [(h2, h3)[i % 2]], after
        later = counters(lab3, after)
        assert all(later[n] >= counts[n] for n in names), (counts, later)
    finally:
        for host in (h1, h2, h3):
            lab3.ansible(host, "ctrhost.fleet.containers", dict(containers=[], purge=True), check=False)
