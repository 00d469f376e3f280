# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Named network namespaces of containers: ``/run/netns/ctrhost-<name>``.

A privileged container's namespace is made (unshare + bind mount, the same thing
``ip netns add`` does, through ``_syscall``: no program to start, no netlink library
to load) before the runtime starts the container and is handed to the runtime by
path, so runc treats it as external: a checkpoint does not contain it and a restore
joins the pre-made namespace at the same path. Links inside survive a runtime
stop/start and a restore.

An unprivileged container's netns is owned by its user namespace: sysfs can only be
mounted for a network namespace the container's user namespace owns, and root
inside may configure its own interfaces, as on a host. The library makes the user
namespace and a time namespace it owns (``prepare_user``); the runtime makes the
netns inside it at each start and restore, and ``_nethook`` bind-mounts it at the
same path and attaches the interfaces. It lives as long as the container runs.
"""

from __future__ import annotations

import os

from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import syscall as _syscall
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CtrhostError
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout


def path(name):
    """Path of the container's named netns (whether it exists or not)."""
    return Layout.netns_path(name)


def _is_nsfs(p):
    """True when ``p`` is a live namespace bind mount (not a stale plain file)."""
    try:
        return os.stat(p).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def exists(name):
    """True when the named netns exists and is a mounted namespace."""
    return _is_nsfs(path(name))


def ensure(name, lo=True):
    """Create the named netns if needed, with ``lo`` up inside; return its path.

    Idempotent: an existing namespace is kept as is (``lo`` is brought up
    again unless ``lo`` is false), a stale placeholder file left by an
    interrupted create is replaced.
    """
    p = path(name)
    if not exists(name):
        if os.path.lexists(p):
            _drop(p)
        try:
            _syscall.netns_create(p)
        except OSError as exc:
            raise CtrhostError("cannot create network namespace %s: %s" % (p, exc), path=p)
    elif lo:
        _lo_up(p)
    return p


def prepare_user(name, idmap):
    """An unprivileged container's start: a new user namespace with the map of ``idmap``
    ({uid, gid, size}) and a time namespace it owns, at ``/run/ctrhost/userns/<name>``
    and ``/run/ctrhost/timens/<name>``; whatever namespaces of ``name`` were left
    there are removed first (the runtime then makes the netns, see ``_nethook``)."""
    remove(name)
    try:
        _syscall.userns_create(
            Layout.userns_path(name), Layout.timens_path(name),
            "0 %d %d\n" % (idmap["uid"], idmap["size"]),
            "0 %d %d\n" % (idmap["gid"], idmap["size"]))
    except OSError as exc:
        raise CtrhostError("cannot create the user namespace of %s: %s" % (name, exc),
                           path=Layout.userns_path(name))


def remove(name):
    """Remove the named netns (links inside go with it). No error if absent."""
    p = path(name)
    if os.path.lexists(p):
        _drop(p)
    for other in (Layout.userns_path(name), Layout.timens_path(name)):
        if os.path.lexists(other):
            _drop(other)


def _drop(p):
    try:
        _syscall.netns_remove(p)
    except OSError as exc:
        raise CtrhostError("cannot remove network namespace %s: %s" % (p, exc), path=p)


def _lo_up(p):
    try:
        _syscall.netns_lo_up(p)
    except OSError as exc:
        raise CtrhostError("cannot bring lo up in network namespace %s: %s" % (p, exc), path=p)
