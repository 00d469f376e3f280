# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a dump must know before the freeze, read from ``/proc`` while the container runs:
nested namespaces of its services (refused, naming the unit), processes of users
outside its id range, file locks, inotify watches (the directories CRIU must scan for
their inodes), whether this process may read other users' limits, and a system
container's cgroup tree (``before_dump``)."""

from __future__ import annotations

import contextlib
import os

from ansible_collections.ctrhost.fleet.plugins.module_utils.container.system import cgroup_tree

NAMESPACES = ("mnt", "uts", "ipc", "net", "pid", "cgroup", "user", "time")


def _ns_ids(pid, proc="/proc"):
    out = {}
    for ns in NAMESPACES:
        with contextlib.suppress(OSError):
            out[ns] = os.readlink(os.path.join(proc, str(pid), "ns", ns))
    return out


def unit_of(pid, proc="/proc"):
    """The systemd unit (``x.service``) a process runs in, from its cgroup, or None."""
    try:
        with open(os.path.join(proc, str(pid), "cgroup")) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    paths = [line.split(":", 2)[2] for line in lines if line.count(":") >= 2]
    named = [line.split(":", 2)[2] for line in lines if ":name=systemd:" in line]
    for path in named + paths:
        for part in reversed(path.split("/")):
            if part.endswith((".service", ".scope", ".socket", ".mount")):
                return part
    return None


def comm_of(pid, proc="/proc"):
    with contextlib.suppress(OSError), open(os.path.join(proc, str(pid), "comm")) as handle:
        return handle.read().strip()
    return "?"


def nested_namespaces(init_pid, pids, proc="/proc"):
    """[{pid, comm, unit, namespaces}] of the processes among ``pids`` whose namespaces
    differ from init's (``init_pid``): CRIU cannot dump nested namespaces."""
    base = _ns_ids(init_pid, proc)
    found = []
    for pid in sorted(pids):
        ids = _ns_ids(pid, proc)
        differ = sorted(ns for ns, ident in ids.items() if base.get(ns) and ident != base[ns])
        if differ:
            found.append(dict(pid=pid, comm=comm_of(pid, proc), unit=unit_of(pid, proc),
                              namespaces=["own %s namespace" % ns for ns in differ]))
    return found


def describe_nested(found):
    """One line per unit for an error message."""
    units = {}
    for entry in found:
        key = entry["unit"] or "%s (pid %d)" % (entry["comm"], entry["pid"])
        units.setdefault(key, set()).update(entry["namespaces"])
    return "; ".join("%s: %s" % (unit, ", ".join(sorted(ns)))
                     for unit, ns in sorted(units.items()))


def fdinfo_lines(pids, proc="/proc"):
    """Every line of /proc/PID/fdinfo/* of ``pids`` (processes or fds gone: skipped)."""
    for pid in pids:
        fdinfo = os.path.join(proc, str(pid), "fdinfo")
        try:
            entries = os.listdir(fdinfo)
        except OSError:
            continue
        for fd in entries:
            try:
                with open(os.path.join(fdinfo, fd)) as handle:
                    lines = handle.readlines()
            except OSError:
                continue
            yield from lines


def locks_held(pids, proc="/proc"):
    """Whether any of ``pids`` has a file lock on one of its open files (the ``lock:``
    lines of /proc/PID/fdinfo: POSIX, FLOCK and OFD locks alike, also those taken by a
    parent that has exited since, which /proc/locks lists under the parent's pid)."""
    return any(line.startswith("lock:") for line in fdinfo_lines(pids, proc))


def inotify_watches(pids, proc="/proc"):
    """{(st_dev, inode)} watched by the inotify handles of ``pids``."""
    out = set()
    for line in fdinfo_lines(pids, proc):
        if line.startswith("inotify "):
            fields = dict(f.split(":", 1) for f in line.split()[1:] if ":" in f)
            with contextlib.suppress(KeyError, ValueError):
                sdev = int(fields["sdev"], 16)
                out.add((os.makedev(sdev >> 20, sdev & 0xFFFFF), int(fields["ino"], 16)))
    return out


def watched_dirs(rootfs, watches):
    """Container paths of the directories holding the files and directories the
    ``watches`` point at under ``rootfs`` (one file system: the rootfs mount), for
    CRIU's ``irmap-scan-path``. A restored watch sits on a symlink's target (CRIU
    reopens it by path: ``/etc/localtime`` -> ``/usr/share/zoneinfo/...``)."""
    try:
        dev = os.lstat(rootfs).st_dev
    except OSError:
        return []
    wanted = {ino for d, ino in watches if d == dev}
    found = set()
    todo = [rootfs]
    while todo and wanted:
        here = todo.pop()
        try:
            entries = list(os.scandir(here))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.inode() in wanted and entry.stat(follow_symlinks=False).st_dev == dev:
                    wanted.discard(entry.inode())
                    found.add("/" + os.path.relpath(here, rootfs).lstrip("."))
                if entry.is_dir(follow_symlinks=False) and \
                        entry.stat(follow_symlinks=False).st_dev == dev:
                    todo.append(entry.path)  # not another mount (tmpfs /run, /proc)
            except OSError:
                continue
    return sorted(p.replace("//", "/") for p in found)


def may_read_limits(status="/proc/self/status"):
    """Whether this process has CAP_SYS_RESOURCE (prlimit on another user's process)."""
    with contextlib.suppress(OSError, ValueError), open(status) as handle:
        for line in handle:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> 24 & 1)
    return True


def foreign_users(pids, proc="/proc"):
    """Like ``nested_namespaces``, the processes whose uids are not this process's, but
    those of a user namespace this process owns (an unprivileged container's)."""
    from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.syscall import own_child_userns

    mine = str(os.getuid())
    found = []
    for pid in sorted(pids):
        if own_child_userns(os.path.join(proc, str(pid), "ns", "user"), proc):
            continue
        with contextlib.suppress(OSError), open(os.path.join(proc, str(pid), "status")) as handle:
            uids = next((line.split()[1:] for line in handle if line.startswith("Uid:")), [])
            if uids and any(u != mine for u in uids):
                found.append(dict(pid=pid, comm=comm_of(pid, proc), unit=unit_of(pid, proc),
                                  namespaces=["uid %s" % uids[1]]))
    return found


def before_dump(cgroup, rootfs, init_pid, system):
    """What a dump of the container needs to know, found before anything is frozen:
    {pids, file_locks, scan_paths, cgroup_tree}. Raises ConflictError naming the units
    whose processes sit in nested namespaces (CRIU cannot dump them)."""
    from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ConflictError

    pids = cgroup.procs()
    nested = nested_namespaces(init_pid, [p for p in pids if p != init_pid]) if init_pid else []
    if nested:
        raise ConflictError(
            "name: CRIU cannot dump processes in namespaces of their own: %s; switch that "
            "sandboxing off for the unit (e.g. ProtectHostname=no, PrivateTmp=no, "
            "PrivateNetwork=no in a drop-in) or stop it first. Nothing was frozen."
            % describe_nested(nested), field="name", nested=nested)
    foreign = [] if may_read_limits() else foreign_users(pids)
    if foreign:
        raise ConflictError(
            "name: CRIU cannot read the resource limits of processes running as another user "
            "without CAP_SYS_RESOURCE, which this host's root lacks: %s. Nothing was frozen."
            % describe_nested(foreign), field="name", foreign_users=foreign)
    scan = watched_dirs(rootfs, inotify_watches(pids)) if rootfs else []
    return dict(pids=len(pids), file_locks=locks_held(pids), scan_paths=scan,
                cgroup_tree=cgroup_tree(cgroup.dirs()) if system else None)
