"""ctrhost.fleet.containers (batch) through ansible-playbook against real runc.

10 containers in one task; check mode reports what the real run does; the
second run changes nothing; one bad item fails the task naming the item and
field with nothing created; purge removes an undeclared container only when
set. Effects are read through /proc, the runtime's state directory, /run/netns
and /proc/self/mountinfo.
"""

import json
import os
import shutil

import pytest

import _local
from _local import RUNC_ROOT, busybox_root, gone, leftover_containers, mounted

LOOP = ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
COUNT = 10

pytestmark = [
    pytest.mark.runtime,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not shutil.which("runc", path="/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/sbin"),
                       reason="needs runc"),
    pytest.mark.skipif(not shutil.which("busybox"), reason="needs a static busybox"),
]


@pytest.fixture
def root(tmp_path_factory):
    """A layout root of its own (purge sees every container of it) holding a busybox
    template written directly; every container left in it is removed at the end."""
    base = tmp_path_factory.mktemp("ctbatch")
    yield busybox_root(base)
    if leftover_containers(base):
        play(str(base), [dict(containers=[], purge=True)])


def play(root, steps):
    return _local.play(root, steps, "containers")


def running_pid(name):
    """Init pid of ``name`` as the runtime's own state file records it, if that process lives."""
    try:
        with open(os.path.join(RUNC_ROOT, name, "state.json")) as handle:
            pid = json.load(handle)["init_process_pid"]
    except (OSError, ValueError, KeyError):
        return None
    return pid if os.path.exists("/proc/%d" % pid) else None


def exists_anywhere(root, name):
    """Anything of container ``name``: bundle, runtime state, netns, rootfs mount."""
    bundle = os.path.join(root, "containers", name)
    return [what for what, there in (
        ("bundle", os.path.exists(bundle)),
        ("runc state", os.path.exists(os.path.join(RUNC_ROOT, name))),
        ("netns", os.path.lexists("/run/netns/ctrhost-" + name)),
        ("rootfs mount", mounted(os.path.join(bundle, "rootfs"))),
    ) if there]


def test_ten_containers_in_one_call(root):
    prefix = "ctbt%d-" % (os.getpid() % 10000)
    names = ["%s%d" % (prefix, i) for i in range(COUNT)]
    declared = [dict(name=n, template="busybox", command=LOOP) for n in names]
    declared[-1]["state"] = "stopped"  # one created but not running
    declared[0]["limits"] = dict(pids=32)

    planned, first, second, second_check = play(root, [
        dict(containers=declared, _check=True), dict(containers=declared),
        dict(containers=declared), dict(containers=declared, _check=True)])

    # check mode: the same changed as the real run, per container; nothing created
    assert planned["changed"] is True and not planned.get("failed"), planned
    assert [r["changed"] for r in planned["results"]] == [True] * COUNT
    assert sorted(planned["diff"]["after"]) == sorted(names)

    # the real run
    assert first["changed"] is True and not first.get("failed"), first
    assert [r["name"] for r in first["results"]] == names
    assert [r["changed"] for r in first["results"]] == [True] * COUNT
    for entry in first["results"][:-1]:
        pid = running_pid(entry["name"])
        assert entry["state"] == "running" and pid and entry["pid"] == pid, entry
        assert os.stat("/proc/%d/ns/net" % pid).st_ino == \
            os.stat("/run/netns/ctrhost-" + entry["name"]).st_ino
        assert mounted(os.path.join(root, "containers", entry["name"], "rootfs"))
    last = first["results"][-1]
    assert last["state"] == "stopped" and last["pid"] is None and running_pid(last["name"]) is None
    assert os.path.isfile(os.path.join(root, "containers", last["name"], "spec.json"))
    pid0 = first["results"][0]["pid"]
    with open("/proc/%d/cgroup" % pid0) as handle:
        pids_path = [ln.split(":", 2)[2].strip() for ln in handle
                     if ln.split(":")[1] == "pids"][0]
    with open("/sys/fs/cgroup/pids%s/pids.max" % pids_path) as handle:
        assert handle.read().strip() == "32"

    # idempotent: nothing changes, in a real run or in check mode; same pids
    for again in (second, second_check):
        assert again["changed"] is False and not again.get("failed"), again
        assert [r["changed"] for r in again["results"]] == [False] * COUNT
        assert "diff" not in again
    assert [r["pid"] for r in second["results"]] == [r["pid"] for r in first["results"]]


def test_bad_item_fails_naming_the_field_and_creates_nothing(root):
    prefix = "ctbb%d-" % (os.getpid() % 10000)
    declared = [dict(name="%s%d" % (prefix, i), template="busybox", command=LOOP) for i in range(5)]
    declared[3]["limits"] = dict(memory="plenty")
    for check in (True, False):
        r = play(root, [dict(containers=declared, _check=check)])[0]
        assert r.get("failed") and r["msg"].startswith("containers[3].limits.memory:"), r
        assert r["field"] == "containers[3].limits.memory" and not r.get("changed"), r
        for item in declared:
            assert exists_anywhere(root, item["name"]) == [], item["name"]


def test_purge_removes_undeclared_only_when_asked(root):
    prefix = "ctbp%d-" % (os.getpid() % 10000)
    keep, extra = prefix + "keep", prefix + "extra"
    both = [dict(name=n, template="busybox", command=LOOP) for n in (keep, extra)]
    only_keep = both[:1]
    made, no_purge, purge_check, purged, again = play(root, [
        dict(containers=both),
        dict(containers=only_keep),
        dict(containers=only_keep, purge=True, _check=True),
        dict(containers=only_keep, purge=True),
        dict(containers=only_keep, purge=True),
    ])
    assert made["changed"] and not made.get("failed"), made
    extra_pid = made["results"][1]["pid"]
    assert made["results"][1]["name"] == extra and made["results"][1]["state"] == "running"
    # without purge an undeclared container is left alone
    assert no_purge["changed"] is False and [r["name"] for r in no_purge["results"]] == [keep]
    # check mode reports the removal and removes nothing
    assert purge_check["changed"] is True, purge_check
    assert [(r["name"], r.get("purged", False)) for r in purge_check["results"]] == \
        [(extra, True), (keep, False)]
    # purge removes it (and only it)
    assert purged["changed"] is True and purged["results"][0]["state"] == "absent", purged
    assert purged["diff"]["after"] == {extra: {}}
    assert exists_anywhere(root, extra) == [] and gone(extra_pid)
    assert running_pid(keep) == purged["results"][1]["pid"]
    assert again["changed"] is False and [r["name"] for r in again["results"]] == [keep]
