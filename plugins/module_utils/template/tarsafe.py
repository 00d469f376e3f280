# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Safe extraction of rootfs tarballs (.tar, .tar.gz, .tar.bz2, .tar.xz, .tar.zst).

Every member is validated before a single byte is written. Refused, naming the member:

- absolute member names and names with a ``..`` component;
- any member that would be written through a symbolic link, a file or a device
  (``etc -> /etc`` followed by ``etc/passwd``), and a directory replaced by a
  non-directory or the reverse;
- symbolic links whose target climbs above the template root. Absolute targets
  are rootfs-absolute (how the container sees them, ``/bin/sh -> /bin/busybox``)
  and are resolved from the template root, through the other links of the archive;
- hard links whose target is not an earlier non-directory member of the archive;
- member types other than file, directory, symlink, hard link, FIFO and device.

Character and block devices are skipped by default with a note (the runtime gives
every container its own /dev); ``devices='create'`` makes them, ``'refuse'`` fails.
Modes (setuid included), numeric ownership (when running as root), mtimes and
``SCHILY.xattr`` extended attributes (file capabilities) are preserved.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import stat
import tarfile
import tempfile

from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import procfs as _procfs
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError

DEVICE_POLICIES = ("skip", "create", "refuse")
_CHUNK = 1 << 20
_MAX_HOPS = 40
_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)


class UnsafeArchiveError(ValidationError):
    """A member of the archive could write outside the destination (or is unsupported)."""

    def __init__(self, field, member, reason):
        super().__init__(field, "unsafe archive member %r: %s; nothing was extracted"
                         % (member, reason), member=member)
        self.member = member


