# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Project quotas on a container's directory: the backend of ``limits.disk``.

A directory gets a project id of its own with the inherit flag
(``FS_IOC_FSSETXATTR`` through ``fcntl.ioctl``), so that everything created below
it (the overlay's upper and work directories, whose renames must stay inside one
project) is counted in that project; files already there get the id too (the walk
stays on the directory's filesystem, so the mounted rootfs is not entered). The
limit is the project's block hard limit, set and read with ``quotactl_fd(2)``
(``Q_SETQUOTA``/``Q_GETQUOTA``/``Q_GETINFO`` for ``PRJQUOTA``, Linux 5.14+) on the
directory itself: no device path, no quota tools.

The project id is the directory's inode number (folded into 32 bits): unique on
its filesystem while the directory exists. A project id equal to the parent
directory's was inherited, not given, and is not the directory's own.

Needs ext4 with the ``project`` and ``quota`` features (or XFS) mounted with
project quota on (``prjquota``); ``available`` says why not otherwise.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import stat
import struct

from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import procfs as _procfs
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import syscall as _syscall
from ansible_collections.ctrhost.fleet.plugins.module_utils.core import units as _units
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import LimitError

FS_IOC_FSGETXATTR = 0x801C581F  # _IOR('X', 31, struct fsxattr)
FS_IOC_FSSETXATTR = 0x401C5820  # _IOW('X', 32, struct fsxattr)
FS_XFLAG_PROJINHERIT = 0x200
FSXATTR = "=5I8x"  # xflags, extsize, nextents, projid, cowextsize, pad
SYS_QUOTACTL_FD = 443  # the same number on every architecture's unified table
PRJQUOTA = 2
Q_GETINFO, Q_GETQUOTA, Q_SETQUOTA = 0x800005, 0x800007, 0x800008
Q_XGETQSTATV = 0x5808  # struct fs_quota_statv: version, pad, flags, ... (160 bytes)
QSTATV_SIZE = 160
FS_QUOTA_PDQ_ENFD = 0x20  # project quota limits enforced (not only accounted)
QIF_BLIMITS = 1
DQBLK = "=8QI4x"  # if_dqblk: bhard, bsoft, curspace, ihard, isoft, curinodes, btime, itime, valid
BLOCK = 1024  # quota blocks (QIF_DQBLKSIZE)
REASONS = {
    errno.ENOSYS: "the kernel has no quotactl_fd (quota support and Linux 5.14 or later are needed)",
    errno.ESRCH: "project quota is not on for this filesystem (ext4: features quota,project and the "
                 "prjquota mount option; XFS: the prjquota mount option)",
    errno.ENOTTY: "the filesystem has no project ids (FS_IOC_FSSETXATTR)",
    errno.EOPNOTSUPP: "the filesystem does not support project quota",
    errno.EINVAL: "the filesystem does not support project quota",
    errno.EPERM: "quotactl needs CAP_SYS_ADMIN",
}


def _reason(exc):
    return REASONS.get(exc.errno, os.strerror(exc.errno or 0) or str(exc))


def quotactl(fd, cmd, projid, buf):
    """``quotactl_fd(fd, QCMD(cmd, PRJQUOTA), projid, buf)``; OSError on failure."""
    lib = _syscall.libc()
    rc = lib.syscall(ctypes.c_long(SYS_QUOTACTL_FD), ctypes.c_int(fd),
                     ctypes.c_uint((cmd << 8) | PRJQUOTA), ctypes.c_uint(projid), buf)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def get_quota(fd, projid):
    """(block hard limit in bytes, bytes used) of project ``projid``."""
    buf = ctypes.create_string_buffer(struct.calcsize(DQBLK))
    quotactl(fd, Q_GETQUOTA, projid, buf)
    fields = struct.unpack(DQBLK, buf.raw)
    return fields[0] * BLOCK, fields[2]


def set_quota(fd, projid, limit):
    """Block hard (and soft) limit of project ``projid``: ``limit`` bytes, 0 = none."""
    blocks = -(-limit // BLOCK)
    raw = struct.pack(DQBLK, blocks, blocks, 0, 0, 0, 0, 0, 0, QIF_BLIMITS)
    buf = ctypes.create_string_buffer(raw, len(raw))
    quotactl(fd, Q_SETQUOTA, projid, buf)


def enforced(fd):
    """Whether project quota limits are enforced on the filesystem of ``fd`` (not only
    accounted: ext4 enforces them when mounted with ``prjquota``); None when the kernel
    cannot say."""
    buf = ctypes.create_string_buffer(QSTATV_SIZE)
    buf[0] = b"\x01"  # FS_QSTATV_VERSION1
    try:
        quotactl(fd, Q_XGETQSTATV, 0, buf)
    except OSError:
        return None
    return bool(struct.unpack_from("=H", buf.raw, 2)[0] & FS_QUOTA_PDQ_ENFD)


def get_xattr(fd):
    """(xflags, project id) of an open file or directory."""
    buf = bytearray(struct.calcsize(FSXATTR))
    fcntl.ioctl(fd, FS_IOC_FSGETXATTR, buf)
    fields = struct.unpack(FSXATTR, bytes(buf))
    return fields[0], fields[3]


def set_project(fd, projid, inherit):
    buf = bytearray(struct.calcsize(FSXATTR))
    fcntl.ioctl(fd, FS_IOC_FSGETXATTR, buf)
    fields = list(struct.unpack(FSXATTR, bytes(buf)))
    fields[3] = projid
    if inherit:
        fields[0] |= FS_XFLAG_PROJINHERIT
    fcntl.ioctl(fd, FS_IOC_FSSETXATTR, bytearray(struct.pack(FSXATTR, *fields)))


@contextlib.contextmanager
def _opened(path, flags=os.O_RDONLY | os.O_DIRECTORY):
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def own_project(directory):
    """The directory's own project id, or 0 (none, or inherited from its parent)."""
    try:
        with _opened(directory) as fd:
            projid = get_xattr(fd)[1]
        if not projid:
            return 0
        with _opened(os.path.dirname(os.path.abspath(directory)) or "/") as fd:
            return 0 if get_xattr(fd)[1] == projid else projid
    except OSError:
        return 0


def _walk_set(directory, projid):
    """Give ``projid`` to the regular files and directories below ``directory`` that
    are on its filesystem (symlinks and special files are left alone)."""
    dev = os.lstat(directory).st_dev
    for here, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if os.lstat(os.path.join(here, d)).st_dev == dev]
        for name in dirs + files:
            path = os.path.join(here, name)
            st = os.lstat(path)
            if st.st_dev != dev or not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                continue
            flags = os.O_RDONLY | (os.O_DIRECTORY if stat.S_ISDIR(st.st_mode) else os.O_NONBLOCK)
            with _opened(path, flags) as fd:
                set_project(fd, projid, stat.S_ISDIR(st.st_mode))


def read(directory):
    """The disk limit in force on ``directory`` (bytes), None when it has none."""
    projid = own_project(directory)
    if not projid:
        return None
    try:
        with _opened(directory) as fd:
            limit = get_quota(fd, projid)[0]
    except OSError:
        return None
    return limit or None


def usage(directory):
    """Bytes the directory's project uses (None without a project of its own)."""
    projid = own_project(directory)
    if not projid:
        return None
    with _opened(directory) as fd:
        return get_quota(fd, projid)[1]


def apply(directory, limit, field="limits.disk"):
    """Set (bytes) or lift (None) the disk limit of ``directory``. Refuses a limit
    below what the directory already uses, naming the usage."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    projid = own_project(directory)
    if limit is None and not projid:
        return
    try:
        with _opened(directory) as fd:
            if not projid:
                projid = (os.fstat(fd).st_ino % 0xFFFFFFFE) + 1
                set_project(fd, projid, True)
                _walk_set(directory, projid)
            old, used = get_quota(fd, projid)
            if limit is not None and used > limit:
                raise LimitError(
                    "%s: cannot lower the disk limit to %s: the container uses %s on disk; free space "
                    "inside it first (the limit stays at %s)"
                    % (field, _units.human_size(limit), _units.human_size(used),
                       _units.human_size(old) if old else "unlimited"),
                    field=field, usage=used, requested=limit, project=projid)
            set_quota(fd, projid, limit or 0)
    except OSError as exc:
        raise LimitError("%s: cannot set a disk limit on %s: %s" % (field, directory, _reason(exc)),
                         field=field, path=directory, errno=exc.errno) from None


def release(directory):
    """Lift the limit of the directory's project (before the directory is deleted)."""
    projid = own_project(directory)
    if projid:
        with contextlib.suppress(OSError), _opened(directory) as fd:
            set_quota(fd, projid, 0)


def _filesystem(path):
    path = os.path.realpath(path)
    best = ("/", "")
    with contextlib.suppress(OSError):
        for mount in _procfs.mountinfo():
            point, fstype = mount["mount_point"], mount["fstype"]
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best[0]):
                best = (point, fstype)
    return best


def available(root):
    """{available, reason, mount, fstype}: can the filesystem holding ``root`` (or its
    nearest existing parent) enforce disk limits (project ids and project quota on)."""
    path = os.path.abspath(root)
    while not os.path.isdir(path) and path != "/":
        path = os.path.dirname(path)
    mount, fstype = _filesystem(path)
    out = dict(available=False, reason=None, mount=mount, fstype=fstype)
    try:
        with _opened(path) as fd:
            get_xattr(fd)
            quotactl(fd, Q_GETINFO, 0, ctypes.create_string_buffer(24))
            if enforced(fd) is False:
                raise OSError(errno.ESRCH, "accounted, not enforced")
    except OSError as exc:
        out["reason"] = "%s (%s on %s)" % (_reason(exc), fstype or "unknown filesystem", mount)
        return out
    out["available"] = True
    return out
