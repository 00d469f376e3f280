# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A container's cgroup on cgroup v1, hybrid or v2, as files: find, read, write and
compare them (``canon``), read usage and the freezer, lower memory safely, remove the
leaf directories. Which file holds which limit is ``_limits``' business.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time

from ansible_collections.ctrhost.fleet.plugins.module_utils.core import units as _units
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import (
    ConflictError,
    LimitError,
    ValidationError,
)

DEFAULT_BASE = "/sys/fs/cgroup"
V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "freezer")
UNLIMITED = 1 << 62  # v1 reports 'unlimited' as PAGE_COUNTER_MAX pages (~2^63)
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def detect_mode(base=DEFAULT_BASE):
    """'v1', 'hybrid' or 'v2' for the hierarchy at ``base``: from ``_sysinfo`` (mountinfo)
    for the real one, from the files for a sample tree."""
    if base == DEFAULT_BASE:
        from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.sysinfo import cgroup_layout
        mode = cgroup_layout()["mode"]
        if mode in ("v1", "v2", "hybrid"):
            return mode
    if os.path.exists(os.path.join(base, "cgroup.controllers")):
        return "v2"
    return "hybrid" if os.path.exists(os.path.join(base, "unified", "cgroup.controllers")) else "v1"


def canon(name, text):
    """File content -> comparable form ('max' for every spelling of unlimited)."""
    text = (text or "").strip()
    if name == "cpu.cfs_quota_us" and text.startswith("-"):
        return "max"
    if name in ("cpuset.cpus", "cpuset.mems"):
        return _units.parse_cpuset(text)[1] if text else ""
    if name == "cpu.max":
        return "max" if text.startswith("max") else text.split()[0]
    if name in ("io.weight", "io.bfq.weight", "blkio.bfq.weight"):
        return text.split()[-1] if text else text
    if text.lstrip("-").isdigit() and (name.startswith("memory.") and (int(text) >= UNLIMITED or int(text) == -1)):
        return "max"
    return text


def throttle_map(text, part):
    """blkio.throttle.*_bps_device or io.max content -> {'maj:min': rate} of ``part``
    (rbps or wbps; io.max holds both)."""
    out = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and int(parts[1]) > 0:
            out[parts[0]] = int(parts[1])
        elif len(parts) >= 2:
            for item in parts[1:]:
                name, _sep, value = item.partition("=")
                if name == part and value.isdigit():
                    out[parts[0]] = int(value)
    return out


def throttle_canon(text, part):
    """Comparable form of a throttle file: 'maj:min=rate,...' sorted by device."""
    items = sorted(throttle_map(text, part).items(), key=lambda kv: tuple(map(int, kv[0].split(":"))))
    return ",".join("%s=%d" % kv for kv in items)


def _page(value):
    return value // PAGE * PAGE


