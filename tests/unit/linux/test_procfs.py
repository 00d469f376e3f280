"""The /proc readers: the mount table (octal escapes undone) and a process's stat line."""

import contextlib
import os
import subprocess
import sys
import time

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import console as _console
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import procfs as _procfs
from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import restore as _restore

LINE = "%d %d 0:%d / %s rw,relatime shared:1 - %s %s rw\n"


def _table(tmp_path, points, fstype="tmpfs"):
    path = tmp_path / "mountinfo"
    path.write_text("".join(LINE % (30 + i, 1, 40 + i, point, fstype, "src")
                            for i, point in enumerate(points)))
    return str(path)


def test_mountinfo_paths_are_unescaped(tmp_path):
    table = _table(tmp_path, ["/", "/srv/a\\040b", "/srv/tab\\011x", "/srv/back\\134slash"])
    points = [m["mount_point"] for m in _procfs.mountinfo(table)]
    assert points == ["/", "/srv/a b", "/srv/tab\tx", "/srv/back\\slash"]


def test_mountinfo_fields_and_malformed_lines():
    text = ("36 35 98:0 /mnt1 /mnt/parent\\040dir rw,noatime master:1 - ext3 /dev/root "
            "rw,errors=continue\n"
            "garbage line\n"
            "37 35 0:31 / /sys/fs/cgroup rw shared:9 - cgroup2 cgroup2 rw,nsdelegate\n")
    mounts = _procfs.parse_mountinfo(text)
    assert mounts[0] == dict(root="/mnt1", mount_point="/mnt/parent dir", fstype="ext3",
                             source="/dev/root", super_options=["rw", "errors=continue"])
    assert [m["fstype"] for m in mounts] == ["ext3", "cgroup2"]


def test_mountinfo_unreadable(tmp_path):
    assert _procfs.mountinfo(str(tmp_path / "none"), missing=[]) == []
    with pytest.raises(OSError):
        _procfs.mountinfo(str(tmp_path / "none"))


def test_mounts_below_deepest_first(tmp_path):
    base = str(tmp_path)
    table = _table(tmp_path, ["/", base + "/w", base + "/w/a\\040b", base + "/w/a\\040b/c",
                              base + "/wx"])
    assert _procfs.mounts_below(base + "/w", table) == [
        base + "/w/a b/c", base + "/w/a b", base + "/w"]


def test_restore_cleanup_unmounts_a_path_with_a_space(tmp_path, monkeypatch):
    """A CRIU work dir holding a mount whose path has a space: the unmount is asked for the
    real path (the kernel writes the space as \\040 in mountinfo), and only below the dir."""
    work = tmp_path / "work"
    (work / "a b").mkdir(parents=True)
    monkeypatch.setattr(_procfs, "MOUNTINFO", _table(tmp_path, [
        "/", str(work), str(work) + "/a\\040b", str(tmp_path) + "/other"]))
    calls = []
    monkeypatch.setattr(_restore._cli, "run", lambda cmd, **kw: calls.append(cmd))
    _restore.cleanup_work(str(work))
    assert calls == [["umount", "-l", str(work / "a b")]]
    assert not work.exists()


def test_parse_stat_comm_with_spaces_and_parentheses():
    fields = " ".join(str(n) for n in range(3, 53))
    st = _procfs.parse_stat(77, "77 (a) (b c)) S 1 %s" % fields)
    assert st == _procfs.ProcStat(77, "a) (b c)", "S", 1, 20)
    with pytest.raises(ValueError):
        _procfs.parse_stat(77, "77 (truncated S 1 2")


SLEEPER = ("import ctypes, sys, time\n"
           "ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)\n"
           "print('ok', flush=True)\n"
           "time.sleep(60)\n")


def test_proc_stat_of_a_live_process_named_with_parentheses():
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER, "x) (y z"], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ok\n"
        st = _procfs.proc_stat(proc.pid)
        assert (st.comm, st.ppid) == ("x) (y z", os.getpid())
        assert st.state in ("R", "S")
        # the start time in clock ticks since boot, against the kernel's own clock
        ticks = os.sysconf("SC_CLK_TCK")
        boot = time.clock_gettime(time.CLOCK_BOOTTIME)
        assert 0 <= boot - st.starttime / ticks < 60
        assert _console.start_time(proc.pid) == st.starttime
    finally:
        proc.kill()
        proc.wait()
    assert _procfs.proc_stat(proc.pid) is None


def test_zombie_has_no_start_time():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    for _ in range(500):
        st = _procfs.proc_stat(proc.pid)
        if st.state == "Z":
            break
        time.sleep(0.01)
    try:
        assert st.state == "Z"
        assert _console.start_time(proc.pid) is None
    finally:
        proc.wait()


def test_a_child_names_its_parent():
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, sys, time\n"
                               "c = subprocess.Popen([sys.executable, '-c', %r, 'a) b'])\n"
                               "print(c.pid, flush=True)\n"
                               "c.wait()\n" % SLEEPER], stdout=subprocess.PIPE)
    child = int(parent.stdout.readline())
    try:
        assert _procfs.proc_stat(child).ppid == parent.pid
    finally:
        for pid in (child, parent.pid):
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
        parent.wait()
