"""limits.disk: project ids through FS_IOC_FS[GS]ETXATTR and the project quota through
quotactl_fd, with the kernel replaced at the system call boundary (``fcntl.ioctl`` and
libc's ``syscall``) by a model of ext4 with project quota. Real directories, real
file descriptors: the structures packed and unpacked are the kernel's."""

import ctypes
import errno
import json
import os
import struct

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.limits import records as _limits
from ansible_collections.ctrhost.fleet.plugins.module_utils.limits import quota as _quota
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import syscall as _syscall
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import LimitError, ValidationError

M = 1024 * 1024
HOST = dict(host_cpus=2, host_memory=8 << 30, host_cpuset=[0, 1], host_mems=[0])


class Ext4:
    """Project ids per inode and a quota table per project id, as the kernel keeps them."""

    def __init__(self, quota_on=True, syscall_error=None, enforced=True):
        self.quota_on, self.syscall_error, self.enforced = quota_on, syscall_error, enforced
        self.xattr = {}  # inode -> [xflags, projid]
        self.quota = {}  # projid -> [bhard blocks, bsoft blocks, curspace]
        self.calls = []

    def inode(self, fd):
        st = os.fstat(fd)
        return st.st_dev, st.st_ino

    def ioctl(self, fd, request, buf, *rest):
        entry = self.xattr.setdefault(self.inode(fd), [0, 0])
        if request == _quota.FS_IOC_FSGETXATTR:
            buf[:] = struct.pack(_quota.FSXATTR, entry[0], 0, 0, entry[1], 0)
            return 0
        assert request == _quota.FS_IOC_FSSETXATTR
        fields = struct.unpack(_quota.FSXATTR, bytes(buf))
        entry[:] = [fields[0], fields[3]]
        return 0

    def syscall(self, nr, fd, cmd, projid, buf):
        assert nr.value == _quota.SYS_QUOTACTL_FD and cmd.value & 0xFF == _quota.PRJQUOTA
        self.calls.append((cmd.value >> 8, projid.value))
        err = self.syscall_error or (None if self.quota_on else errno.ESRCH)
        if err:
            ctypes.set_errno(err)
            return -1
        sub, projid = cmd.value >> 8, projid.value
        entry = self.quota.setdefault(projid, [0, 0, 0])
        if sub == _quota.Q_GETQUOTA:
            raw = struct.pack(_quota.DQBLK, entry[0], entry[1], entry[2], 0, 0, 0, 0, 0, 0xF)
            ctypes.memmove(buf, raw, len(raw))
        elif sub == _quota.Q_XGETQSTATV:
            assert buf.raw[0] == 1 and len(buf.raw) == _quota.QSTATV_SIZE
            struct.pack_into("=H", buf, 2, 0x10 | (_quota.FS_QUOTA_PDQ_ENFD if self.enforced else 0))
        elif sub == _quota.Q_SETQUOTA:
            fields = struct.unpack(_quota.DQBLK, buf.raw)
            assert fields[8] == _quota.QIF_BLIMITS
            entry[0], entry[1] = fields[0], fields[1]
        else:
            assert sub == _quota.Q_GETINFO
        return 0

    def projid(self, path):
        st = os.lstat(path)
        return self.xattr.get((st.st_dev, st.st_ino), [0, 0])[1]

    def flags(self, path):
        st = os.lstat(path)
        return self.xattr.get((st.st_dev, st.st_ino), [0, 0])[0]


@pytest.fixture
def ext4(monkeypatch):
    fs = Ext4()

    class Libc:
        syscall = staticmethod(fs.syscall)

    monkeypatch.setattr(_quota.fcntl, "ioctl", fs.ioctl)
    monkeypatch.setattr(_syscall, "libc", lambda: Libc)
    return fs


def test_apply_gives_the_directory_its_own_project_and_the_limit(tmp_path, ext4):
    bundle = tmp_path / "containers" / "web1"
    (bundle / "upper" / "etc").mkdir(parents=True)
    (bundle / "upper" / "etc" / "motd").write_text("hi")
    os.symlink("motd", str(bundle / "upper" / "etc" / "link"))
    _quota.apply(str(bundle), 10 * M + 1)
    projid = ext4.projid(str(bundle))
    assert projid == (os.stat(str(bundle)).st_ino % 0xFFFFFFFE) + 1
    assert ext4.flags(str(bundle)) & _quota.FS_XFLAG_PROJINHERIT
    # what was already there is in the project too; a symlink cannot be and is left alone
    for path in ("upper", "upper/etc", "upper/etc/motd"):
        assert ext4.projid(str(bundle / path)) == projid, path
    assert ext4.projid(str(bundle / "upper" / "etc" / "link")) == 0
    assert ext4.flags(str(bundle / "upper" / "etc")) & _quota.FS_XFLAG_PROJINHERIT
    assert not ext4.flags(str(bundle / "upper" / "etc" / "motd")) & _quota.FS_XFLAG_PROJINHERIT
    assert ext4.quota[projid][:2] == [10 * 1024 + 1, 10 * 1024 + 1]  # 1K blocks, rounded up
    assert _quota.read(str(bundle)) == (10 * 1024 + 1) * 1024


