"""limits.disk where the filesystem under the root enforces no project quota (this
machine: its kernel has no quota support), through ansible-playbook: host_info says why,
and a container asking for a disk limit is refused with that reason, naming the field,
leaving nothing behind; an existing container keeps running untouched.

The enforcement itself (EDQUOT inside, live raise and lower, the limit following a
migration) needs a kernel with project quota: extensions/molecule/vm/limits.yml.
"""

import json
import os

import pytest

import _local
from _local import leftovers

LOOP = ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]

pytestmark = _local.RUNTIME_MARKS
root = _local.root_fixture("dkroot")


def play(root, steps, module="container"):
    return _local.play(root, steps, module, timeout=300)


def filesystem_of(path):
    """(mount point, fstype, mount and super options) of ``path``, from mountinfo."""
    path, best = os.path.realpath(path), ("", "", "")
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            left, _sep, right = line.partition(" - ")
            point = left.split()[4].replace("\\040", " ")
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best[0]):
                best = (point, right.split()[0], left.split()[5] + "," + right.split()[2])
    return best


@pytest.fixture(scope="module")
def disk(root):
    """host_info's verdict; the tests here are for a filesystem that cannot enforce it."""
    info = play(root, [dict(gather=["limits"])], module="host_info")[0]
    assert not info.get("failed"), info
    verdict = info["limits"]["disk"]
    if verdict["available"]:
        pytest.skip("the filesystem under %s enforces project quota" % root)
    return verdict


def test_host_info_says_why_not(root, disk):
    point, fstype, options = filesystem_of(root)
    assert "prjquota" not in options.split(",")  # independent: nothing enforces project quota
    assert disk["mount"] == point and disk["fstype"] == fstype
    assert fstype in disk["reason"] and "quota" in disk["reason"]


def read(path):
    with open(path) as handle:
        return handle.read()


def test_container_asking_for_disk_is_refused_without_residue(root, disk):
    name = "dknew%d" % (os.getpid() % 100000)
    task = dict(name=name, template="busybox", command=LOOP, state="started",
                limits=dict(memory="64M", disk="1G"))
    checked, real = play(root, [dict(task, _check=True), task])
    for result in (checked, real):
        assert result.get("failed") and not result.get("changed"), result
        assert result["msg"].startswith("limits.disk:"), result["msg"]
        assert disk["reason"] in result["msg"] and root in result["msg"]
    assert leftovers(root, name) == []


def test_adding_disk_to_a_running_container_is_refused_and_changes_nothing(root, disk):
    name = "dkrun%d" % (os.getpid() % 100000)
    spec_path = os.path.join(root, "containers", name, "spec.json")
    try:
        made = play(root, [dict(name=name, template="busybox", command=LOOP, state="started",
                                limits=dict(memory="64M"))])[0]
        assert not made.get("failed"), made
        pid = made["container"]["pid"]
        before = read(spec_path)
        via_limits, via_container = play(root, [
            dict(name=name, limits=dict(disk="512M"), _module="container_limits"),
            dict(name=name, template="busybox", command=LOOP, state="started",
                 limits=dict(memory="64M", disk="512M"))])
        for result in (via_limits, via_container):
            assert result.get("failed") and result["msg"].startswith("limits.disk:"), result
        assert read(spec_path) == before
        assert "disk" not in json.loads(before)["limits"]
        info = play(root, [dict(name=[name], network=False)], module="container_info")[0]
        entry = info["containers"][0]
        assert entry["state"] == "running" and entry["pid"] == pid, entry
        assert entry["effective_limits"] == {"memory": 64 * 1024 * 1024}, entry
    finally:
        play(root, [dict(name=name, state="absent")])
    assert leftovers(root, name) == []
