# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kernel limits that many containers hit before the host's memory runs out.

Some limits of the kernel are counted per host uid, and every unprivileged container
of the fleet's shared range has the same root (``linux/idmap.py``): the key quota
(``kernel.keys.maxkeys`` and ``maxbytes``; each running container's runtime joins a
session keyring of its own). What the kernel counts per user namespace (inotify
instances and watches, fanotify, namespaces) is counted up to the host's root, who makes
every container's user namespace: shared by all the containers of a host and the host's
root, unless each container's namespace has caps of its own (``cap_userns``,
``CONTAINER_CAPS``). Others are host-wide tables sized for a desktop: the
neighbour tables (one entry per container address on a bridge), asynchronous I/O
requests, pids. ``recommended`` sizes all of them for a host's memory, one rule per
setting (``RULES``, which the ``host`` role documents and ``make setup`` applies);
``key_room`` and ``refuse_start`` read the key quota in use (``/proc/key-users``) so
that a start is refused, naming the limit, before the runtime fails with "unable to
join session keyring: ... disk quota exceeded".

Every reader takes ``base`` (default ``/``) so that tests can point it at a tree
that looks like another host's ``/proc``.
"""

from __future__ import annotations

import os

from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import syscall as _syscall
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import LimitError

MIB = 1024 * 1024
# Key quota one running container takes: its runtime's session keyring (one key whose
# description is "_ses.<name>"); the quota's bytes count the description and the payload.
KEYS_PER_CONTAINER = 1
KEY_BYTES_OVERHEAD = 8
# Where the operator raises the limits.
WHERE = "the host role's ctrhost_sysctls, or sysctl -w %s=N"


def _at_least(floor, value):
    return max(int(floor), int(value))


# name -> (rule of memory in MiB, what it is for); the rules' floors are the values
# Incus's production setup guide gives (or the kernel's default when that is larger).
RULES = {
    "kernel.keys.maxkeys": (
        lambda m: _at_least(2000, 2 * m),
        "keys a non-root uid may hold; every running unprivileged container of the shared range "
        "holds one as the same uid (2 per MiB of memory, at least 2000)"),
    "kernel.keys.maxbytes": (
        lambda m: 1000 * _at_least(2000, 2 * m),
        "bytes of key descriptions and payloads a non-root uid may hold (1000 per key of "
        "kernel.keys.maxkeys, Incus's ratio)"),
    "fs.inotify.max_user_instances": (
        lambda m: _at_least(8192, 4 * m),
        "inotify instances per uid (systemd, journald, every file watcher of every container "
        "of one uid; 4 per MiB of memory, at least 8192)"),
    "fs.inotify.max_user_watches": (
        lambda m: _at_least(524288, m * MIB // 10 // 1024),
        "inotify watches per uid, about 1 KiB of kernel memory each (a tenth of memory, at "
        "least 524288)"),
    "fs.inotify.max_queued_events": (
        lambda m: 131072,
        "events queued per inotify instance before events are dropped"),
    "vm.max_map_count": (
        lambda m: 262144,
        "memory mappings per process (databases, JVMs and CRIU's restorer need many)"),
    "fs.aio-max-nr": (
        lambda m: _at_least(524288, 32 * m),
        "asynchronous I/O requests of the whole host (databases in containers; 32 per MiB of "
        "memory, at least 524288)"),
    "kernel.pid_max": (
        lambda m: 4194304,
        "highest pid: the processes and threads of every container share the host's pids"),
    "net.ipv4.neigh.default.gc_thresh3": (
        lambda m: _at_least(8192, m),
        "hard maximum of IPv4 neighbour entries (one per container address on a bridge; 1 "
        "per MiB of memory, at least 8192)"),
    "net.ipv4.neigh.default.gc_thresh2": (
        lambda m: _at_least(8192, m) // 2,
        "IPv4 neighbour entries above which garbage collection starts after 5 s (half of "
        "gc_thresh3)"),
    "net.ipv4.neigh.default.gc_thresh1": (
        lambda m: _at_least(8192, m) // 8,
        "IPv4 neighbour entries below which none is collected (an eighth of gc_thresh3)"),
    "net.ipv6.neigh.default.gc_thresh3": (
        lambda m: _at_least(8192, m),
        "hard maximum of IPv6 neighbour entries (as for IPv4)"),
    "net.ipv6.neigh.default.gc_thresh2": (
        lambda m: _at_least(8192, m) // 2,
        "IPv6 neighbour entries above which garbage collection starts (half of gc_thresh3)"),
    "net.ipv6.neigh.default.gc_thresh1": (
        lambda m: _at_least(8192, m) // 8,
        "IPv6 neighbour entries below which none is collected (an eighth of gc_thresh3)"),
    "net.core.bpf_jit_limit": (
        lambda m: 1000000000,
        "bytes of JIT-compiled BPF of unprivileged users: every unprivileged container's "
        "seccomp filter is charged to it"),
    "kernel.dmesg_restrict": (
        lambda m: 1,
        "only CAP_SYSLOG reads the kernel log (containers' roots do not)"),
}


def recommended(memory_total):
    """{sysctl: value} sized for a host of ``memory_total`` bytes (``RULES``)."""
    mib = max(1, int(memory_total) // MIB)
    return {name: rule(mib) for name, (rule, _why) in sorted(RULES.items())}


def sysctl_path(name, base="/"):
    return os.path.join(base or "/", "proc/sys", *name.split("."))


def read_sysctl(name, base="/"):
    """The integer value of sysctl ``name``, or None when the kernel has none."""
    try:
        with open(sysctl_path(name, base), encoding="ascii") as handle:
            text = handle.read().split()
    except OSError:
        return None
    try:
        return int(text[0]) if text else None
    except ValueError:
        return None


def current(names=None, base="/"):
    """{sysctl: value} now (None where the kernel has no such setting)."""
    return {name: read_sysctl(name, base) for name in sorted(names or RULES)}


def below(wanted, now):
    """Names whose value ``now`` is under ``wanted`` (a setting the kernel lacks is not)."""
    return sorted(name for name, value in wanted.items()
                  if now.get(name) is not None and now[name] < value)


def raised(wanted, now):
    """{sysctl: value}: ``wanted`` where the value ``now`` is lower, else ``now`` (a limit
    is never lowered; a setting the kernel lacks is left out)."""
    return {name: max(value, now[name]) for name, value in sorted(wanted.items())
            if now.get(name) is not None}


# ---------------------------------------------------------------- a container's own caps

# What the kernel counts per user namespace (``/proc/sys/user/<name>`` seen from inside it):
# every container gets these caps on its own user namespace, so that one container cannot
# take what the others (and the host's root, to whom the kernel also counts it: the
# namespace's owner) need. Inside, they read as its own ``user.*`` sysctls.
CONTAINER_CAPS = {
    "max_inotify_instances": 1024,
    "max_inotify_watches": 131072,
    "max_fanotify_groups": 128,
    "max_fanotify_marks": 65536,
    "max_user_namespaces": 1024,
    "max_pid_namespaces": 1024,
    "max_net_namespaces": 1024,
    "max_mnt_namespaces": 1024,
    "max_ipc_namespaces": 1024,
    "max_uts_namespaces": 1024,
    "max_cgroup_namespaces": 1024,
    "max_time_namespaces": 1024,
}


def cap_userns(ns_path, caps=None):
    """Write ``caps`` ({name: value}, default ``CONTAINER_CAPS``) as the user namespace at
    ``ns_path``'s own ``/proc/sys/user/<name>`` (a name this kernel lacks is skipped).

    A forked child joins the namespace (``setns`` needs a single-threaded process; the
    kernel gives it every capability there) and writes them with system calls only.
    OSError naming what failed."""
    setns = _syscall.libc().setns
    items = [(("/proc/sys/user/%s" % name).encode(), str(int(value)).encode())
             for name, value in sorted((caps if caps is not None else CONTAINER_CAPS).items())]
    path = os.fsencode(ns_path)
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child: system calls only, then _exit)
        code = 1
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            if setns(fd, _syscall.CLONE_NEWUSER) == 0:
                code = 0
                for leaf, value in items:
                    try:
                        out = os.open(leaf, os.O_WRONLY)
                    except FileNotFoundError:
                        continue
                    try:
                        os.write(out, value)
                    finally:
                        os.close(out)
        except OSError:
            code = 2
        finally:
            os._exit(code)
    _pid, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise OSError("cannot set the caps of user namespace %s (%s): %s" % (
            ns_path, ", ".join("user.%s" % k for k in sorted(caps or CONTAINER_CAPS)),
            "setns failed" if code == 1 else "a write failed"))


# ---------------------------------------------------------------- the key quota

def parse_key_users(text):
    """``/proc/key-users`` -> {uid: {keys, maxkeys, bytes, maxbytes, instantiated}}.

    A line: ``<uid>: <usage> <nkeys>/<ninstantiated> <qnkeys>/<maxkeys> <qnbytes>/<maxbytes>``;
    the quota counts ``qnkeys`` and ``qnbytes``."""
    out = {}
    for line in (text or "").splitlines():
        head, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or len(fields) != 4 or not head.strip().isdigit():
            continue
        try:
            _nkeys, inst = (int(v) for v in fields[1].split("/"))
            keys, maxkeys = (int(v) for v in fields[2].split("/"))
            nbytes, maxbytes = (int(v) for v in fields[3].split("/"))
        except ValueError:
            continue
        out[int(head)] = dict(keys=keys, maxkeys=maxkeys, bytes=nbytes, maxbytes=maxbytes,
                              instantiated=inst)
    return out


def key_room(uid, base="/", users=None):
    """The key quota of host ``uid``: {uid, keys, maxkeys, bytes, maxbytes, free_keys,
    free_bytes, containers_free}. A uid that holds no key is not in ``/proc/key-users``:
    it holds 0 of the sysctls' limits (root's own: ``kernel.keys.root_max*``)."""
    if users is None:
        try:
            with open(os.path.join(base or "/", "proc/key-users"), encoding="ascii") as handle:
                users = parse_key_users(handle.read())
        except OSError:
            users = {}
    entry = users.get(int(uid))
    if entry is None:
        prefix = "kernel.keys.root_max" if int(uid) == 0 else "kernel.keys.max"
        entry = dict(keys=0, bytes=0, maxkeys=read_sysctl(prefix + "keys", base),
                     maxbytes=read_sysctl(prefix + "bytes", base))
    out = dict(uid=int(uid), keys=entry["keys"], maxkeys=entry["maxkeys"], bytes=entry["bytes"],
               maxbytes=entry["maxbytes"])
    if out["maxkeys"] is None or out["maxbytes"] is None:  # no key support in this kernel
        out.update(free_keys=None, free_bytes=None, containers_free=None)
        return out
    out["free_keys"] = max(0, out["maxkeys"] - out["keys"])
    out["free_bytes"] = max(0, out["maxbytes"] - out["bytes"])
    per = key_bytes("x" * 16)
    out["containers_free"] = min(out["free_keys"] // KEYS_PER_CONTAINER, out["free_bytes"] // per)
    return out


def key_bytes(name):
    """Bytes of key quota a container called ``name`` takes when it starts."""
    return len("_ses.") + len(name) + 1 + KEY_BYTES_OVERHEAD


def refusal(room, name):
    """Why a container ``name`` cannot start with the key quota ``room`` (None when it can)."""
    if room.get("free_keys") is None:
        return None
    limit = "kernel.keys.root_max" if room["uid"] == 0 else "kernel.keys.max"
    if room["free_keys"] < KEYS_PER_CONTAINER:
        return ("%skeys: uid %d holds %d of %d keys; container %s needs %d more to start: raise "
                "it (%s)" % (limit, room["uid"], room["keys"], room["maxkeys"], name,
                             KEYS_PER_CONTAINER, WHERE % (limit + "keys")))
    if room["free_bytes"] < key_bytes(name):
        return ("%sbytes: uid %d holds %d of %d bytes of keys; container %s needs %d more to "
                "start: raise it (%s)" % (limit, room["uid"], room["bytes"], room["maxbytes"], name,
                                          key_bytes(name), WHERE % (limit + "bytes")))
    return None


def refuse_start(uid, name, base="/"):
    """Raise LimitError naming the limit when a container ``name`` whose root is host
    ``uid`` cannot get its session keyring."""
    room = key_room(uid, base)
    why = refusal(room, name)
    if why:
        raise LimitError(why, limit=why.split(":", 1)[0], key_quota=room)


def explain_runtime_failure(text, uid, name, base="/"):
    """A runtime's "unable to join session keyring ... quota exceeded" (raced past
    ``refuse_start``) said as the limit it hit; None for any other failure."""
    lowered = (text or "").lower()
    if "keyring" not in lowered or "quota" not in lowered:
        return None
    room = key_room(uid, base)
    why = refusal(room, name)
    if why:
        return why
    return ("the key quota of uid %d (kernel.keys.maxkeys %s, maxbytes %s) was full when container "
            "%s started: raise it (%s)" % (room["uid"], room["maxkeys"], room["maxbytes"], name,
                                           WHERE % "kernel.keys.maxkeys"))


def report(uids, memory_total=None, base="/"):
    """What ``host_info`` says of these limits: the values now, what this host's memory
    calls for and which are below it, and the key quota of each of ``uids`` (the roots
    of unprivileged containers; the first is the shared range's) with its headroom in
    containers; ``containers_free`` is the first's (every container of the shared range
    counts to it; one with an isolated range has a quota of its own)."""
    now = current(base=base)
    out = dict(sysctls=now)
    if memory_total:
        wanted = recommended(memory_total)
        out.update(recommended=wanted, below_recommended=below(wanted, now),
                   raise_to=raised(wanted, now))
    users = None
    try:
        with open(os.path.join(base or "/", "proc/key-users"), encoding="ascii") as handle:
            users = parse_key_users(handle.read())
    except OSError:
        users = {}
    unique = list(dict.fromkeys(int(uid) for uid in uids))
    out["key_quota"] = [key_room(uid, base, users) for uid in unique]
    out["containers_free"] = out["key_quota"][0]["containers_free"] if unique else None
    return out