def detect_compression(path):
    """'gzip', 'xz', 'bzip2', 'zstd' or 'none', from the magic bytes."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return "none"


def _kind(member):
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "link"
    if member.isreg():
        return "file"
    if member.isfifo():
        return "fifo"
    if member.ischr() or member.isblk():
        return "dev"
    return None


def member_path(name, field="src"):
    """Normalised relative path of a member name ('' is the root itself), or raise."""
    if "\x00" in name:
        raise UnsafeArchiveError(field, name, "the name contains a NUL byte")
    if name.startswith("/"):
        raise UnsafeArchiveError(field, name, "absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(field, name, "'..' path component")
    return "/".join(parts)


def _escape_reason(path, target, links):
    """Why the symlink ``path -> target`` leaves the tree, or None."""
    stack = [] if target.startswith("/") else path.split("/")[:-1]
    queue = target.split("/")
    hops = 0
    while queue:
        part = queue.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return "symbolic link target %r resolves outside the template root" % target
            stack.pop()
            continue
        current = "/".join(stack + [part])
        if current in links:
            hops += 1
            if hops > _MAX_HOPS:
                return None  # a loop: the kernel answers ELOOP, nothing escapes
            nxt = links[current]
            if nxt.startswith("/"):
                stack = []
            queue = nxt.split("/") + queue
            continue
        stack.append(part)
    return None


class Plan:
    """The validated members, in archive order, and what will be skipped."""

    def __init__(self):
        self.entries = []  # (name, path, kind)
        self.skipped = []
        self.kinds = {"": "dir"}
        self.links = {}

    def add(self, member, field, devices):
        name = member.name
        path = member_path(name, field)
        kind = _kind(member)
        if kind is None:
            raise UnsafeArchiveError(field, name, "unsupported member type %r" % member.type)
        if kind == "dev" and devices == "refuse":
            raise UnsafeArchiveError(field, name, "device node (devices are refused)")
        parts = path.split("/") if path else []
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            seen = self.kinds.get(prefix)
            if seen is None:
                self.kinds[prefix] = "dir"
            elif seen == "symlink":
                raise UnsafeArchiveError(field, name, "it would be written through the symbolic "
                                         "link %r (-> %s)" % (prefix, self.links[prefix]))
            elif seen != "dir":
                raise UnsafeArchiveError(field, name, "its parent %r is not a directory" % prefix)
        seen = self.kinds.get(path)
        if seen is not None and (seen == "dir") != (kind == "dir"):
            raise UnsafeArchiveError(field, name, "it replaces an earlier %s of the same name"
                                     % ("directory" if seen == "dir" else "non-directory"))
        if kind == "link":
            try:
                target = member_path(member.linkname, field)
            except UnsafeArchiveError as exc:
                raise UnsafeArchiveError(field, name, "hard link to %r (%s)" % (
                    member.linkname, exc.msg.split(": ")[-1].split(";")[0]))
            tkind = self.kinds.get(target)
            if tkind is None or tkind in ("dir", "dev") or target == path:
                raise UnsafeArchiveError(field, name, "hard link to %r, which is not an earlier "
                                         "file of the archive" % member.linkname)
            self.kinds[path] = tkind
            if tkind == "symlink":
                self.links[path] = self.links[target]
            else:
                self.links.pop(path, None)
        else:
            self.kinds[path] = kind
            if kind == "symlink":
                if not member.linkname or "\x00" in member.linkname:
                    raise UnsafeArchiveError(field, name, "empty or invalid symbolic link target")
                self.links[path] = member.linkname
            else:
                self.links.pop(path, None)
        if kind == "dev" and devices == "skip":
            self.skipped.append(name)
        self.entries.append((name, path, kind))

    def finish(self, field):
        for path, target in sorted(self.links.items()):
            reason = _escape_reason(path, target, self.links)
            if reason:
                raise UnsafeArchiveError(field, path, reason)


def _open(path, field):
    try:
        return tarfile.open(path, mode="r|*", errorlevel=2)
    except (tarfile.TarError, OSError) as exc:
        raise ValidationError(field, "%s is not a readable tar archive: %s" % (path, exc))


def _iterate(path, field):
    tar = _open(path, field)
    try:
        while True:
            try:
                member = tar.next()
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise ValidationError(field, "%s is not a valid tar archive: %s" % (path, exc))
            if member is None:
                return
            yield tar, member
    finally:
        tar.close()


def validate(path, field="src", devices="skip"):
    """Read every header of an uncompressed/gz/xz/bz2 tarball; return the Plan or raise."""
    if devices not in DEVICE_POLICIES:
        raise ValidationError("devices", "expected one of %s" % ", ".join(DEVICE_POLICIES))
    plan = Plan()
    for _tar, member in _iterate(path, field):
        plan.add(member, field, devices)
    plan.finish(field)
    return plan


def extract(path, dest, field="src", devices="skip", workdir=None, recorder=None):
    """Validate all of ``path`` and then unpack it into the empty directory ``dest``.

    Returns dict(files, dirs, symlinks, hardlinks, fifos, devices, bytes, skipped).
    A .tar.zst is first decompressed with ``zstd`` into ``workdir`` (default: next to dest).
    """
    if not os.path.isdir(dest) or os.listdir(dest):
        raise ValidationError("dest", "%s must be an existing empty directory" % dest)
    if detect_compression(path) == "zstd":
        zstd = _cli.require("zstd", "a .tar.zst archive")
        fd, plain = tempfile.mkstemp(prefix=".tp-unzstd-", dir=workdir or os.path.dirname(dest))
        os.close(fd)
        try:
            _cli.run([zstd, "-d", "-q", "-f", "-o", plain, path], recorder=recorder,
                     msg="decompressing %s" % path)
            return _extract_plain(plain, dest, field, devices)
        finally:
            os.unlink(plain)
    return _extract_plain(path, dest, field, devices)


def _extract_plain(path, dest, field, devices):
    plan = validate(path, field, devices)
    writer = _Writer(os.path.realpath(dest), devices, field)
    for index, (tar, member) in enumerate(_iterate(path, field)):
        expected = plan.entries[index] if index < len(plan.entries) else None
        if expected is None or expected[0] != member.name or expected[2] != _kind(member):
            raise ValidationError(field, "%s changed while it was being extracted" % path)
        writer.write(tar, member, expected[1])
    writer.finish()
    stats = writer.stats
    stats["skipped"] = plan.skipped
    return stats


class _Writer:
    def __init__(self, dest, devices, field):
        self.dest = dest
        self.field = field
        self.devices = devices
        self.as_root = os.geteuid() == 0
        self.dirs = []  # (target, member) applied last, deepest first
        self.safe_parents = {dest}
        self.stats = dict(files=0, dirs=0, symlinks=0, hardlinks=0, fifos=0, devices=0, bytes=0)

    def _target(self, path):
        target = os.path.join(self.dest, path) if path else self.dest
        parent = os.path.dirname(target) if path else self.dest
        if parent not in self.safe_parents:
            os.makedirs(parent, mode=0o755, exist_ok=True)
            real = os.path.realpath(parent)
            if real != self.dest and not real.startswith(self.dest + os.sep):
                raise ValidationError(self.field, "refusing to write below %s (resolves to %s)"
                                      % (parent, real))
            self.safe_parents.add(parent)
        return target

    def write(self, tar, member, path):
        target = self._target(path)
        if member.isdir():
            if path and not os.path.isdir(target):
                os.mkdir(target, 0o700)
            self.dirs.append((target, member))
            self.stats["dirs"] += 1
            return
        if os.path.lexists(target):
            os.unlink(target)
        if member.issym():
            os.symlink(member.linkname, target)
            self._owner(target, member)
            self.stats["symlinks"] += 1
        elif member.islnk():
            os.link(os.path.join(self.dest, member_path(member.linkname)), target,
                    follow_symlinks=False)
            self.stats["hardlinks"] += 1
            return
        elif member.isreg():
            self._file(tar, member, target)
        elif member.isfifo():
            os.mkfifo(target, 0o600)
            self._meta(target, member)
            self.stats["fifos"] += 1
        else:
            if self.devices != "create":
                return
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(target, 0o600 | kind, os.makedev(member.devmajor, member.devminor))
            self._meta(target, member)
            self.stats["devices"] += 1
        os.utime(target, ns=(mtime_ns(member),) * 2, follow_symlinks=False)

    def _file(self, tar, member, target):
        source = tar.extractfile(member)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(target, flags, 0o600)
        try:
            while True:
                chunk = source.read(_CHUNK)
                if not chunk:
                    break
                os.write(fd, chunk)
        finally:
            os.close(fd)
        self._meta(target, member)
        self.stats["files"] += 1
        self.stats["bytes"] += member.size

    def _owner(self, target, member):
        if self.as_root:
            os.chown(target, member.uid, member.gid, follow_symlinks=False)

    def _meta(self, target, member):
        # chown first: it clears setuid/setgid bits and file capabilities.
        self._owner(target, member)
        os.chmod(target, member.mode & 0o7777)
        for key, value in member.pax_headers.items():
            if key.startswith("SCHILY.xattr."):
                # A filesystem without xattrs (or an attribute that needs privileges): skip.
                with contextlib.suppress(OSError):
                    os.setxattr(target, key[len("SCHILY.xattr."):],
                                value.encode("utf-8", "surrogateescape"), follow_symlinks=False)

    def finish(self):
        for target, member in sorted(self.dirs, key=lambda d: d[0].count(os.sep), reverse=True):
            self._meta(target, member)
            os.utime(target, ns=(mtime_ns(member),) * 2, follow_symlinks=False)


def mtime_ns(member):
    """A member's mtime in integer nanoseconds: a pax header (GNU tar --xattrs, --posix)
    gives it as a decimal fraction, which tarfile reads as a float."""
    mtime = member.pax_headers.get("mtime")
    if mtime:
        whole, _dot, frac = mtime.partition(".")
        with contextlib.suppress(ValueError):
            sign = -1 if whole.startswith("-") else 1
            return int(whole) * 10**9 + sign * int((frac + "000000000")[:9])
    return int(round(member.mtime * 10**9))


# --- trees -----------------------------------------------------------------------------

def tree_size(path):
    """Apparent size in bytes of the regular files below ``path`` (hard links once)."""
    total = 0
    seen = set()
    for top, _dirs, files in os.walk(path):
        for leaf in files:
            st = os.lstat(os.path.join(top, leaf))
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def exchange_paths(a, b):
    """Atomically swap two paths (renameat2 RENAME_EXCHANGE); False when unsupported."""
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return func(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def safe_rmtree(path, recorder=None):
    """Remove a tree, detaching any mount below it first (never deletes through a mount)."""
    if not os.path.lexists(path):
        return
    for point in _procfs.mounts_below(path):
        _cli.run(["umount", "-l", point], recorder=recorder, msg="unmounting %s" % point)
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
        return
    shutil.rmtree(path)
