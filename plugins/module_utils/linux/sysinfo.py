# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Low-level host facts: cpus, memory, kernel, cgroup layout, runtimes, what CRIU's lazy
pages need of this process (CRIU's own probes: ``_criutool``).

Every reader of a file takes ``base`` (default ``/``) so that tests can point it
at a tree that looks like ``/proc`` and ``/sys`` of another host. Results of
external commands (versions) are cached for the life of the process:
``clear_cache()`` forgets them.
"""

from __future__ import annotations

import fcntl
import os
import re

from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import procfs as _procfs
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import MissingToolError

CGROUP_ROOT = "/sys/fs/cgroup"
CAP_SYS_RESOURCE = 24
# Options of a cgroup v1 mount that are not controllers (used when /proc/cgroups is unreadable).
_V1_NON_CONTROLLERS = {"rw", "ro", "noprefix", "clone_children", "xattr", "cpuset_v2_mode",
                       "nosuid", "nodev", "noexec", "relatime"}
# CRIU's page-pipe: struct pipe_buffer is 40 bytes on 64-bit kernels; CRIU caps a pipe at
# (8 pages / 40 bytes) slots and sets that size on the pipe it reads lazy pages through.
_PIPE_BUFFER_STRUCT = 40
_PIPE_COSTLY_PAGES = 8

_CACHE = {}


def clear_cache():
    _CACHE.clear()


def cached(key, compute):
    if key not in _CACHE:
        _CACHE[key] = compute()
    return _CACHE[key]


def host_path(base, path):
    """``path`` (absolute, as seen on the host) below ``base``."""
    return os.path.join(base or "/", path.lstrip("/"))


def read_text(path, default=None):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return default


# ---------------------------------------------------------------- cpus, memory, kernel

def parse_cpu_list(text):
    """``0-3,6,8-9`` -> sorted list of cpu numbers."""
    cpus = set()
    for part in (text or "").strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            low, high = part.split("-", 1)
            cpus.update(range(int(low), int(high) + 1))
        else:
            cpus.add(int(part))
    return sorted(cpus)


def proc_status(base="/", pid="self"):
    """``/proc/<pid>/status`` as a dict of strings."""
    fields = {}
    for line in (read_text(host_path(base, "/proc/%s/status" % pid), "") or "").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def cpu_count(base="/"):
    """CPUs this process may run on (its affinity), as ``nproc`` counts them."""
    allowed = proc_status(base).get("Cpus_allowed_list")
    if allowed:
        return len(parse_cpu_list(allowed))
    if base in ("/", "", None) and hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return online_cpu_count(base) or os.cpu_count() or 1


def online_cpu_count(base="/"):
    text = read_text(host_path(base, "/sys/devices/system/cpu/online"))
    return len(parse_cpu_list(text)) if text else None


def meminfo(base="/"):
    """``/proc/meminfo`` in bytes: total, available, free, swap_total, swap_free."""
    raw = {}
    for line in (read_text(host_path(base, "/proc/meminfo"), "") or "").splitlines():
        match = re.match(r"^(\S+):\s+(\d+)(?:\s+kB)?\s*$", line)
        if match:
            raw[match.group(1)] = int(match.group(2)) * (1024 if line.rstrip().endswith("kB") else 1)
    if "MemTotal" not in raw:
        raise MissingToolError("%s has no MemTotal line" % host_path(base, "/proc/meminfo"))
    available = raw.get("MemAvailable")
    if available is None:  # kernels before 3.14
        available = raw.get("MemFree", 0) + raw.get("Buffers", 0) + raw.get("Cached", 0)
    return dict(total=raw["MemTotal"], available=available, free=raw.get("MemFree"),
                swap_total=raw.get("SwapTotal"), swap_free=raw.get("SwapFree"))


def kernel_release(base="/"):
    text = read_text(host_path(base, "/proc/sys/kernel/osrelease"))
    if text and text.strip():
        return text.strip()
    return os.uname().release


def version_key(release):
    """Order kernel releases as GRUB and ``sort -V`` do: runs of digits as numbers
    (``6.12.12+bpo-amd64`` after ``6.1.0-18-amd64``)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.findall(r"\d+|[^\d]+", release)]


def installed_kernels(base="/"):
    """The kernel releases a reboot can boot (``/boot/vmlinuz-<release>``), and the running
    one even where /boot does not hold it, newest first."""
    found = {kernel_release(base)}
    try:
        names = os.listdir(host_path(base, "/boot"))
    except OSError:
        names = []
    found.update(name[len("vmlinuz-"):] for name in names if name.startswith("vmlinuz-") and len(name) > 8)
    return sorted(found, key=version_key, reverse=True)


def filesystems(base="/"):
    """File system types the kernel has registered (``/proc/filesystems``); loads nothing."""
    names = set()
    for line in (read_text(host_path(base, "/proc/filesystems"), "") or "").splitlines():
        parts = line.split()
        if parts:
            names.add(parts[-1])
    return names


def kernel_module_available(name, base="/", release=None):
    """Whether ``<name>.ko`` is built in or installed for ``release`` (modules.builtin/dep)."""
    moddir = host_path(base, "/lib/modules/%s" % (release or kernel_release(base)))
    pattern = re.compile(r"(^|/)%s\.ko(\.\w+)?(:|$)" % re.escape(name), re.M)
    return any(pattern.search(read_text(os.path.join(moddir, leaf), "") or "")
               for leaf in ("modules.builtin", "modules.dep"))


# ---------------------------------------------------------------- capabilities, pipes

