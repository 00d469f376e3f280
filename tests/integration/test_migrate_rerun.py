# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""container_migrate asked again after the move, and run in the background with async.

On the shared lab: a container moves from host 1 to host 2 with ``async``/``async_status``;
the same migration again (and in check mode) reports changed=false with where it is; a
name that is nowhere fails naming both places. Where the container runs is read from the
runtime's state on each host, and its rootfs file written before the move is read on the
destination.
"""

import json
import os
import re
import subprocess

import pytest

from lab import ROOT

pytestmark = [pytest.mark.lab, pytest.mark.slow]

NAME = "mrmove1"
RUNC = "runc --root /run/ctrhost/runtime/runc"
ASYNC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrate_async.yml")


def status(lab, host, name=NAME):
    proc = lab.host_exec(host, f"{RUNC} state {name}", check=False)
    return json.loads(proc.stdout)["status"] if proc.returncode == 0 else "absent"


@pytest.fixture
def moving(lab):
    h1, h2 = lab.hosts[:2]
    tarball = subprocess.run([os.path.join(ROOT, "scripts", "make-busybox-template")], capture_output=True,
                             text=True, check=True).stdout.strip()
    for host in (h1, h2):
        lab.ansible(host, "ctrhost.fleet.template", dict(name="mrbusybox", src=tarball))
    lab.ansible(h1, "ctrhost.fleet.container", dict(
        name=NAME, template="mrbusybox", state="started",
        command=["/bin/sh", "-c", "echo before > /root/mark; while true; do sleep 1; done"]))
    yield h1, h2
    for host in (h1, h2):
        lab.ansible(host, "ctrhost.fleet.container", dict(name=NAME, state="absent"), check=False)
        lab.ansible(host, "ctrhost.fleet.template", dict(name="mrbusybox", state="absent"), check=False)


def test_async_move_then_rerun_converges(lab, moving):
    h1, h2 = moving
    dest = lab.host(h2)["address"]
    run = lab.playbook(ASYNC, extra_vars=dict(mr_src=h1, mr_dest=h2, mr_name=NAME))
    started = run.result("Start the move", h1)
    assert started.get("ansible_job_id") and started.get("started") in (1, True), started
    done = run.result("Wait for it", h1)
    assert done["finished"] and done["changed"] and done["where"] == dest, done
    assert (status(lab, h1), status(lab, h2)) == ("absent", "running")
    assert lab.host_exec(h2, f"cat /var/lib/ctrhost/containers/{NAME}/rootfs/root/mark").stdout == "before\n"

    args = dict(name=NAME, dest=dest)
    checked = lab.ansible(h1, "ctrhost.fleet.container_migrate", args, extra=("--check",))[h1]
    again = lab.ansible(h1, "ctrhost.fleet.container_migrate", args)[h1]
    for res in (checked, again):
        assert res["changed"] is False and res["already_moved"] and res["where"] == dest, res
        assert res["state"] == "running" and not res["source_leftover"] and res["bytes_moved"] == 0
    assert (status(lab, h1), status(lab, h2)) == ("absent", "running")


def test_a_container_that_is_nowhere_fails_naming_both_places(lab, moving):
    h1, h2 = moving
    dest = lab.host(h2)["address"]
    res = lab.ansible(h1, "ctrhost.fleet.container_migrate", dict(name="mrnowhere", dest=dest), check=False)[h1]
    assert res.get("failed") and res["field"] == "name", res
    assert "does not exist under /var/lib/ctrhost/containers" in res["msg"] and dest in res["msg"], res
    assert (status(lab, h1), status(lab, h2)) == ("running", "absent")  # the real one did not move


def test_evacuation_prints_one_line_per_container(lab, moving):
    h1, h2 = moving
    run = lab.playbook(os.path.join(ROOT, "playbooks", "evacuate.yml"), limit=f"{h1},{h2}",
                       extra_vars=dict(ctrhost_evacuate_host=h1, ctrhost_evacuate_mode="cold"))
    try:
        lines = [item["msg"] for task, host, res in run.results()
                 if host == h1 and (task or "").endswith("Progress (one line per container)")
                 for item in res.get("results", [res])]
        assert len(lines) == 1, run.stdout[-3000:]
        assert re.fullmatch(r"%s: moved to %s \(cold, downtime [0-9.]+ s, [0-9.]+ (Bytes|[KMGT]B)\)" % (NAME, h2),
                            lines[0]), lines
        assert (status(lab, h1), status(lab, h2)) == ("absent", "running")
    finally:
        lab.ansible(h1, "ctrhost.fleet.host_state", dict(state="active", force=True), check=False)