class Cgroup:
    """The cgroup at ``cgroups_path`` (as in config.json, e.g. /ctrhost/host1/web1)."""

    def __init__(self, cgroups_path, base=DEFAULT_BASE, mode=None):
        if not isinstance(cgroups_path, str) or ":" in cgroups_path or ".." in cgroups_path.split("/"):
            raise ValidationError("cgroups_path", "expected a cgroupfs path such as /ctrhost/host1/web1 "
                                  "(systemd slice:prefix:name paths are not supported), got %r"
                                  % (cgroups_path,))
        self.path = "/" + cgroups_path.strip("/")
        self.base = base
        self.mode = mode or detect_mode(base)
        self.v2 = self.mode == "v2"

    # -------------------------------------------------------------- files
    def hierarchy(self, controller):
        """Mount point of ``controller`` (v1/hybrid) or the unified root (v2)."""
        if self.v2:
            return self.base
        exact = os.path.join(self.base, controller)
        if os.path.isdir(exact):
            return exact
        for entry in sorted(os.listdir(self.base)) if os.path.isdir(self.base) else ():
            if controller in entry.split(","):
                return os.path.join(self.base, entry)
        return None

    def dir(self, controller=None):
        root = self.hierarchy(controller or "memory")
        return os.path.join(root, self.path.lstrip("/")) if root else None

    def file(self, controller, name):
        directory = self.dir(controller)
        return os.path.join(directory, name) if directory else None

    def read(self, controller, name, parent=False):
        path = self.file(controller, name)
        if path and parent:
            path = os.path.join(os.path.dirname(os.path.dirname(path)), name)
        try:
            with open(path) as handle:
                return handle.read().strip()
        except (OSError, TypeError):
            return None

    def write(self, controller, name, value):
        path = self.file(controller, name)
        if path is None:
            raise LimitError("cgroup controller %s is not mounted under %s" % (controller, self.base),
                             file=name)
        with open(path, "w") as handle:
            handle.write(str(value))

    def has(self, controller, name):
        path = self.file(controller, name)
        return bool(path) and os.path.exists(path)

    def exists(self):
        if self.v2:
            return os.path.isdir(self.dir())
        return any(self.dir(c) and os.path.isdir(self.dir(c)) for c in V1_CONTROLLERS)

    def roots(self):
        """The hierarchies' mount points (the unified root on v2)."""
        if self.v2:
            return [self.base]
        return [os.path.join(self.base, e) for e in sorted(os.listdir(self.base))
                if os.path.isdir(os.path.join(self.base, e))
                and not os.path.islink(os.path.join(self.base, e))]

    def dirs(self, create=False):
        """{hierarchy (mount point's leaf, ``unified`` on v2): the container's directory}
        of the hierarchies that have it (all of them, made where missing, with ``create``)."""
        out = {}
        for root in self.roots():
            leaf = os.path.join(root, self.path.lstrip("/"))
            if create and not os.path.isdir(leaf):
                os.makedirs(leaf, exist_ok=True)
            if os.path.isdir(leaf):
                out["unified" if self.v2 else os.path.basename(root)] = leaf
        return out

    def remove(self):
        """rmdir the container's directory and its sub-cgroups (a system container's
        init makes its own) in every hierarchy; returns the paths removed."""
        removed = []
        for root in self.roots():
            leaf = os.path.join(root, self.path.lstrip("/"))
            if not os.path.isdir(leaf):
                continue
            for here, _dirs, _files in sorted(os.walk(leaf), key=lambda e: -len(e[0])):
                try:
                    os.rmdir(here)
                    removed.append(here)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    if exc.errno == errno.EBUSY:
                        raise ConflictError("cgroup %s still has processes or children" % here,
                                            path=here)
                    raise
        return removed

    def procs(self):
        """Pids in the container's cgroup and its sub-cgroups."""
        top = self.dir("pids" if not self.v2 else None)
        pids = []
        for here, _dirs, _files in os.walk(top) if top else ():
            with contextlib.suppress(OSError), open(os.path.join(here, "cgroup.procs")) as handle:
                pids.extend(int(p) for p in handle.read().split())
        return pids

    # -------------------------------------------------------------- state
    def freezer_state(self):
        """'thawed', 'freezing' or 'frozen' (None when the cgroup is gone)."""
        if self.v2:
            value = self.read(None, "cgroup.freeze")
            if value is None:
                return None
            events = self.read(None, "cgroup.events") or ""
            if value == "1":
                return "frozen" if "frozen 1" in events else "freezing"
            return "thawed"
        value = self.read("freezer", "freezer.state")
        return value.lower() if value else None

    def freeze(self, timeout=2.0, poll=0.001):
        """Freeze the cgroup and wait (polling every ``poll`` seconds) until it is frozen;
        True then. When it does not settle within ``timeout`` it is thawed again: False."""
        if self.v2:
            self.write(None, "cgroup.freeze", "1")
        else:
            self.write("freezer", "freezer.state", "FROZEN")
        deadline = time.monotonic() + timeout
        while True:
            state = self.freezer_state()
            if state == "frozen":
                return True
            if state is None or time.monotonic() >= deadline:
                break
            time.sleep(poll)
        with contextlib.suppress(OSError, LimitError):
            self.thaw()
        return False

    def thaw(self):
        if self.v2:
            self.write(None, "cgroup.freeze", "0")
        else:
            self.write("freezer", "freezer.state", "THAWED")

    def usage(self):
        """memory current/peak (bytes), cpu time (ns), pids, oom kills."""
        def num(controller, name):
            value = self.read(controller, name)
            return int(value) if value and value.lstrip("-").isdigit() else None

        def field(controller, name, key):
            for line in (self.read(controller, name) or "").splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0] == key:
                    return int(parts[1])
            return None

        if self.v2:
            usec = field(None, "cpu.stat", "usage_usec")
            return dict(memory_current=num(None, "memory.current"), memory_peak=num(None, "memory.peak"),
                        cpu_ns=usec * 1000 if usec is not None else None,
                        pids_current=num(None, "pids.current"),
                        oom_kills=field(None, "memory.events", "oom_kill"))
        return dict(memory_current=num("memory", "memory.usage_in_bytes"),
                    memory_peak=num("memory", "memory.max_usage_in_bytes"),
                    cpu_ns=num("cpuacct", "cpuacct.usage"), pids_current=num("pids", "pids.current"),
                    oom_kills=field("memory", "memory.oom_control", "oom_kill"))

    # -------------------------------------------------------------- limit files
    def parent_cpuset(self, which):
        """The parent's cpu (which='cpus') or mem list: what an unset cpuset inherits."""
        name = "cpuset.%s.effective" % which if self.v2 else "cpuset.%s" % which
        return canon("cpuset.cpus", self.read("cpuset", name, parent=True))

    def memory_limit(self):
        """The memory limit in bytes (0 when unlimited or unreadable)."""
        name = "memory.max" if self.v2 else "memory.limit_in_bytes"
        text = canon(name, self.read(None if self.v2 else "memory", name))
        return int(text) if text and text.isdigit() else 0

    def write_throttle(self, part, want):
        """Make the io throttle ``part`` (rbps or wbps) exactly ``want`` ({'maj:min':
        bytes/s}), removing other devices."""
        controller, name = (None, "io.max") if self.v2 else (
            "blkio", "blkio.throttle.%s_bps_device" % ("read" if part == "rbps" else "write"))
        have = throttle_map(self.read(controller, name), part)
        for device in sorted(set(have) | set(want)):
            if have.get(device) == want.get(device):
                continue
            rate = want.get(device)
            if self.v2:
                self.write(controller, name, "%s %s=%s" % (device, part, rate or "max"))
            else:
                self.write(controller, name, "%s %d" % (device, rate or 0))

    # -------------------------------------------------------------- memory
    def lower_memory(self, target, steps=4, settle=0.1, field="limits.memory"):
        """Bring usage under ``target`` before the limit is set, without an OOM kill.

        v2: ask the kernel to reclaim (memory.reclaim; memory.high where it is absent).
        v1: step memory.limit_in_bytes down from the usage to ``target``; the kernel
        reclaims at each step and refuses (EBUSY) rather than OOM-kill. On failure the
        previous limit is restored and LimitError states usage and requested limit.
        """
        usage = self.usage()
        current, kills = usage["memory_current"], usage["oom_kills"]
        if current is None or current <= target:
            return dict(usage=current, stepped=False)
        ctl = None if self.v2 else "memory"
        limit_file = "memory.max" if self.v2 else "memory.limit_in_bytes"
        old = self.read(ctl, limit_file)
        try:
            if self.v2 and self.has(None, "memory.reclaim"):
                with contextlib.suppress(OSError):  # EAGAIN: not all of it; measured below
                    self.write(None, "memory.reclaim", str(current - target + 4 * PAGE))
            elif self.v2:
                high = self.read(None, "memory.high")
                self.write(None, "memory.high", str(_page(target)))
                time.sleep(settle)
                self.write(None, "memory.high", high or "max")
            else:
                for i in range(1, steps + 1):
                    step = _page(current - (current - target) * i // steps)
                    self.write(ctl, limit_file, str(max(step, _page(target))))
                    time.sleep(settle / steps)
        except OSError as exc:
            self._restore(ctl, limit_file, old)
            now = self.usage()["memory_current"]
            raise LimitError(
                "%s: cannot lower the memory limit to %s: the container uses %s (%s after reclaim), "
                "which the kernel cannot reclaim (%s); the limit stays at %s"
                % (field, _units.human_size(target), _units.human_size(current),
                   _units.human_size(now or 0), exc.strerror or exc, _fmt_limit(old)),
                field=field, usage=current, requested=target, file=self.file(ctl, limit_file))
        after = self.usage()
        if (after["oom_kills"] or 0) > (kills or 0):
            self._restore(ctl, limit_file, old)
            raise LimitError("%s: lowering memory to %s caused an OOM kill in the container (usage was %s)"
                             % (field, _units.human_size(target), _units.human_size(current)),
                             field=field, usage=current, requested=target)
        if self.v2 and (after["memory_current"] or 0) > target:
            raise LimitError(
                "%s: cannot lower the memory limit to %s: the container uses %s and only %s could be "
                "reclaimed; setting it would OOM-kill the workload, so the limit stays at %s"
                % (field, _units.human_size(target), _units.human_size(current),
                   _units.human_size(current - after["memory_current"]), _fmt_limit(old)),
                field=field, usage=after["memory_current"], requested=target)
        return dict(usage=current, stepped=True)

    def _restore(self, ctl, name, old):
        if old is not None:
            with contextlib.suppress(OSError):
                limited = old.isdigit() and int(old) < UNLIMITED
                self.write(ctl, name, old if limited else ("max" if self.v2 else "-1"))


def _fmt_limit(text):
    if not text or text == "max" or (text.isdigit() and int(text) >= UNLIMITED):
        return "unlimited"
    return _units.human_size(int(text)) if text.isdigit() else text