def capability(cap, base="/"):
    """Whether this process holds capability number ``cap`` in the initial user namespace."""
    eff = proc_status(base).get("CapEff")
    if not eff:
        return False
    return bool(int(eff, 16) >> cap & 1) and initial_user_ns(base)


def initial_user_ns(base="/"):
    text = read_text(host_path(base, "/proc/self/uid_map"))
    if text is None:
        return True
    lines = [line.split() for line in text.splitlines() if line.strip()]
    return lines == [["0", "0", "4294967295"]]


def unprivileged_userfaultfd(base="/"):
    """``vm.unprivileged_userfaultfd``: whether a task without CAP_SYS_PTRACE over the
    host (an unprivileged container's, where CRIU's lazy restore opens userfaultfd) may."""
    return (read_text(host_path(base, "/proc/sys/vm/unprivileged_userfaultfd")) or "").strip() == "1"


def pipe_max_size(base="/"):
    text = read_text(host_path(base, "/proc/sys/fs/pipe-max-size"))
    return int(text.strip()) if text and text.strip().isdigit() else None


def criu_pipe_bytes(page_size=None):
    """Pipe size CRIU's page-pipe asks for when serving lazy pages, as the kernel rounds it."""
    page_size = page_size or os.sysconf("SC_PAGE_SIZE")
    pages = _PIPE_COSTLY_PAGES * page_size // _PIPE_BUFFER_STRUCT
    rounded = 1
    while rounded < pages:
        rounded <<= 1
    return rounded * page_size


def pipe_resize_probe(size):
    """Try to grow a fresh pipe to ``size`` bytes; returns (ok, error string or None)."""
    if not hasattr(fcntl, "F_SETPIPE_SZ"):
        return None, "F_SETPIPE_SZ unavailable"
    rfd, wfd = os.pipe()
    try:
        fcntl.fcntl(rfd, fcntl.F_SETPIPE_SZ, size)
        return True, None
    except OSError as exc:
        return False, os.strerror(exc.errno)
    except OverflowError as exc:
        return False, str(exc)
    finally:
        os.close(rfd)
        os.close(wfd)


def lazy_pages_verdict(uffd, uffd_noncoop, cap_sys_resource, max_size, needed, probe_ok=None):
    """Whether lazy migration through the runtime will work, and why not (None when it will)."""
    if not uffd:
        return False, "the kernel has no userfaultfd (criu check --feature uffd failed)"
    if not uffd_noncoop:
        return False, "userfaultfd lacks non-cooperative events (criu check --feature uffd-noncoop failed)"
    if probe_ok is not None:
        if probe_ok:
            return True, None
    elif cap_sys_resource or (max_size is not None and max_size >= needed):
        return True, None
    if cap_sys_resource:
        return False, "CRIU's page-pipe grows a pipe to %d bytes, and that fails here" % needed
    return False, ("CRIU's page-pipe grows a pipe to %d bytes; without CAP_SYS_RESOURCE that is "
                   "capped at fs.pipe-max-size=%s" % (needed, max_size))


# ---------------------------------------------------------------- cgroups

def proc_cgroups(base="/"):
    """``/proc/cgroups``: controller name -> {hierarchy, enabled}."""
    result = {}
    for line in (read_text(host_path(base, "/proc/cgroups"), "") or "").splitlines():
        parts = line.split()
        if len(parts) >= 4 and not line.startswith("#") and parts[1].isdigit():
            result[parts[0]] = dict(hierarchy=int(parts[1]), enabled=parts[3] == "1")
    return result


def cgroup_layout(base="/"):
    """Mode (v1/v2/hybrid/none), and where each controller is mounted.

    Returns mode, version (the hierarchy limits go through: 2 for v2, 1 for v1 and
    hybrid), controllers {name: {version, mount}}, v2_mount, v2_controllers, named.
    """
    known = {name for name, info in proc_cgroups(base).items() if info["enabled"]}
    v1, named, v2_mounts = {}, {}, []
    for mount in _procfs.parse_mountinfo(read_text(host_path(base, "/proc/self/mountinfo"), "")):
        if mount["fstype"] == "cgroup2":
            v2_mounts.append(mount["mount_point"])
        elif mount["fstype"] == "cgroup":
            for opt in mount["super_options"]:
                if opt.startswith("name="):
                    named.setdefault(opt[5:], mount["mount_point"])
                elif (opt in known) if known else ("=" not in opt and opt not in _V1_NON_CONTROLLERS):
                    v1.setdefault(opt, mount["mount_point"])
    v2_mount = None
    for preferred in (CGROUP_ROOT, CGROUP_ROOT + "/unified"):
        if preferred in v2_mounts:
            v2_mount = preferred
            break
    if v2_mount is None and v2_mounts:
        v2_mount = v2_mounts[0]
    if v2_mount == CGROUP_ROOT or (v2_mount and not v1):
        mode = "v2"
    elif v1:
        mode = "hybrid" if v2_mount else "v1"
    else:
        mode = "none"
    v2_controllers = []
    if v2_mount:
        text = read_text(host_path(base, v2_mount + "/cgroup.controllers"), "") or ""
        v2_controllers = sorted(text.split())
    controllers = {name: dict(version=1, mount=path) for name, path in v1.items()}
    for name in v2_controllers:
        controllers.setdefault(name, dict(version=2, mount=v2_mount))
    version = {"v2": 2, "v1": 1, "hybrid": 1}.get(mode)
    return dict(mode=mode, version=version, controllers=controllers, v2_mount=v2_mount,
                v2_controllers=v2_controllers, named=named)


# ---------------------------------------------------------------- command output

def trim_output(text, lines=20, chars=2000):
    kept = "\n".join((text or "").strip().splitlines()[-lines:])
    return kept[-chars:]
