# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Readers of ``/proc``: the mount table and a process's ``stat`` line.

* ``parse_mountinfo(text)`` / ``mountinfo(path)``: the mounts of ``/proc/self/mountinfo``,
  with the kernel's octal escapes (``\\040`` for a space ...) undone in paths.
* ``mounts_below(path)``: the mount points at or below a directory, deepest first.
* ``fs_type(path)``: the file system type of the mount holding a path.
* ``proc_stat(pid)``: state, parent and start time from ``/proc/<pid>/stat``; the
  command name may hold spaces and parentheses, so the line is split at its last ``)``.
"""

from __future__ import annotations

import collections
import os
import re

MOUNTINFO = "/proc/self/mountinfo"

ProcStat = collections.namedtuple("ProcStat", "pid comm state ppid starttime")


def unescape(field):
    """A mountinfo path field with its octal escapes undone."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text):
    """[{root, mount_point, fstype, source, super_options}] of mountinfo ``text``."""
    mounts = []
    for line in (text or "").splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 6 or len(fields) < sep + 4:
            continue
        mounts.append(dict(root=unescape(fields[3]), mount_point=unescape(fields[4]),
                           fstype=fields[sep + 1], source=unescape(fields[sep + 2]),
                           super_options=fields[sep + 3].split(",")))
    return mounts


def mountinfo(path=None, missing=None):
    """The parsed mount table at ``path`` (default: this process's); ``missing`` when it
    cannot be read (None: raise)."""
    try:
        with open(path or MOUNTINFO, encoding="utf-8", errors="surrogateescape") as handle:
            text = handle.read()
    except OSError:
        if missing is None:
            raise
        return missing
    return parse_mountinfo(text)


def mounts_below(path, table=None):
    """Mount points at or below ``path`` (deepest first); [] when the table is unreadable."""
    base = os.path.realpath(path)
    found = {m["mount_point"] for m in mountinfo(table, missing=[])
             if m["mount_point"] == base or m["mount_point"].startswith(base + "/")}
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def fs_type(path, table=None):
    """File system type of the deepest mount holding ``path`` (None when the table is
    unreadable)."""
    real = os.path.realpath(path)
    best, found = "", None
    for mount in mountinfo(table, missing=[]):
        point = mount["mount_point"]
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, found = point, mount["fstype"]
    return found


def parse_stat(pid, text):
    """A ``ProcStat`` of one ``/proc/<pid>/stat`` line; ValueError when malformed."""
    head, sep, rest = text.rpartition(")")
    fields = rest.split()
    if not sep or "(" not in head or len(fields) < 20:
        raise ValueError("not a /proc/<pid>/stat line: %r" % text[:80])
    return ProcStat(int(pid), head.partition("(")[2], fields[0], int(fields[1]), int(fields[19]))


def proc_stat(pid, proc="/proc"):
    """The ``ProcStat`` of process ``pid``, or None when it is gone or unreadable."""
    try:
        with open(os.path.join(proc, str(pid), "stat"), errors="surrogateescape") as handle:
            return parse_stat(pid, handle.read())
    except (OSError, ValueError):
        return None
