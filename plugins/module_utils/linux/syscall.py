# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The few Linux system calls the lifecycle makes directly (through ctypes).

``mount(2)``/``umount2(2)`` for the overlay rootfs and named network
namespaces, and ``unshare(2)``/``setns(2)`` to make a network namespace and
bring its ``lo`` up (or a user namespace owning a network and a time namespace:
``userns_create``). Each is what ``mount``, ``umount`` and ``ip netns add``
do, without starting a program or importing a netlink library for it.

Namespace work runs in a short-lived thread: ``unshare``/``setns`` of the
network namespace change only the calling thread, so the caller's own
namespace is never touched, whatever fails.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import struct
import threading

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWTIME = 0x00000080
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 0x2
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
NS_GET_PARENT = 0xB702  # _IO(0xb7, 0x2)
NS_GET_OWNER_UID = 0xB704  # _IO(0xb7, 0x4)
_IFREQ = "16sH22x"  # struct ifreq: name, flags, rest of the union (40 bytes)

_LIBC = []


def libc():
    """The C library of this process (no ``find_library``: it runs ldconfig)."""
    import ctypes  # only when a call is made (importing ctypes costs a few ms)

    if not _LIBC:
        lib = ctypes.CDLL(None, use_errno=True)
        c_str, c_int, c_ulong = ctypes.c_char_p, ctypes.c_int, ctypes.c_ulong
        for name, args in (("mount", [c_str, c_str, c_str, c_ulong, c_str]),
                           ("umount2", [c_str, c_int]), ("unshare", [c_int]),
                           ("setns", [c_int, c_int])):
            func = getattr(lib, name)
            func.argtypes, func.restype = args, c_int
        _LIBC.append(lib)
    return _LIBC[0]


def _b(value):
    return None if value is None else os.fsencode(value)


def _check(rc, what, path=None):
    if rc != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)), path)


def mount(source, target, fstype, flags=0, data=None):
    """``mount(2)``; OSError (errno, reason) on failure."""
    _check(libc().mount(_b(source), _b(target), _b(fstype), flags, _b(data)), "mount", target)


def umount(target, flags=0):
    """``umount2(2)``; OSError on failure."""
    _check(libc().umount2(_b(target), flags), "umount", target)


def in_thread(func):
    """Run ``func()`` in a new thread (its own namespaces to change); return its value."""
    box = {}

    def body():
        try:
            box["value"] = func()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=body, name="ctrhost-ns", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def lo_up_here():
    """Bring ``lo`` up in the calling thread's network namespace (SIOCSIFFLAGS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        got = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, struct.pack(_IFREQ, b"lo", 0))
        flags = struct.unpack(_IFREQ, got)[1]
        if not flags & IFF_UP:
            fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | IFF_UP))


def _share_dir(directory):
    """Make ``directory`` a shared mount point, as ``ip netns add`` does for /run/netns,
    so that namespace mounts under it show in every mount namespace that shares it."""
    try:
        mount("none", directory, None, MS_SHARED | MS_REC)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: not a mount point yet
            raise
        mount(directory, directory, "none", MS_BIND | MS_REC)
        mount("none", directory, None, MS_SHARED | MS_REC)


def netns_create(path):
    """A new network namespace bind-mounted at ``path`` with ``lo`` up."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    _share_dir(directory)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))

    def body():
        _check(libc().unshare(CLONE_NEWNET), "unshare", path)
        mount("/proc/thread-self/ns/net", path, "none", MS_BIND)
        lo_up_here()

    try:
        in_thread(body)
    except BaseException:
        with contextlib.suppress(OSError):
            umount(path, MNT_DETACH)
        os.unlink(path)
        raise


def _placeholder(path, share=False):
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    if share:
        _share_dir(directory)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))


