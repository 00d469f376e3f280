# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rolling kernel upgrade in batches on a 4-host lab: real SSH, runc, CRIU.

Two busybox containers with a counter on each host, then ``playbooks/kernel_upgrade.yml``
with ``ctrhost_kernel_upgrade_serial=2`` and no return trip; the lab's reboot (``scripts/lab
reboot``) kills every process of a host, so a container left behind would be lost. Proven
from the hosts themselves (``host.json`` of each, the runtime's state, the counters):

* the two hosts of a batch drained at the same time, each its part of one plan computed once;
* no container went to a host of its own batch; the second batch's went to the upgraded hosts;
* the containers of the first batch moved twice (there is no spare host), the others once,
  as the roll's report says;
* every container runs on exactly one host, restored (its counter went on), nothing cordoned.

Then a roll onto the kernel the hosts already run skips each of them (nothing drained, nothing
moved, the report names them), and a roll whose target kernel never comes fails at its
first host, which stays ``upgrading`` with the kernels named.
"""

import datetime
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from _lab3 import counters, lab3, start, task_result, where
from lab import ROOT

pytestmark = [pytest.mark.lab, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

LAB_NAME = (os.environ.get("CTRHOST_IT_LAB") or "it") + "kb"
PLAYBOOK = os.path.join(ROOT, "playbooks", "kernel_upgrade.yml")


@pytest.fixture(scope="module")
def fleet():
    t0 = time.monotonic()
    with lab3(LAB_NAME, 4) as lab:
        print("lab of 4 hosts with a template: %.1f s" % (time.monotonic() - t0))
        yield lab


def host_json(lab, host):
    """The host's state file; a host never cordoned has none (it is active)."""
    text = lab.host_exec(host, "cat /var/lib/ctrhost/host.json 2>/dev/null || true").stdout
    return json.loads(text) if text.strip() else dict(state="active", history=[])


def _at(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")


def drain_window(state):
    """(start, end) of the host's last drain, from its state history."""
    history = state["history"]
    start = [t["at"] for t in history if t["to"] == "draining"][-1]
    end = [t["at"] for t in history if t["from"] == "draining" and t["to"] == "drained"][-1]
    return _at(start), _at(end)


def test_a_roll_in_batches_of_two(fleet):
    hosts = fleet.hosts
    batches = [hosts[:2], hosts[2:]]
    origin = {"kb%d%d" % (i + 1, n): h for i, h in enumerate(hosts) for n in (1, 2)}
    with ThreadPoolExecutor(len(hosts)) as pool:
        list(pool.map(lambda h: start(fleet, h, sorted(n for n, o in origin.items() if o == h)), hosts))
    before = where(fleet, sorted(origin))
    assert before == {n: [o] for n, o in origin.items()}, before
    counts = counters(fleet, before)

    t0 = time.monotonic()
    run = fleet.playbook(PLAYBOOK, extra_vars=dict(
        ctrhost_kernel_upgrade_serial=2,
        ctrhost_kernel_upgrade_reboot_command="%s --name %s reboot {{ inventory_hostname }}"
                                              % (os.path.join(ROOT, "scripts", "lab"), LAB_NAME),
        ctrhost_kernel_upgrade_smoke=False, ctrhost_evacuate_mode="cold",
        # the lab's reboot keeps the machine's kernel: a rolling reboot onto the running kernel
        ctrhost_kernel_upgrade_skip_current=False, ctrhost_kernel_expected=os.uname().release))
    print("roll of 4 hosts in batches of 2, 8 containers: %.1f s" % (time.monotonic() - t0))

    # One plan per batch, computed once (run_once: a result for the first host of the batch only)
    plan_task = "One placement plan for the whole batch, or refuse before anything moves"
    planned = [(h, res) for task, h, res in run.results() if (task or "").endswith(plan_task)]
    assert [h for h, _res in planned] == [batches[0][0], batches[1][0]], planned
    plans = [res["ansible_facts"]["__ctrhost_kernel_upgrade_plan"] for _h, res in planned]
    assert plans[0] == {h: {n: plans[0][h][n] for n in origin if origin[n] == h} for h in batches[0]}, plans
    assert set(plans[0][batches[0][0]].values()) | set(plans[0][batches[0][1]].values()) <= set(batches[1])
    assert {d for part in plans[1].values() for d in part.values()} <= set(batches[0]), plans  # upgraded hosts

    # The moves each host recorded (host.json) are its part of the plan: never a host of its batch
    states = {h: host_json(fleet, h) for h in hosts}
    moved = {h: {n: m["dest"] for n, m in states[h]["progress"]["evacuation"]["moved"].items()} for h in hosts}
    for number, batch in enumerate(batches):
        for h in batch:
            assert moved[h] == plans[number][h], (h, moved[h], plans[number])
            assert not set(moved[h].values()) & set(batch), (h, moved[h])
    assert all(states[h]["state"] == "active" for h in hosts), states

    # The two hosts of a batch drained at the same time (both in one task of the batch, and
    # each one's drain began before the other's ended)
    migrate_task = "Migrate the containers, several at once"
    entries = [sorted(t["hosts"]) for p in run.data["plays"] for t in p["tasks"]
               if t["task"]["name"].endswith(migrate_task)]
    assert sorted(batches[0]) in entries and sorted(batches[1]) in entries, entries
    for a, b in batches:
        (a0, a1), (b0, b1) = drain_window(states[a]), drain_window(states[b])
        assert a0 <= b1 and b0 <= a1, (states[a]["history"], states[b]["history"])

    # Moves per container: twice for the first batch's (no spare host), once for the others
    counted = {}
    for h in hosts:
        for name in moved[h]:
            counted[name] = counted.get(name, 0) + 1
    assert counted == {n: 2 if origin[n] in batches[0] else 1 for n in origin}, counted
    report = task_result(run, "Moves per container and in total, and the hosts skipped (already on their "
                         "target kernel)", hosts[0])["ansible_facts"]["ctrhost_kernel_upgrade_report"]
    assert report == dict(moves=counted, total=12, containers=8, most=2, skipped={}), report
    line = task_result(run, "The roll's moves", hosts[0])["msg"]
    assert line.startswith("12 move(s) of 8 container(s), at most 2 for one:"), line

    # Nothing lost: each runs on exactly one host, the first batch's back on an upgraded host
    after = where(fleet, sorted(origin))
    assert all(len(on) == 1 for on in after.values()), after
    assert all(after[n][0] in batches[0] for n in origin), after
    later = counters(fleet, after)
    assert all(later[n] > counts[n] for n in origin), (counts, later)  # restored, not restarted


def test_hosts_on_their_target_kernel_are_skipped_and_a_roll_that_upgrades_nothing_fails(fleet):
    hosts = fleet.hosts
    running = os.uname().release  # the lab's hosts share the machine's kernel
    names = sorted(n for n, on in where(fleet, ["kb%d%d" % (i, n) for i in (1, 2, 3, 4) for n in (1, 2)]).items()
                   if on)
    before = where(fleet, names)
    history = {h: len(host_json(fleet, h).get("history", [])) for h in hosts}
    run = fleet.playbook(PLAYBOOK, extra_vars=dict(
        ctrhost_kernel_upgrade_serial=4, ctrhost_kernel_expected=running, ctrhost_kernel_upgrade_smoke=False))
    report = task_result(run, "Moves per container and in total, and the hosts skipped (already on their "
                         "target kernel)", hosts[0])["ansible_facts"]["ctrhost_kernel_upgrade_report"]
    assert report == dict(moves={}, total=0, containers=0, most=0, skipped={h: running for h in hosts}), report
    assert where(fleet, names) == before  # nothing moved
    for h in hosts:  # nothing drained, cordoned or rebooted: the state history did not grow
        state = host_json(fleet, h)
        assert state["state"] == "active" and len(state.get("history", [])) == history[h], state

    # A target kernel the host does not boot into: the roll fails at that host, which stays cordoned
    empty = [h for h in hosts if not any(h in on for on in before.values())][0]
    run = fleet.playbook(PLAYBOOK, limit=empty, expect_rc=None, extra_vars=dict(
        ctrhost_kernel_expected="0.0.0-none", ctrhost_kernel_upgrade_smoke=False,
        ctrhost_kernel_upgrade_reboot_command="%s --name %s reboot {{ inventory_hostname }}"
                                              % (os.path.join(ROOT, "scripts", "lab"), LAB_NAME)))
    try:
        assert run.rc != 0, run.stdout[-3000:]
        state = host_json(fleet, empty)
        assert state["state"] == "upgrading", state
        assert "runs kernel %s (expected 0.0.0-none" % running in state["reason"], state
        assert where(fleet, names) == before
    finally:
        fleet.ansible(empty, "ctrhost.fleet.host_state", dict(state="active", force=True), check=False)
