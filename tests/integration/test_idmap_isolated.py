"""Isolated id ranges (``idmap_isolated``) on this machine's runc: two containers with a
range of their own and one of the shared range. Their roots are different host uids, as
/proc says; each of them holds its own key quota (/proc/key-users: one line per root,
the runtime's session keyring); the template is shifted for each alone and that tree goes
with the container; check mode reports what the real run does and a second run changes
nothing; turning one back to the shared range (recreate) moves its files' owners.
"""

import errno
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest

import _local

from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import idmap as _idmap
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import peruser

pytestmark = _local.RUNTIME_MARKS

LOOP = ["/bin/sh", "-c", "touch /root/made; trap 'exit 0' TERM; while true; do sleep 60; done"]


@pytest.fixture
def root():
    """A layout root of its own with a busybox template (parents passable for the
    containers' roots); its containers and itself removed at the end."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="ctrhost-isolated-"))
    try:
        yield _local.busybox_root(base)
    finally:
        for name in _local.leftover_containers(base):
            _local.play(str(base), [dict(name=name, state="absent")], "container", timeout=300)
        shutil.rmtree(base, ignore_errors=True)


def wait_for(test, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not test():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def play(root, steps):
    return _local.play(root, steps, "container")


def init_owner(pid):
    st = os.stat("/proc/%d" % pid)
    return st.st_uid, st.st_gid


def test_two_isolated_containers_have_roots_of_their_own(root):
    tag = os.getpid() % 10000
    one, two, shared = "iso%d-a" % tag, "iso%d-b" % tag, "iso%d-s" % tag
    steps = [dict(name=n, template="busybox", command=LOOP, idmap_isolated=n != shared)
             for n in (one, two, shared)]
    results = play(root, [dict(s, _check=True) for s in steps] + steps + steps)
    planned, real, again = results[:3], results[3:6], results[6:]
    assert [bool(r.get("failed")) for r in planned + real + again] == [False] * 9, [r.get("msg") for r in real]
    assert [r["changed"] for r in planned] == [r["changed"] for r in real] == [True] * 3
    assert [r["changed"] for r in again] == [False] * 3

    maps = {r["container"]["name"]: r["container"]["idmap"] for r in real}
    pids = {r["container"]["name"]: r["container"]["pid"] for r in real}
    assert maps[one]["isolated"] is True and maps[two]["isolated"] is True
    assert maps[shared] == _idmap.host_range()
    # by /proc: three different host roots, each the first id of its map
    owners = {name: init_owner(pid) for name, pid in pids.items()}
    assert len({uid for uid, _gid in owners.values()}) == 3, owners
    for name, pid in pids.items():
        assert owners[name] == (maps[name]["uid"], maps[name]["gid"])
        assert pathlib.Path("/proc/%d/uid_map" % pid).read_text().split() == ["0", str(maps[name]["uid"]), "65536"]
    assert all(1100000000 <= maps[n]["uid"] < 1100000000 + 1073741824 for n in (one, two))
    # files made inside belong to each one's own root on the host
    for name in (one, two):
        made = os.path.join(root, "containers", name, "upper", "root", "made")
        wait_for(lambda m=made: os.path.exists(m))
        assert os.lstat(made).st_uid == maps[name]["uid"]
    # each isolated root holds its own key quota: its runtime's session keyring
    for name in (one, two):
        room = peruser.key_room(maps[name]["uid"])
        assert room["keys"] >= 1 and room["uid"] == maps[name]["uid"], room
    # the template shifted for each alone
    template = os.path.join(root, "templates", "busybox", "rootfs")
    trees = {name: _idmap.shifted_rootfs(template, maps[name]) for name in maps}
    assert all(os.path.isdir(t) for t in trees.values())
    assert os.lstat(os.path.join(trees[one], "bin", "busybox")).st_uid == maps[one]["uid"]

    # back to the shared range: needs recreate, then its files are the shared root's
    (refused, switched) = play(root, [dict(steps[0], idmap_isolated=False),
                                      dict(steps[0], idmap_isolated=False, recreate=True)])
    assert refused.get("failed") and "idmap_isolated" in refused["msg"], refused
    assert not switched.get("failed") and switched["container"]["idmap"] == _idmap.host_range(), switched
    assert os.lstat(os.path.join(root, "containers", one, "upper", "root", "made")).st_uid == 1000000000
    assert not os.path.exists(trees[one])  # its own tree went with its range

    gone = play(root, [dict(name=n, state="absent") for n in (one, two, shared)])
    assert all(r["changed"] for r in gone), gone
    assert not os.path.exists(trees[two])
    assert os.path.isdir(trees[shared])  # the shared range's tree stays for the others


# Opens inotify instances until the kernel refuses one (at most the argument), prints how
# many it holds and keeps them until its stdin closes.
GRAB = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
fds = []
while len(fds) < int(sys.argv[1]):
    fd = libc.inotify_init()
    if fd < 0:
        break
    fds.append(fd)
print(len(fds), ctypes.get_errno() if len(fds) < int(sys.argv[1]) else 0, flush=True)
sys.stdin.read()
"""


def grab(pid, most):
    """A process that is the root of container ``pid``'s user namespace (as the kernel counts
    it: the same namespace and uid as the container's root) holding up to ``most`` inotify
    instances; (process, held, errno)."""
    proc = subprocess.Popen(["nsenter", "--user=/proc/%d/ns/user" % pid, "--setuid", "0", "--setgid", "0",
                             "/usr/bin/python3", "-c", GRAB, str(most)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    held, err = proc.stdout.readline().split()
    return proc, int(held), int(err)


def test_one_container_exhausting_its_inotify_instances_leaves_another_untouched(root):
    tag = os.getpid() % 10000
    greedy, other = "ino%d-a" % tag, "ino%d-b" % tag
    cap = peruser.CONTAINER_CAPS["max_inotify_instances"]
    results = play(root, [dict(name=n, template="busybox", command=LOOP, idmap_isolated=True)
                          for n in (greedy, other)])
    assert not any(r.get("failed") for r in results), [r.get("msg") for r in results]
    pids = {r["container"]["name"]: r["container"]["pid"] for r in results}
    holders = []
    try:
        proc, held, err = grab(pids[greedy], 10 * cap)
        holders.append(proc)
        # stopped at its own cap (EMFILE), far below the host's per-user limit
        assert (held, err) == (cap, errno.EMFILE), (held, err)
        assert cap < peruser.read_sysctl("fs.inotify.max_user_instances")
        # the other container's root, and this host's root, still get theirs
        proc, held, err = grab(pids[other], 10)
        holders.append(proc)
        assert (held, err) == (10, 0)
        fd = _inotify_init()
        os.close(fd)
    finally:
        for proc in holders:
            proc.communicate("")
    gone = play(root, [dict(name=n, state="absent") for n in (greedy, other)])
    assert all(r["changed"] for r in gone), gone


def _inotify_init():
    import ctypes

    fd = ctypes.CDLL(None, use_errno=True).inotify_init()
    assert fd >= 0, "the host's root could not get an inotify instance: errno %d" % ctypes.get_errno()
    return fd
