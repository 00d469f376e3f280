"""container_migrate ``live`` (pre-copy) on the namespace lab: real SSH, runc, CRIU.

This kernel has no soft-dirty bits, so a live migration falls back to cold here
(``test_migrate.test_live_falls_back_to_cold_and_says_why``); the rounds themselves
run on the VM tier (``extensions/molecule/vm/precopy.yml``). What this lab proves is
the guarantee when a round fails: a CRIU that claims dirty memory tracking its
kernel lacks makes the runtime's real pre-dump fail in the first round, and the
container must go on running on the source with its data, nothing left anywhere.
"""

import os
import shutil

import pytest
from test_migrate import NAME, addr, assert_stayed, helper, segment_lab, start

LAB = (os.environ.get("CTRHOST_IT_LAB") or "it") + "p"
CRIU = shutil.which("criu", path="/usr/local/sbin:/usr/sbin") or "criu"
WRAPPER = "/var/lib/ctrhost/pccriu"
# CRIU as found, except that it claims the kernel tracks dirty memory.
CLAIMS = """#!/bin/sh
case "$*" in "check --feature mem_dirty_track") echo "Dirty memory tracking is supported"; exit 0;; esac
exec %s "$@"
""" % CRIU

pytestmark = [pytest.mark.lab, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
              pytest.mark.skipif(not shutil.which("criu", path="/usr/local/sbin:/usr/sbin"),
                                 reason="needs CRIU")]


@pytest.fixture(scope="module")
def pm():
    with segment_lab(LAB) as lab:
        yield lab


def test_a_failed_pre_dump_round_leaves_it_running_on_the_source(pm):
    a, b = pm.hosts
    for host in (a, b):
        pm.host_exec(host, "cat > %s && chmod 755 %s" % (WRAPPER, WRAPPER), input=CLAIMS)
    before = start(pm, a)
    res = helper(pm, a, "migrate", name=NAME, dest=addr(pm, b), mode="live", criu_path=WRAPPER,
                 precopy=dict(max_iterations=3, dirty_threshold="64k"))
    assert res.get("failed"), res
    # both ends claimed tracking, so the rounds started (live, no fallback) and the first failed
    assert "pre-dump pre-1 for migration of container %s failed" % NAME in res["msg"], res["msg"]
    assert "failed before the freeze" in res["msg"] and "runs on source" in res["msg"], res["msg"]
    assert res["details"]["where"] == "source" and res["details"]["iterations"] == [], res["details"]
    assert res["details"]["fence"] == "fenced", res["details"]  # the staging there was removed
    assert_stayed(pm, a, b, before)
    # no pre-dump images left on the source; the destination holds nothing of it
    left = helper(pm, a, "sh", cmd="ls -a /var/lib/ctrhost/checkpoints/%s" % NAME)["out"].split()
    assert not [e for e in left if e.startswith(".migrate-")], left
    there = helper(pm, b, "sh", cmd="ls -a /var/lib/ctrhost/checkpoints/%s 2>/dev/null; ls "
                   "/var/lib/ctrhost/containers" % NAME)["out"].split()
    assert not [e for e in there if e.startswith(".incoming") or e == NAME], there
    # it can still move: cold, with the real CRIU
    again = helper(pm, a, "migrate", name=NAME, dest=addr(pm, b), mode="cold")
    assert not again.get("failed") and again["where"] == addr(pm, b), again
    helper(pm, b, "remove", name=NAME)
