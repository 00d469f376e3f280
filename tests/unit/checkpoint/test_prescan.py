"""The scan before a dump (checkpoint/prescan.py), on a fake ``/proc``."""

import os

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import prescan as _prescan
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ConflictError


def _proc(tmp_path, pid, ns=None, cgroup="", uid="0", fdinfo=None, comm="x"):
    d = tmp_path / "proc" / str(pid)
    (d / "ns").mkdir(parents=True)
    for name in _prescan.NAMESPACES:
        os.symlink("%s:[%d]" % (name, (ns or {}).get(name, 4026531000)), d / "ns" / name)
    (d / "cgroup").write_text(cgroup)
    (d / "comm").write_text(comm + "\n")
    (d / "status").write_text("Name:\t%s\nUid:\t%s\t%s\t%s\t%s\n" % (comm, uid, uid, uid, uid))
    (d / "fdinfo").mkdir()
    for fd, text in (fdinfo or {}).items():
        (d / "fdinfo" / str(fd)).write_text(text)


def test_nested_namespaces_are_named_by_unit(tmp_path):
    _proc(tmp_path, 10, cgroup="1:name=systemd:/init.scope\n0::/\n", comm="systemd")
    _proc(tmp_path, 11, cgroup="1:name=systemd:/system.slice/cron.service\n", comm="cron")
    _proc(tmp_path, 12, ns={"uts": 4026532999},
          cgroup="1:name=systemd:/system.slice/systemd-logind.service\n", comm="logind")
    found = _prescan.nested_namespaces(10, [11, 12], proc=str(tmp_path / "proc"))
    assert [(f["pid"], f["unit"]) for f in found] == [(12, "systemd-logind.service")]
    assert _prescan.describe_nested(found) == "systemd-logind.service: own uts namespace"


def test_other_users_found_and_locks_read_from_proc_locks(tmp_path):
    _proc(tmp_path, 20, cgroup="0::/system.slice/dbus.service\n", uid="100", comm="dbus")
    _proc(tmp_path, 21, uid=str(os.getuid()), comm="cron")
    found = _prescan.foreign_users([20, 21], proc=str(tmp_path / "proc"))
    assert [(f["pid"], f["unit"]) for f in found] == [(20, "dbus.service")]
    proc = str(tmp_path / "proc")
    _proc(tmp_path, 22, fdinfo={3: "pos:\t0\nflags:\t02\nlock:\t1: FLOCK  ADVISORY  WRITE 9 "
                                   "00:2b:1234 0 EOF\n"})  # taken by a parent since gone
    assert _prescan.locks_held([21, 22], proc) is True
    assert _prescan.locks_held([20, 21, 23], proc) is False
    status = tmp_path / "status"
    status.write_text("CapEff:\t000001fffeffffff\n")  # this sandbox: no CAP_SYS_RESOURCE
    assert _prescan.may_read_limits(str(status)) is False
    status.write_text("CapEff:\t000001ffffffffff\n")
    assert _prescan.may_read_limits(str(status)) is True


def test_watched_paths_resolved_for_criu_inode_map(tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "usr/share/dbus-1/system.d").mkdir(parents=True)
    (rootfs / "usr/share/zoneinfo/Etc").mkdir(parents=True)
    (rootfs / "usr/share/zoneinfo/Etc/UTC").write_text("TZif")
    st_dir = os.lstat(rootfs / "usr/share/dbus-1/system.d")
    st_file = os.lstat(rootfs / "usr/share/zoneinfo/Etc/UTC")
    dev = st_dir.st_dev
    sdev = "%x" % ((os.major(dev) << 20) | os.minor(dev))
    _proc(tmp_path, 30, fdinfo={
        5: "pos:\t0\ninotify wd:1 ino:%x sdev:%s mask:2c8 ignored_mask:0\n" % (st_dir.st_ino, sdev),
        6: "inotify wd:1 ino:%x sdev:%s mask:80c ignored_mask:0\n" % (st_file.st_ino, sdev),
        7: "inotify wd:2 ino:1 sdev:ffff mask:100 ignored_mask:0\n"})  # another fs: ignored
    watches = _prescan.inotify_watches([30], proc=str(tmp_path / "proc"))
    assert (dev, st_dir.st_ino) in watches and len(watches) == 3
    assert _prescan.watched_dirs(str(rootfs), watches) == ["/usr/share/dbus-1",
                                                           "/usr/share/zoneinfo/Etc"]


def test_before_dump_refuses_nested_namespaces_before_anything_is_frozen(tmp_path, monkeypatch):
    class FakeCgroup:
        def procs(self):
            return [40, 41]

        def dirs(self):
            return {}

    real = _prescan.nested_namespaces
    monkeypatch.setattr(_prescan, "nested_namespaces",
                        lambda init, pids: real(init, pids, proc=str(tmp_path / "proc")))
    _proc(tmp_path, 40, cgroup="0::/init.scope\n")
    _proc(tmp_path, 41, ns={"mnt": 4026533000}, cgroup="0::/system.slice/foo.service\n")
    with pytest.raises(ConflictError, match="foo.service: own mnt namespace.*Nothing was frozen"):
        _prescan.before_dump(FakeCgroup(), None, 40, True)
