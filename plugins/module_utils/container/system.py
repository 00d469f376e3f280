# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""System containers: a full OS with systemd (or another init) as PID 1.

The mode is the container option ``init``: ``systemd`` switches it on, ``none``
off, ``auto`` (the default) switches it on when the command is a known init
(``/sbin/init``, ``/lib/systemd/systemd``, ...). In this mode the OCI config
(``apply_config``) gets:

* tmpfs on ``/run``, ``/run/lock`` and ``/tmp`` (systemd cannot mount them
  itself: it has no CAP_SYS_ADMIN);
* the container's own cgroup subtree, writable through its cgroup namespace: on
  v2 the unified hierarchy read-write (``nsdelegate`` keeps the namespace root's
  own limits out of reach); on v1 and hybrid the controllers read-only and the
  container's ``name=systemd`` directory bound read-write (systemd's legacy mode
  needs no more, and the container cannot raise its own limits);
* a terminal as console (``process.terminal``; the runtime hands the master
  to the detached logger through ``--console-socket``), so boot output reaches
  the console log and CRIU can dump it;
* ``/etc/hostname`` in the rootfs (``write_hostname``), and SIGRTMIN+3 as the
  stop signal (``stop_signal``).

What systemd must not do inside is denied the way it expects: without
CAP_SYS_ADMIN the seccomp profile answers ``mount``, ``unshare``, ``setns`` and
``bpf`` with EPERM, so unit sandboxing (``ProtectHostname=``, ``PrivateTmp=``,
``IPAddressDeny=``) is skipped with a warning, and the mount units that need
the capability (``dev-hugepages.mount``) are skipped by their condition.

For checkpoints: ``cgroup_tree`` records the container's cgroup subtree
(CRIU recreates only the cgroups that hold processes, systemd watches empty
ones too) and ``recreate_tree`` makes it again before a restore. What a dump
must know before the freeze is read by ``checkpoint/prescan.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError

INIT_MODES = ("auto", "systemd", "none")
# Commands that make ``init: auto`` a system container.
INIT_COMMANDS = ("/sbin/init", "/lib/systemd/systemd", "/usr/lib/systemd/systemd",
                 "/usr/sbin/init", "/bin/systemd")
TMPFS = (("/run", "mode=755", "size=65536k"), ("/run/lock", "mode=1777", "size=5120k"),
         ("/tmp", "mode=1777", None))
# systemd's "halt" request: it stops its units and exits.
SYSTEMD_STOP = str(int(signal.SIGRTMIN) + 3)
V1_SKIP = ("devices", "cpuset")
SYSTEMD_BIND = "/sys/fs/cgroup/systemd"


def normalize_init(value, field="init"):
    value = "auto" if value is None else value
    if value not in INIT_MODES:
        raise ValidationError(field, "expected one of %s, got %r" % (", ".join(INIT_MODES), value))
    return value


def is_system(spec):
    """Whether ``spec`` (a normalised container spec) runs an init as PID 1."""
    mode = (spec or {}).get("init") or "auto"
    if mode != "auto":
        return mode == "systemd"
    command = (spec or {}).get("command") or []
    return bool(command) and os.path.normpath(command[0]) in INIT_COMMANDS


def stop_signal(spec):
    """The signal that asks the container's init to shut down."""
    return SYSTEMD_STOP if is_system(spec) else "TERM"


def apply_config(cfg, spec, cgroup_mode=None):
    """Turn the OCI config ``cfg`` of ``spec`` into a system container's (in place).

    ``cgroup_mode`` (v1, hybrid, v2; this host's when None): on v2 the unified
    hierarchy is mounted read-write (the namespace root's own files stay the
    parent's to write: ``nsdelegate``); on v1 and hybrid the controllers stay
    read-only, so the container cannot raise its own limits, and only its
    ``name=systemd`` directory is bound read-write at ``/sys/fs/cgroup/systemd``
    (``SYSTEMD_BIND``; ``retarget`` follows a new cgroups path)."""
    if not is_system(spec):
        return cfg
    if cgroup_mode is None:
        from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.cgroups import detect_mode
        cgroup_mode = detect_mode()
    cfg["process"]["terminal"] = True
    cfg["process"]["consoleSize"] = {"height": 25, "width": 80}
    mounts = [m for m in cfg["mounts"] if m["destination"] not in {t[0] for t in TMPFS}
              and m["destination"] != SYSTEMD_BIND]
    at = next((i for i, m in enumerate(mounts) if m["destination"] == "/sys/fs/cgroup"),
              len(mounts)) + 1
    if cgroup_mode == "v2":
        mount = mounts[at - 1]
        mount["options"] = [o for o in mount.get("options") or [] if o != "ro"] + ["rw"]
    else:
        mounts.insert(at, {"destination": SYSTEMD_BIND, "type": "bind", "source": "",
                           "options": ["rbind", "rw", "nosuid", "nodev", "noexec"]})
        at += 1
    for dest, mode, size in TMPFS:
        opts = ["nosuid", "nodev", mode] + (["size=" + size.split("=")[1]] if size else [])
        mounts.insert(at, {"destination": dest, "type": "tmpfs", "source": "tmpfs",
                           "options": opts})
        at += 1
    cfg["mounts"] = mounts
    linux = cfg.setdefault("linux", {})
    if not any(ns.get("type") == "cgroup" for ns in linux.get("namespaces") or []):
        linux.setdefault("namespaces", []).append({"type": "cgroup"})
    return retarget(cfg)