def ns_bind(source, path, share=False):
    """Bind-mount namespace file ``source`` (``/proc/<pid>/ns/<type>``) at ``path``, a new
    placeholder (``share``: its directory made a shared mount point, as for netns)."""
    _placeholder(path, share)
    try:
        mount(source, path, "none", MS_BIND)
    except BaseException:
        ns_remove(path)
        raise


def userns_create(user_path, time_path, uid_map, gid_map):
    """A new user namespace (``uid_map``/``gid_map``: the lines of its maps) owning a new
    time namespace for children; both bind-mounted at their paths. CRIU dumps only
    namespaces that the container's user namespace owns (the runtime makes the network
    namespace inside it, see ``_nethook``).

    A forked child makes them (``unshare(CLONE_NEWUSER)`` needs a single-threaded
    process) with nothing but system calls and pipe reads and writes; this process
    writes the maps and bind-mounts the child's namespaces."""
    lib = libc()
    made = []
    for path in (user_path, time_path):
        _placeholder(path)
        made.append(path)
    child_in, to_child = os.pipe()  # (read end, write end)
    from_child, child_out = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child: system calls only, then _exit)
        code = 1
        try:
            os.close(to_child)
            os.close(from_child)
            if lib.unshare(CLONE_NEWUSER) == 0:
                os.write(child_out, b"u")
                if os.read(child_in, 1) == b"m" and lib.unshare(CLONE_NEWTIME) == 0:
                    os.write(child_out, b"n")
                    os.read(child_in, 1)
                    code = 0
        finally:
            os._exit(code)
    os.close(child_in)
    os.close(child_out)
    try:
        if os.read(from_child, 1) != b"u":
            raise OSError(errno.EPERM, "unshare(CLONE_NEWUSER) failed", user_path)
        for leaf, lines in (("uid_map", uid_map), ("gid_map", gid_map)):
            with open("/proc/%d/%s" % (pid, leaf), "w") as handle:
                handle.write(lines)
        os.write(to_child, b"m")
        if os.read(from_child, 1) != b"n":
            raise OSError(errno.EPERM, "unshare of the time namespace failed", time_path)
        for path, leaf in ((user_path, "user"), (time_path, "time_for_children")):
            mount("/proc/%d/ns/%s" % (pid, leaf), path, "none", MS_BIND)
    except BaseException:
        for path in made:
            ns_remove(path)
        raise
    finally:
        with contextlib.suppress(OSError):
            os.write(to_child, b"e")
        os.close(to_child)
        os.close(from_child)
        os.waitpid(pid, 0)


def in_netns(path, func):
    """``func()`` run in a thread that entered the network namespace at ``path``; its
    value. Sockets it opens stay in that namespace after the thread ends."""
    def body():
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _check(libc().setns(fd, CLONE_NEWNET), "setns", path)
        finally:
            os.close(fd)
        return func()

    return in_thread(body)


def netns_lo_up(path):
    """Bring ``lo`` up inside the named network namespace at ``path``."""
    in_netns(path, lo_up_here)


def netns_remove(path):
    """Detach the namespace mount at ``path`` and remove the file; no error if absent."""
    ns_remove(path)


def ns_remove(path):
    """Detach the namespace mount (of any type) at ``path`` and remove the file."""
    try:
        umount(path, MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not mounted
            raise
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def own_child_userns(ns_path, proc="/proc"):
    """True when the user namespace at ``ns_path`` is a child of this process's and owned
    by its euid: the kernel then gives this process every capability in it, whatever its
    own effective set (e.g. CAP_SYS_RESOURCE, which CRIU's prlimit needs)."""
    try:
        fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        owner = bytearray(4)
        fcntl.ioctl(fd, NS_GET_OWNER_UID, owner)
        if struct.unpack("I", owner)[0] != os.geteuid():
            return False
        parent = fcntl.ioctl(fd, NS_GET_PARENT)
        try:
            return os.fstat(parent).st_ino == os.stat(os.path.join(proc, "self", "ns", "user")).st_ino
        finally:
            os.close(parent)
    except OSError:
        return False
    finally:
        os.close(fd)
