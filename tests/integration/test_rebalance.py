# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rebalance playbook on a skewed 3-host lab: real SSH, runc, CRIU.

Host 1 holds five containers (5G of memory limits, 1.5 cpus of cpu limits), host 2 one
small one, host 3 is cordoned. With thresholds of 15% memory and 50% cpu: check mode
prints the plan and moves nothing; a real run moves the planned containers to host 2 only
(never the cordoned host 3); a second run changes nothing. Where each container runs is
read from the runtime's state on every host; that it was restored, from its counter.
"""

import os

import pytest
from _lab3 import counters, lab3, purge, start, task_result, where
from lab import ROOT

pytestmark = [pytest.mark.lab, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

PLAYBOOK = os.path.join(ROOT, "playbooks", "rebalance.yml")
THRESHOLDS = dict(ctrhost_rebalance_memory_threshold=0.15, ctrhost_rebalance_cpu_threshold=0.5)
SKEWED = dict(rb1=dict(memory="2G"), rb2=dict(memory="1G", cpus=1), rb3=dict(memory="1G", cpus=0.5),
              rb4=dict(memory="512M"), rb5=dict(memory="512M"))


@pytest.fixture(scope="module")
def fleet():
    with lab3() as made:
        yield made


def test_rebalance_plans_moves_and_converges(fleet):
    h1, h2, h3 = fleet.hosts
    names = sorted(SKEWED) + ["rc1"]
    start(fleet, h1, sorted(SKEWED), SKEWED)
    start(fleet, h2, ["rc1"], dict(rc1=dict(memory="256M")))
    fleet.ansible(h3, "ctrhost.fleet.host_state", dict(state="cordoned", reason="rebalance test"))
    try:
        before = where(fleet, names)
        counts = counters(fleet, before)

        checked = fleet.playbook(PLAYBOOK, extra_vars=THRESHOLDS, check_mode=True)
        plan = task_result(checked, "Plan the fewest moves that bring every host under the thresholds", h1)
        moves = plan["ansible_facts"]["__ctrhost_rebalance_plan"]["moves"]
        # 1.47G of memory and 0.5 cpus too much on h1: no one container removes both, two do
        assert len(moves) == 2 and all(m["source"] == h1 and m["dest"] == h2 for m in moves), moves
        lines = task_result(checked, "The plan (one line per move, then the load of each host before and after)",
                            h1)["msg"]
        assert "%s: left alone (state cordoned)" % h3 in lines, lines
        assert where(fleet, names) == before  # check mode moved nothing

        real = fleet.playbook(PLAYBOOK, extra_vars=THRESHOLDS)
        assert real.changed == checked.changed == 1, (real.stats, checked.stats)
        after = where(fleet, names)
        moved = {m["name"] for m in moves}
        for name in names:
            assert after[name] == ([h2] if name in moved else before[name]), after
        later = counters(fleet, after)
        assert all(later[n] >= counts[n] for n in names), (counts, later)  # restored, not restarted

        again = fleet.playbook(PLAYBOOK, extra_vars=THRESHOLDS)
        assert again.changed == 0, again.stats
        assert where(fleet, names) == after
    finally:
        fleet.ansible(h3, "ctrhost.fleet.host_state", dict(state="active", force=True), check=False)
        purge(fleet, (h1, h2, h3))
