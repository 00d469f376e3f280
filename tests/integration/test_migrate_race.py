# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Two operators move one running container at once, on a 3-host lab: real SSH, runc, CRIU.

Two ``ansible -m ctrhost.fleet.container_migrate`` runs start together on host 1, one to
host 2 and one to host 3. Exactly one moves it; the other waited for the container's
lock and fails naming where the container went and the task that moved it (not "it is
stopped"). Then two moves of it to one destination at once: one moves it, the other reports
changed=false. Read independently on every host: where the runtime runs it (once,
running, not paused), its counter (restored, not restarted: it only grows), and that no
host keeps anything of it but the one that runs it (no staging, no half-restored copy;
the source's lock file only as the note of where the container went).
"""

import concurrent.futures
import json
import os
import time

import pytest
from _lab3 import COUNTER, RUNC, TEMPLATE, counters, lab3, where

pytestmark = [pytest.mark.lab, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

LAB_NAME = (os.environ.get("CTRHOST_IT_LAB") or "it") + "race"
NAME = "mrace1"
# The counter, and 64 MiB of memory held, so that a move lasts long enough for the other to ask.
COMMAND = ["/bin/sh", "-c", "dd if=/dev/zero bs=64M count=1 2>/dev/null | sleep 100000 & " + COUNTER[-1]]


@pytest.fixture(scope="module")
def race_lab():
    with lab3(LAB_NAME) as lab:
        yield lab


def traces(lab, host, name=NAME, moved_to=None):
    """Every file of ``name`` on ``host``: bundle, lock, runtime state, network namespace,
    stagings, checkpoints, the CRIU configuration of a container restored here. A source
    keeps one: the lock file as the note of where its move took the container
    (``moved_to``), which is checked and left out."""
    out = set(lab.host_exec(host, f"find /var/lib/ctrhost /run/ctrhost /run/netns -name '*{name}*'; "
                                  f"find /var/lib/ctrhost/checkpoints/{name} -mindepth 1",
                            check=False).stdout.split())
    lock = f"/run/ctrhost/locks/{name}.lock"
    if moved_to and lock in out:
        note = json.loads(lab.host_exec(host, f"cat {lock}").stdout)
        assert note["moved_to"] == moved_to, note
        out.discard(lock)
    return sorted(out)


def status(lab, host, name=NAME):
    proc = lab.host_exec(host, f"{RUNC} state {name}", check=False)
    return json.loads(proc.stdout)["status"] if proc.returncode == 0 else "absent"


def at_once(lab, src, dests):
    """``container_migrate`` of NAME from ``src`` to each of ``dests``, all started together:
    {dest host: result}."""
    def one(dest):
        args = dict(name=NAME, dest=lab.host(dest)["address"], mode="cold")
        return lab.ansible(src, "ctrhost.fleet.container_migrate", args, check=False)[src]

    with concurrent.futures.ThreadPoolExecutor(len(dests)) as pool:
        futures = {dest: pool.submit(one, dest) for dest in dests}
        return {dest: fut.result() for dest, fut in futures.items()}


def test_two_moves_at_once_one_wins_the_other_is_told(race_lab):
    lab = race_lab
    h1, h2, h3 = lab.hosts
    lab.ansible(h1, "ctrhost.fleet.container", dict(name=NAME, template=TEMPLATE, state="started",
                                                    command=COMMAND, limits=dict(memory="128M")))
    time.sleep(1.5)
    before = counters(lab, {NAME: [h1]})[NAME]
    assert before > 0

    # -- two destinations: exactly one move
    res = at_once(lab, h1, [h2, h3])
    won = [d for d, r in res.items() if r.get("changed") and not r.get("failed")]
    assert len(won) == 1, res
    winner, loser = won[0], ({h2, h3} - set(won)).pop()
    addr_w, addr_l = lab.host(winner)["address"], lab.host(loser)["address"]
    assert res[winner]["where"] == addr_w, res[winner]
    lost = res[loser]
    assert lost.get("failed") and lost.get("changed") is False, lost
    msg = lost["msg"]
    assert "stopped" not in msg, msg
    assert f"was moved to {addr_w}" in msg and f"container_migrate to {addr_w} (pid " in msg, msg
    assert f"not moved to {addr_l}" in msg, msg
    assert lost["where"] == addr_w and lost["field"] == "name", lost

    placed = where(lab, [NAME])
    assert placed == {NAME: [winner]}, placed
    assert status(lab, winner) == "running"  # not left paused/frozen
    after = counters(lab, placed)[NAME]
    time.sleep(1)
    later = counters(lab, placed)[NAME]
    assert before <= after < later, (before, after, later)  # continued, and still counting
    assert traces(lab, h1, moved_to=addr_w) == [] and traces(lab, loser) == [], (traces(lab, h1), traces(lab, loser))


def test_two_moves_to_the_same_destination_one_reports_no_change(race_lab):
    lab = race_lab
    src = next(h for h in lab.hosts if status(lab, h) == "running")
    dest = next(h for h in lab.hosts if h != src)
    before = counters(lab, {NAME: [src]})[NAME]
    addr = lab.host(dest)["address"]

    def one(_i):
        return lab.ansible(src, "ctrhost.fleet.container_migrate", dict(name=NAME, dest=addr, mode="cold"),
                           check=False)[src]

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(one, range(2)))
    assert not any(r.get("failed") for r in results), results
    assert sorted(bool(r["changed"]) for r in results) == [False, True], results
    unchanged = next(r for r in results if not r["changed"])
    assert unchanged["already_moved"] and unchanged["where"] == addr and not unchanged["source_leftover"], unchanged
    assert where(lab, [NAME]) == {NAME: [dest]}
    assert counters(lab, {NAME: [dest]})[NAME] >= before
    assert traces(lab, src, moved_to=addr) == []
    lab.ansible(dest, "ctrhost.fleet.container", dict(name=NAME, state="absent"))
