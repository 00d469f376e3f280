"""Density, sized down: 250 unprivileged busybox containers through one kernel, past the
kernel's default key quota of 200 keys per uid, with the settings `make setup` applies
(scripts/kernel-limits, the sizing of the host role: linux/peruser.py).

Every unprivileged container of the fleet's shared id range has the same host root
(uid 1000000000), and runc joins a session keyring of its own for each one, counted to
that uid: with ``kernel.keys.maxkeys`` at 200 the 201st start failed with runc's
"unable to join session keyring: ... disk quota exceeded". Here the quota in use is read
from ``/proc/key-users`` (not from the module): it passes 200 with the containers
running. Then the quota is made full for one more start (the limit set to what is held,
for that one start only): ``container`` refuses it before the runtime runs, naming the
limit, and leaves nothing behind. The figures (times, keys and key bytes per container)
are printed (``-s``).
"""

import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest

import _local
from _local import RUNC_ROOT, busybox_root, leftover_containers

from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import peruser, sysinfo

COUNT = 250
OLD_MAXKEYS = 200  # the kernel's default
UID = 1000000000  # the root of the fleet's shared range (make setup writes it)
LOOP = ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 60; done"]

pytestmark = _local.RUNTIME_MARKS + [pytest.mark.slow]


@pytest.fixture
def root():
    """A layout root of its own with a busybox template, in a directory whose parents
    stay passable for the containers' root (not pytest's per-user temporary directory,
    which another pytest run may close while these run); removed with its containers."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="ctrhost-density-"))
    try:
        yield busybox_root(base)
    finally:
        if leftover_containers(base):
            _local.play(str(base), [dict(containers=[], purge=True)], "containers", timeout=900)
        shutil.rmtree(base, ignore_errors=True)


def running(name):
    """Whether the runtime's own state file names a live init for ``name``."""
    try:
        with open(os.path.join(RUNC_ROOT, name, "state.json")) as handle:
            pid = json.load(handle)["init_process_pid"]
    except (OSError, ValueError, KeyError):
        return False
    return os.path.exists("/proc/%d" % pid)


def root_uid(name):
    """The host uid of ``name``'s init, as /proc says."""
    with open(os.path.join(RUNC_ROOT, name, "state.json")) as handle:
        pid = json.load(handle)["init_process_pid"]
    return os.stat("/proc/%d" % pid).st_uid


def set_sysctl(name, value):
    subprocess.run(["sysctl", "-q", "-w", "%s=%d" % (name, value)], check=True)


def test_250_unprivileged_containers_past_the_old_key_quota(root):
    # what make setup gives this machine (the lab's hosts share its kernel)
    subprocess.run([os.path.join(_local.ROOT, "scripts", "kernel-limits")], check=True,
                   cwd=_local.ROOT, capture_output=True)
    wanted = peruser.recommended(sysinfo.meminfo()["total"])
    now = peruser.current(wanted)
    assert peruser.below(wanted, now) == [], now
    assert now["kernel.keys.maxkeys"] > OLD_MAXKEYS + COUNT

    prefix = "dn%d-" % (os.getpid() % 10000)
    names = ["%s%d" % (prefix, i) for i in range(COUNT)]
    declared = [dict(name=n, template="busybox", command=LOOP) for n in names]
    before = peruser.key_room(UID)

    t0 = time.monotonic()
    (up,) = _local.play(root, [dict(containers=declared)], "containers", timeout=900)
    t_up = time.monotonic() - t0
    assert not up.get("failed"), up.get("msg")
    assert [r["changed"] for r in up["results"]] == [True] * COUNT

    # by an independent path: the runtime's state and /proc; the key quota in use
    assert [n for n in names if not running(n)] == []
    assert {root_uid(n) for n in names[:: COUNT // 10]} == {UID}
    held = peruser.key_room(UID)
    gained = held["keys"] - before["keys"]
    assert held["keys"] > OLD_MAXKEYS and gained >= COUNT - 5, (before, held)
    assert held["keys"] <= held["maxkeys"]

    # the quota full (the limit at what is held), one more start: refused by us, before runc
    extra = prefix + "over"
    saved = now["kernel.keys.maxkeys"]
    try:
        set_sysctl("kernel.keys.maxkeys", peruser.key_room(UID)["keys"])
        (over,) = _local.play(root, [dict(name=extra, template="busybox", command=LOOP)],
                              "container", timeout=300)
    finally:
        set_sysctl("kernel.keys.maxkeys", saved)
    assert over.get("failed"), over
    assert over["msg"].startswith("kernel.keys.maxkeys: uid %d holds " % UID), over["msg"]
    assert "raise it" in over["msg"] and "ctrhost_sysctls" in over["msg"], over["msg"]
    assert "session keyring" not in over["msg"], over["msg"]
    assert not os.path.exists(os.path.join(root, "containers", extra))
    assert not os.path.exists(os.path.join(RUNC_ROOT, extra))

    t0 = time.monotonic()
    (down,) = _local.play(root, [dict(containers=[], purge=True)], "containers", timeout=900)
    t_down = time.monotonic() - t0
    assert not down.get("failed"), down.get("msg")
    assert leftover_containers(pathlib.Path(root)) == []
    assert [n for n in names if os.path.exists(os.path.join(RUNC_ROOT, n))] == []
    after = peruser.key_room(UID)
    assert after["keys"] <= held["keys"] - (COUNT - 5), (held, after)

    print("\ndensity: %d unprivileged containers created and started in %.1f s, removed in %.1f s; "
          "uid %d held %d keys (%d bytes) of %d (%d bytes), %.1f bytes a container"
          % (COUNT, t_up, t_down, UID, held["keys"], held["bytes"], held["maxkeys"], held["maxbytes"],
             (held["bytes"] - before["bytes"]) / max(1, gained)))