def test_raise_lower_and_refuse_below_usage(tmp_path, ext4):
    bundle = tmp_path / "web1"
    bundle.mkdir()
    _quota.apply(str(bundle), 64 * M)
    projid = ext4.projid(str(bundle))
    ext4.quota[projid][2] = 40 * M  # what the container wrote
    _quota.apply(str(bundle), 128 * M)
    assert _quota.read(str(bundle)) == 128 * M
    _quota.apply(str(bundle), 48 * M)
    assert _quota.read(str(bundle)) == 48 * M and _quota.usage(str(bundle)) == 40 * M
    with pytest.raises(LimitError) as info:
        _quota.apply(str(bundle), 32 * M)
    assert info.value.details["field"] == "limits.disk"
    assert "uses 40M" in info.value.msg and "32M" in info.value.msg and "stays at 48M" in info.value.msg
    assert info.value.details["usage"] == 40 * M
    assert _quota.read(str(bundle)) == 48 * M  # untouched
    assert ext4.projid(str(bundle)) == projid  # the project is kept, not reassigned


def test_lift_and_release(tmp_path, ext4):
    bundle = tmp_path / "web1"
    bundle.mkdir()
    _quota.apply(str(bundle), 8 * M)
    projid = ext4.projid(str(bundle))
    _quota.apply(str(bundle), None)
    assert _quota.read(str(bundle)) is None and ext4.quota[projid][0] == 0
    _quota.apply(str(bundle), 8 * M)
    _quota.release(str(bundle))
    assert ext4.quota[projid][0] == 0 and _quota.read(str(bundle)) is None


def test_inherited_project_is_not_the_directorys_own(tmp_path, ext4):
    parent = tmp_path / "containers"
    (parent / "web1").mkdir(parents=True)
    _quota.apply(str(parent), 100 * M)
    (parent / "web2").mkdir()  # the kernel would give it the parent's project
    ext4.xattr[(os.stat(str(parent / "web2")).st_dev, os.stat(str(parent / "web2")).st_ino)] = [
        _quota.FS_XFLAG_PROJINHERIT, ext4.projid(str(parent))]
    assert _quota.read(str(parent / "web2")) is None
    _quota.release(str(parent / "web2"))
    assert _quota.read(str(parent)) == 100 * M  # the parent's limit stays
    _quota.apply(str(parent / "web2"), 5 * M)
    assert ext4.projid(str(parent / "web2")) not in (0, ext4.projid(str(parent)))


@pytest.mark.parametrize("quota_on, error, words", [
    (False, None, "project quota is not on"),
    (True, errno.ENOSYS, "quotactl_fd"),
])
def test_available_says_why_not(tmp_path, ext4, quota_on, error, words):
    ext4.quota_on, ext4.syscall_error = quota_on, error
    where = _quota.available(str(tmp_path / "not" / "yet"))  # the nearest existing parent is asked
    assert where["available"] is False and words in where["reason"]
    assert where["mount"].startswith("/") and where["fstype"] in where["reason"]


def test_available_and_apply_with_project_quota_on(tmp_path, ext4):
    assert _quota.available(str(tmp_path))["available"] is True
    assert (_quota.Q_GETINFO, 0) in ext4.calls and (_quota.Q_XGETQSTATV, 0) in ext4.calls


def test_accounted_but_not_enforced_is_not_available(tmp_path, ext4):
    ext4.enforced = False  # ext4 with the quota feature mounted without prjquota
    where = _quota.available(str(tmp_path))
    assert where["available"] is False and "prjquota" in where["reason"]


def test_apply_without_quota_is_a_limit_error_naming_the_reason(tmp_path, ext4):
    ext4.quota_on = False
    with pytest.raises(LimitError) as info:
        _quota.apply(str(tmp_path), 8 * M)
    assert info.value.details["field"] == "limits.disk" and "prjquota" in info.value.msg


# -- the record: parse, refusal, persist -------------------------------------------
def test_disk_is_rounded_to_kib_and_has_a_floor(tmp_path, ext4):
    norm = _limits.normalize({"disk": "10G"}, root=str(tmp_path), **HOST)
    assert norm == {"disk": 10 << 30}
    assert _limits.normalize({"disk": 1024 * 1024 + 1}, **HOST) == {"disk": 1024 * 1024 + 1024}
    with pytest.raises(ValidationError) as info:
        _limits.normalize({"disk": "512K"}, **HOST)
    assert info.value.field == "limits.disk" and "at least 1M" in info.value.msg


