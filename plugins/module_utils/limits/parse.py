# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the limit records of ``_limits`` are made of: the unit conversions runc uses
between cgroup v1 and v2 scales, block device resolution, and the parsers of the
user's values (``parse(value, field, host)`` -> canonical value)."""

from __future__ import annotations

import os
import stat

from ansible_collections.ctrhost.fleet.plugins.module_utils.core import units as _units
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError

MIN_MEMORY = 4 * 1024 * 1024
MAX_PIDS = 4194304  # the kernel's PID_MAX_LIMIT
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# ---------------------------------------------------------------- conversions
def weight_to_shares(weight):
    """cpu_weight (1-10000) -> cpu.shares such that runc's shares->weight gives it back."""
    return 2 + -(-(weight - 1) * 262142 // 9999)


def shares_to_weight(shares):
    """runc/systemd conversion of cgroup v1 cpu.shares to cgroup v2 cpu.weight."""
    return 1 + ((max(2, min(262144, shares)) - 2) * 9999) // 262142


def blkio_to_io_weight(weight):
    """runc's conversion of a blkio weight (10-1000) to cgroup v2 io.weight."""
    return 1 + (weight - 10) * 9999 // 990


def io_weight_to_blkio(value):
    return next((w for w in range(10, 1001) if blkio_to_io_weight(w) >= value), 1000)


def resolve_device(device, field="device"):
    """'/dev/vda' or '254:0' -> (major, minor)."""
    if ":" in str(device) and not str(device).startswith("/"):
        major, _sep, minor = str(device).partition(":")
        if major.isdigit() and minor.isdigit():
            return int(major), int(minor)
        raise ValidationError(field, "expected MAJ:MIN such as 254:0, got %r" % device)
    try:
        st = os.stat(device)
    except OSError as exc:
        raise ValidationError(field, "block device %r: %s" % (device, exc.strerror))
    if not stat.S_ISBLK(st.st_mode):
        raise ValidationError(field, "%r is not a block device" % device)
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def page(value):
    return value // PAGE * PAGE


# ---------------------------------------------------------------- parsers
def int_range(low, high, what):
    def parse(value, field, host):
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValidationError(field, "expected an integer %s, got %r" % (what, value))
        if not low <= value <= high:
            raise ValidationError(field, "expected %s between %d and %d, got %d"
                                  % (what, low, high, value))
        return value
    return parse


def cpus(value, field, host):
    cpus = _units.parse_cpus(value, field)
    if cpus > host["cpus"]:
        raise ValidationError(field, "%s cpus is more than this host's %d cpus" % (value, host["cpus"]))
    return cpus


def cpuset(which):
    def parse(value, field, host):
        items, text = _units.parse_cpuset(value, field)
        missing = [i for i in items if i not in host[which]]
        if missing:
            raise ValidationError(field, "%s not present on this host (it has %s)"
                                  % (_units.format_cpuset(missing), _units.format_cpuset(host[which])))
        return text
    return parse


def memory(value, field, host):
    size = _units.parse_size(value, field)
    if size < MIN_MEMORY:
        raise ValidationError(field, "expected at least 4M, got %r" % (value,))
    if host.get("memory") and size > host["memory"]:
        raise ValidationError(field, "%s is more than this host's memory (%s)"
                              % (value, _units.format_size(host["memory"])))
    return size


def memory_swap(value, field, host):
    if value in (-1, "-1") or str(value).lower() in ("unlimited", "max"):
        return -1
    return _units.parse_size(value, field)


def memory_reservation(value, field, host):
    size = _units.parse_size(value, field)
    if size < PAGE:
        raise ValidationError(field, "expected at least %d bytes, got %r" % (PAGE, value))
    if host.get("memory") and size > host["memory"]:
        raise ValidationError(field, "%s is more than this host's memory" % (value,))
    return size


def io_list(value, field, host):
    if isinstance(value, dict):  # {device: rate} shorthand
        value = [dict(device=k, rate=v) for k, v in sorted(value.items())]
    if not isinstance(value, list):
        raise ValidationError(field, "expected a list of {device, rate}, got %r" % (value,))
    out, seen = [], set()
    for index, entry in enumerate(value):
        where = "%s[%d]" % (field, index)
        if not isinstance(entry, dict) or set(entry) != {"device", "rate"}:
            raise ValidationError(where, "expected exactly the keys device and rate, got %r" % (entry,))
        device = entry["device"]
        if not isinstance(device, str) or not device:
            raise ValidationError(where + ".device", "expected a /dev path or MAJ:MIN")
        resolve_device(device, where + ".device")
        rate = _units.parse_size(entry["rate"], where + ".rate")
        if rate < 1:
            raise ValidationError(where + ".rate", "expected a rate > 0 bytes/s")
        if device in seen:
            raise ValidationError(where + ".device", "%s is listed twice" % device)
        seen.add(device)
        out.append(dict(device=device, rate=rate))
    return sorted(out, key=lambda e: e["device"])