def retarget(cfg, base="/sys/fs/cgroup"):
    """Point the ``name=systemd`` bind (v1, hybrid) at ``linux.cgroupsPath`` of ``cfg``
    (a restore on another host has another cgroups path); returns ``cfg``."""
    path = (cfg.get("linux") or {}).get("cgroupsPath") or ""
    for mount in cfg.get("mounts") or []:
        if mount["destination"] == SYSTEMD_BIND and mount.get("type") == "bind":
            mount["source"] = os.path.join(base, "systemd", path.lstrip("/"))
    return cfg


def delegate(cgroups_path, idmap, cgroup_mode=None, base="/sys/fs/cgroup"):
    """Give an unprivileged system container's root the cgroup directory its init
    manages (v1, hybrid: the ``name=systemd`` one bound at ``SYSTEMD_BIND``; v2: the
    unified one), made now if the runtime has not yet: systemd creates its scopes there."""
    if cgroup_mode is None:
        from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.cgroups import detect_mode
        cgroup_mode = detect_mode()
    top = base if cgroup_mode == "v2" else os.path.join(base, "systemd")
    path = os.path.join(top, cgroups_path.lstrip("/"))
    os.makedirs(path, exist_ok=True)
    for leaf in [""] + sorted(os.listdir(path)):
        entry = os.path.join(path, leaf)
        if leaf == "" or os.path.isfile(entry):
            os.chown(entry, idmap["uid"], idmap["gid"])
    return path


def write_hostname(rootfs, hostname):
    """Write ``/etc/hostname`` into the mounted ``rootfs``; True when it changed.

    The rootfs belongs to the container: no symlink in it is followed (``/etc``
    and the file are opened relative to the rootfs with O_NOFOLLOW)."""
    want = (hostname + "\n").encode()
    root = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            etc = os.open("etc", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root)
        except FileNotFoundError:
            return False  # not an OS userland: nothing reads /etc/hostname
        try:
            with contextlib.suppress(OSError):
                fd = os.open("hostname", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=etc)
                with os.fdopen(fd, "rb") as handle:
                    if handle.read() == want:
                        return False
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink("hostname", dir_fd=etc)
            fd = os.open("hostname", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644,
                         dir_fd=etc)
            with os.fdopen(fd, "wb") as handle:
                handle.write(want)
            return True
        finally:
            os.close(etc)
    finally:
        os.close(root)


# ---------------------------------------------------------------- cgroup tree

def cgroup_tree(dirs):
    """{hierarchy: [relative sub-directories, parents first]} under the container's
    cgroup directories ``dirs`` ({hierarchy: absolute path}, ``_cgroups.Cgroup.dirs``)."""
    out = {}
    for key, base in sorted(dirs.items()):
        subs = []
        for here, children, _files in os.walk(base):
            children.sort()
            rel = os.path.relpath(here, base)
            if rel != ".":
                subs.append(rel)
        out[key] = subs
    return out


def recreate_tree(dirs, tree):
    """Create the sub-directories ``tree`` (from ``cgroup_tree``) under ``dirs``;
    return how many were made. A hierarchy this host does not have is skipped, and so
    are v1's devices and cpuset: the runtime still has to set the container's own
    rules there (``devices.deny a`` is refused once a cgroup has children, an empty
    ``cpuset.cpus`` cannot take processes); CRIU makes the ones that hold processes."""
    made = 0
    for key, subs in sorted((tree or {}).items()):
        base = dirs.get(key)
        if not base or key in V1_SKIP:
            continue
        for rel in subs:
            if rel.startswith("/") or ".." in rel.split("/"):
                raise ValidationError("checkpoint.cgroup_tree", "bad cgroup path %r" % rel)
            path = os.path.join(base, rel)
            if not os.path.isdir(path):
                os.makedirs(path, exist_ok=True)
                made += 1
    return made


# ---------------------------------------------------------------- namespaces


# ---------------------------------------------------------------- before a dump