def test_disk_refused_where_the_root_cannot_enforce_it(tmp_path, ext4):
    ext4.quota_on = False
    with pytest.raises(ValidationError) as info:
        _limits.normalize({"memory": "64M", "disk": "1G"}, root=str(tmp_path), **HOST)
    assert info.value.field == "limits.disk"
    assert str(tmp_path) in info.value.msg and "project quota is not on" in info.value.msg
    assert _limits.normalize({"memory": "64M"}, root=str(tmp_path), **HOST) == {"memory": 64 * M}
    assert _limits.availability(str(tmp_path))["disk"]["available"] is False


def test_persist_applies_disk_to_the_bundle_and_keeps_it_out_of_config(tmp_path, ext4):
    bundle = tmp_path / "web1"
    bundle.mkdir()
    limits = {"memory": 64 * M, "disk": 20 * M}
    assert _limits.persist(str(bundle), limits, check_mode=True, config={"linux": {}}) is True
    assert _quota.read(str(bundle)) is None and not (bundle / "config.json").exists()
    assert _limits.persist(str(bundle), limits, config={"linux": {}}) is True
    assert _quota.read(str(bundle)) == 20 * M
    assert "disk" not in json.dumps(json.loads((bundle / "config.json").read_text()))
    assert _limits.persist(str(bundle), limits) is False  # idempotent
    assert _limits.read_dirs(str(bundle)) == {"disk": 20 * M}
    assert _limits.persist(str(bundle), {"memory": 64 * M}) is True  # removed: lifted
    assert _limits.read_dirs(str(bundle)) == {}
    _limits.persist(str(bundle), limits)
    _limits.release(str(bundle))
    assert _limits.read_dirs(str(bundle)) == {}


def test_this_kernel_answers_honestly(tmp_path):
    """No mock: the real system calls on this machine's filesystem."""
    where = _quota.available(str(tmp_path))
    assert where["available"] in (True, False)
    if not where["available"]:
        assert where["reason"] and where["fstype"] in where["reason"]
        with pytest.raises(ValidationError):
            _limits.normalize({"disk": "1G"}, root=str(tmp_path), **HOST)
    assert _quota.read(str(tmp_path)) is None  # nothing of ours here


def v2_cgroup(base):
    """A running container's cgroup v2 directory with every limit at its default."""
    from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.cgroups import Cgroup
    leaf = base / "ctrhost" / "h1" / "web1"
    leaf.mkdir(parents=True)
    (base / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    for name, text in (("cpuset.cpus.effective", "0-1"), ("cpuset.mems.effective", "0")):
        (base / "ctrhost" / "h1" / name).write_text(text + "\n")
    for name, text in (("cpu.max", "max 100000"), ("cpu.weight", "100"), ("cpuset.cpus", ""),
                       ("cpuset.mems", ""), ("memory.max", "max"), ("memory.swap.max", "max"),
                       ("memory.low", "0"), ("pids.max", "max"), ("io.weight", "default 100"),
                       ("io.max", ""), ("memory.current", str(8 * M))):
        (leaf / name).write_text(text + "\n")
    return Cgroup("/ctrhost/h1/web1", base=str(base), mode="v2")


def test_live_change_of_disk_goes_to_the_backend_only(tmp_path, ext4):
    from ansible_collections.ctrhost.fleet.plugins.module_utils.limits.live import apply_live

    class NoRuntime:  # nothing here is the runtime's business
        def update(self, cid, resources):
            raise AssertionError("runtime update for %r" % resources)

    cg, bundle = v2_cgroup(tmp_path / "cg"), tmp_path / "web1"
    bundle.mkdir()
    plan = apply_live(NoRuntime(), "web1", cg, {}, {"disk": 16 * M}, check_mode=True, bundle=str(bundle))
    assert plan["changed"] and plan["after"] == {"disk": 16 * M} and _quota.read(str(bundle)) is None
    done = apply_live(NoRuntime(), "web1", cg, {}, {"disk": 16 * M}, bundle=str(bundle))
    assert done["changes"] == {"disk": {"before": None, "after": 16 * M}}
    assert done["after"] == {"disk": 16 * M} == _limits.read_dirs(str(bundle))
    ext4.quota[ext4.projid(str(bundle))][2] = 12 * M
    with pytest.raises(LimitError) as info:
        apply_live(NoRuntime(), "web1", cg, {"disk": 16 * M}, {"disk": 4 * M}, bundle=str(bundle))
    assert "uses 12M" in info.value.msg
    assert apply_live(NoRuntime(), "web1", cg, {"disk": 16 * M}, {"disk": 16 * M},
                      bundle=str(bundle))["changed"] is False
