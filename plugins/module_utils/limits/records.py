# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Resource limits: one record per key (``LIMITS``) says everything the library knows
about it: how the user's value is parsed into its canonical form, where it goes in the
OCI ``linux.resources`` of config.json, which cgroup v1 and v2 files hold it, what an
unset key shows and how the runtime resets it, and how it is changed on a running
container. ``normalize``, ``diff``, ``to_oci_resources`` and ``persist`` (the one
writer of limits into config.json) are driven by the table; ``_limitlive`` applies and
verifies it against the cgroup files (``_cgroups``, which knows files only).

Normalised shape (only the keys that are set)::

    cpus: 1.5                     # float, quota over a 100000 us period
    cpu_weight: 100               # 1-10000 (cgroup v2 cpu.weight; shares on v1)
    cpuset_cpus: '0-1'            # canonical cpu list
    cpuset_mems: '0'
    memory: 536870912             # bytes
    memory_swap: 1073741824       # memory + swap in bytes, -1 = swap not limited
    memory_reservation: 268435456 # soft limit in bytes
    pids: 256
    io_weight: 500                # 10-1000 (blkio weight)
    io_read_bps: [{device: /dev/vda, rate: 10485760}]   # bytes/s, sorted by device
    io_write_bps: [...]
    disk: 10737418240             # bytes (whole KiB) for the container's directory

cpu_weight reaches the runtime as OCI ``cpu.shares`` through the conversion runc uses
for cgroup v2 (``weight = 1 + (shares - 2) * 9999 // 262142``), inverted exactly, so
a v2 host shows the requested ``cpu.weight`` and a v1 host the matching ``cpu.shares``.

A key whose ``live`` is ``dir`` is not a cgroup limit: its ``backend`` keeps it on one
of the container's directories (``directory``, under the bundle) and ``persist``,
``_limitlive`` and the host's report reach it through the backend only.
"""

from __future__ import annotations

import copy
import os

from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import oci as _ocifile
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import cgroups as _cgroups
from ansible_collections.ctrhost.fleet.plugins.module_utils.limits import parse as _limitparse
from ansible_collections.ctrhost.fleet.plugins.module_utils.limits import quota as _quota
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import sysinfo as _sysinfo
from ansible_collections.ctrhost.fleet.plugins.module_utils.core import units as _units
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import NotFoundError, ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.limits.parse import (
    blkio_to_io_weight,
    io_weight_to_blkio,
    page,
    resolve_device,
    shares_to_weight,
    weight_to_shares,
)


# ---------------------------------------------------------------- the record
def _section(res, name):
    return res.setdefault(name, {})


def _memory_pair(res, value, limits):
    """memory and memory_swap travel together, so runc orders the v1 writes
    (memory.memsw.limit_in_bytes must stay >= memory.limit_in_bytes)."""
    if "memory" in limits:
        _section(res, "memory").update(limit=limits["memory"], swap=limits.get("memory_swap", -1))


def _memory_reset(res, cgroup, limits):
    _section(res, "memory").update(limit=limits.get("memory", -1), swap=limits.get("memory_swap", -1))


def _throttle_oci(name):
    def oci(res, value, limits):
        if value:
            _section(res, "blockIO")[name] = [
                dict(major=resolve_device(e["device"])[0], minor=resolve_device(e["device"])[1],
                     rate=e["rate"]) for e in value]
    return oci


def _throttle_show(cgroup, value, name):
    return ",".join("%d:%d=%d" % (resolve_device(e["device"]) + (e["rate"],))
                    for e in sorted(value or [], key=lambda e: resolve_device(e["device"])))


def _throttle_load(cgroup, text, name):
    return [dict(device=k, rate=int(v)) for k, v in (item.split("=") for item in text.split(","))]


def _throttle_files(part):
    def canon(cgroup, name, text):
        return _cgroups.throttle_canon(text, part)

    def write(cgroup, value):
        want = {"%d:%d" % resolve_device(e["device"]): e["rate"] for e in value or []}
        cgroup.write_throttle(part, want)
    return dict(canon=canon, write=write)


def _cpuset_canon(which):
    def canon(cgroup, name, text):  # empty: inherits the parent's
        return _cgroups.canon(name, text) or cgroup.parent_cpuset(which)
    return canon


def _cpuset_limit(which, parse_as):
    """``cpuset_cpus`` / ``cpuset_mems``: the same record for either cpuset file."""
    return Limit("cpuset_" + which, _limitparse.cpuset(parse_as), "str",
                 oci=lambda res, v, lim: _section(res, "cpu").update({which: v}),
                 files=("cpuset", "cpuset." + which, "cpuset." + which), load=lambda cg, text, name: text,
                 canon=_cpuset_canon(which),
                 reset=lambda res, cg, lim: _section(res, "cpu").update({which: cg.parent_cpuset(which)}),
                 reset_show=lambda cg, name: cg.parent_cpuset(which))


def _unified_or(v2_file, v2_value, section, field, v1_value):
    def reset(res, cgroup, limits):
        if cgroup.v2:
            res.setdefault("unified", {})[v2_file] = v2_value
        else:
            _section(res, section)[field] = v1_value
    return reset


def _io_weight_where(cgroup):
    if cgroup.v2:
        return None, "io.bfq.weight" if cgroup.has(None, "io.bfq.weight") else "io.weight"
    return "blkio", "blkio.weight" if cgroup.has("blkio", "blkio.weight") else "blkio.bfq.weight"


def _io_weight_reset(res, cgroup, limits):
    name = _io_weight_where(cgroup)[1]
    if name == "io.weight":
        res.setdefault("unified", {})["io.weight"] = "default 100"
    else:
        _section(res, "blockIO")["weight"] = 500 if name == "blkio.weight" else 100


def _swap_show(cgroup, value, name):
    if value is None or value == -1:
        return "max"
    return str(page(value) - page(cgroup.memory_limit())) if cgroup.v2 else str(page(value))


class Limit:
    """One limit key.

    ``parse(value, field, host)`` -> canonical value; ``oci(res, value, limits)`` sets
    it in OCI ``linux.resources``; ``files`` = (v1 controller, v1 file, v2 file) (or
    ``where(cgroup)`` -> (controller, file) when the host decides); ``show(cgroup,
    value, file)`` the canonical file content for a value (None: the unset/reset
    content, ``reset_show``); ``load(cgroup, text, file)`` the value back from it;
    ``reset(res, cgroup, limits)`` the runtime update that unsets it; ``live``:
    ``runtime`` (the runtime's update), ``cgroup`` (written to the files), ``dir``
    (kept by ``backend`` on the container's ``directory``); ``argtype``: the module
    option type."""

    def __init__(self, key, parse, argtype="raw", oci=None, files=None, where=None, show=None,
                 load=None, reset=None, reset_show="max", live="runtime", backend=None,
                 directory=None, canon=None, write=None):
        self.key, self.parse, self.argtype, self.live = key, parse, argtype, live
        self.oci = oci or (lambda res, value, limits: None)
        self.files, self._where, self.reset_show = files, where, reset_show
        self._show = show or (lambda cgroup, value, name: str(value))
        self._load = load or (lambda cgroup, text, name: int(text))
        self.reset = reset
        self.backend, self.directory = backend, directory
        self.canon = canon or (lambda cgroup, name, text: _cgroups.canon(name, text))
        self.write = write

    def where(self, cgroup):
        """(controller, file) holding the key on ``cgroup``'s host."""
        if self._where:
            return self._where(cgroup)
        return (None, self.files[2]) if cgroup.v2 else (self.files[0], self.files[1])

    def show(self, cgroup, value):
        name = self.where(cgroup)[1]
        if value is None:
            reset = self.reset_show
            return reset(cgroup, name) if callable(reset) else reset
        return self._show(cgroup, value, name)

    def load(self, cgroup, text):
        return self._load(cgroup, text, self.where(cgroup)[1])

    def actual(self, cgroup):
        """Canonical content of the key's file (None when the file is missing)."""
        controller, name = self.where(cgroup)
        text = cgroup.read(controller, name)
        return None if text is None else self.canon(cgroup, name, text)


def _p_disk(value, field, host):
    """At least 1M, rounded up to whole KiB (the quota's unit); refused where the
    filesystem under the containers' root cannot enforce it."""
    size = _units.parse_size(value, field)
    if size < 1024 * 1024:
        raise ValidationError(field, "expected at least 1M, got %r" % (value,))
    where = _quota.available(host["root"]) if host.get("root") else dict(available=True)
    if not where["available"]:
        raise ValidationError(field, "disk limits are not available under %s: %s"
                              % (host["root"], where["reason"]))
    return -(-size // 1024) * 1024


LIMITS = (
    Limit("cpus", _limitparse.cpus,
          oci=lambda res, v, lim: _section(res, "cpu").update(quota=_units.cpus_to_quota(v),
                                                              period=_units.CPU_PERIOD),
          files=("cpu", "cpu.cfs_quota_us", "cpu.max"),
          show=lambda cg, v, name: str(_units.cpus_to_quota(v)),
          load=lambda cg, text, name: int(text) / _units.CPU_PERIOD,
          reset=lambda res, cg, lim: _section(res, "cpu").update(quota=-1, period=_units.CPU_PERIOD)),
    Limit("cpu_weight", _limitparse.int_range(1, 10000, "cpu weight"), "int",
          oci=lambda res, v, lim: _section(res, "cpu").update(shares=weight_to_shares(v)),
          files=("cpu", "cpu.shares", "cpu.weight"),
          show=lambda cg, v, name: str(v if cg.v2 else weight_to_shares(v)),
          load=lambda cg, text, name: int(text) if cg.v2 else shares_to_weight(int(text)),
          reset=_unified_or("cpu.weight", "100", "cpu", "shares", 1024),
          reset_show=lambda cg, name: "100" if cg.v2 else "1024"),
    _cpuset_limit("cpus", "cpuset"),
    _cpuset_limit("mems", "mems"),
    Limit("memory", _limitparse.memory, oci=_memory_pair, reset=_memory_reset,
          files=("memory", "memory.limit_in_bytes", "memory.max"),
          show=lambda cg, v, name: str(page(v))),
    Limit("memory_swap", _limitparse.memory_swap, oci=_memory_pair, reset=_memory_reset,
          files=("memory", "memory.memsw.limit_in_bytes", "memory.swap.max"), show=_swap_show,
          load=lambda cg, text, name: int(text) + (cg.memory_limit() if cg.v2 else 0)),
    Limit("memory_reservation", _limitparse.memory_reservation,
          oci=lambda res, v, lim: _section(res, "memory").update(reservation=v),
          files=("memory", "memory.soft_limit_in_bytes", "memory.low"),
          show=lambda cg, v, name: str(page(v)),
          reset=_unified_or("memory.low", "0", "memory", "reservation", -1),
          reset_show=lambda cg, name: "0" if cg.v2 else "max"),
    Limit("pids", _limitparse.int_range(1, _limitparse.MAX_PIDS, "pids limit"), "int",
          oci=lambda res, v, lim: res.update(pids=dict(limit=v)),
          files=("pids", "pids.max", "pids.max"),
          reset=lambda res, cg, lim: res.update(pids=dict(limit=-1))),
    Limit("io_weight", _limitparse.int_range(10, 1000, "io weight"), "int",
          oci=lambda res, v, lim: _section(res, "blockIO").update(weight=v),
          where=_io_weight_where, reset=_io_weight_reset,
          show=lambda cg, v, name: str(blkio_to_io_weight(v) if name == "io.weight" else v),
          load=lambda cg, text, name: io_weight_to_blkio(int(text)) if name == "io.weight" else int(text),
          reset_show=lambda cg, name: "500" if name == "blkio.weight" else "100"),
    # runc update leaves the io throttles alone: they are written to the files.
    Limit("io_read_bps", _limitparse.io_list, oci=_throttle_oci("throttleReadBpsDevice"), live="cgroup",
          files=("blkio", "blkio.throttle.read_bps_device", "io.max"),
          show=_throttle_show, load=_throttle_load, reset_show="",
          **_throttle_files("rbps")),
    Limit("io_write_bps", _limitparse.io_list, oci=_throttle_oci("throttleWriteBpsDevice"), live="cgroup",
          files=("blkio", "blkio.throttle.write_bps_device", "io.max"),
          show=_throttle_show, load=_throttle_load, reset_show="",
          **_throttle_files("wbps")),
    # a project quota on the container's directory (upper and work inherit it)
    Limit("disk", _p_disk, live="dir", backend=_quota, directory="."),
)
OPTIONS = {limit.key: limit for limit in LIMITS}
KEYS = tuple(OPTIONS)
CGROUP_KEYS = tuple(limit.key for limit in LIMITS if limit.live != "dir")
DIR_KEYS = tuple(limit.key for limit in LIMITS if limit.live == "dir")


def argument_spec():
    """The ``limits`` suboptions of the module argument specs."""
    return {limit.key: dict(type=limit.argtype) for limit in LIMITS}


# ---------------------------------------------------------------- declared limits
def host_facts(root=None):
    """cpus (the affinity-aware count of ``_sysinfo``), memory, cpuset and mems of
    this host, and the containers' ``root`` (for ``normalize``)."""
    def _list(path, default):
        try:
            with open(path) as handle:
                return _units.parse_cpuset(handle.read().strip())[0]
        except (OSError, ValidationError):
            return default
    cpus = _sysinfo.cpu_count()
    return dict(cpus=cpus, memory=_sysinfo.meminfo()["total"] or 0, root=root,
                cpuset=_list("/sys/devices/system/cpu/online", list(range(cpus))),
                mems=_list("/sys/devices/system/node/online", [0]))


def normalize(raw, host_cpus, host_memory, host_cpuset, host_mems=None, field="limits", root=None):
    """Validate ``raw`` user limits and return the normalised dict (see module doc).
    ``root``: the containers' root, where the directory-backed keys must be available."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValidationError(field, "expected a dict of limits, got %r" % (raw,))
    unknown = sorted(k for k in raw if k not in OPTIONS)
    if unknown:
        raise ValidationError("%s.%s" % (field, unknown[0]),
                              "unknown limit; valid keys: %s" % ", ".join(KEYS))
    host = dict(cpus=host_cpus, memory=host_memory, cpuset=list(host_cpuset), root=root,
                mems=list(host_mems) if host_mems is not None else [0])
    out = {}
    for key, option in OPTIONS.items():
        if raw.get(key) is not None:
            out[key] = option.parse(raw[key], "%s.%s" % (field, key), host)
    swap, memory = out.get("memory_swap"), out.get("memory")
    if swap is not None and swap != -1:
        if memory is None:
            raise ValidationError(field + ".memory_swap", "needs limits.memory (it is memory + swap)")
        if swap < memory:
            raise ValidationError(field + ".memory_swap", "is memory + swap and must be >= memory "
                                  "(%s), got %s" % (_units.format_size(memory), _units.format_size(swap)))
    if memory is not None and out.get("memory_reservation", 0) > memory:
        raise ValidationError(field + ".memory_reservation", "must be <= memory (%s)"
                              % _units.format_size(memory))
    return out


def normalize_for(host, raw, field="limits"):
    """``normalize`` with a ``host_facts`` dict."""
    return normalize(raw, host["cpus"], host["memory"], host["cpuset"], host.get("mems"), field,
                     host.get("root"))


def diff(old, new):
    """{key: {before, after}} for every key whose normalised value differs."""
    old, new = old or {}, new or {}
    return {key: dict(before=old.get(key), after=new.get(key))
            for key in KEYS if old.get(key) != new.get(key)}


def to_oci_resources(limits):
    """Normalised limits -> OCI ``linux.resources`` (cpu, memory, pids, blockIO)."""
    res = {}
    for key, value in limits.items():
        OPTIONS[key].oci(res, value, limits)
    return {k: v for k, v in res.items() if v}


# ---------------------------------------------------------------- the bundle
def persist(bundle, limits, check_mode=False, config=None):
    """Make the container's bundle carry ``limits``: ``linux.resources`` of its
    config.json (device rules kept; ``config`` is a config to write instead of the one
    on disk), so that a restore or a re-create keeps them, and the directory-backed
    keys on its directories. The one writer of limits into config.json. True when
    something changed."""
    path = _ocifile.config_path(bundle)
    if config is None:
        config = _ocifile.load_config(path)
        if config is None:
            raise NotFoundError("config.json: %s does not exist" % path, path=path)
        old = copy.deepcopy((config.get("linux") or {}).get("resources") or {})
    else:
        old = None
    _ocifile.set_resources(config, to_oci_resources({k: v for k, v in limits.items() if k in CGROUP_KEYS}))
    changed = config["linux"]["resources"] != old
    if changed and not check_mode:
        _ocifile.save_config(path, config)
    for key in DIR_KEYS:
        changed = apply_dir(bundle, key, limits.get(key), check_mode) or changed
    return changed


def apply_dir(bundle, key, value, check_mode=False):
    """Set (``value``) or lift (None) the directory-backed ``key`` on the bundle's
    directory; True when it changed."""
    limit = OPTIONS[key]
    directory = os.path.join(bundle, limit.directory)
    if value is None and not os.path.isdir(directory):
        return False
    if limit.backend.read(directory) == value:
        return False
    if not check_mode:
        limit.backend.apply(directory, value, "limits." + key)
    return True


def read_dirs(bundle):
    """The directory-backed limits in force on the bundle's directories."""
    out = {}
    for key in DIR_KEYS:
        directory = os.path.join(bundle, OPTIONS[key].directory)
        value = OPTIONS[key].backend.read(directory) if os.path.isdir(directory) else None
        if value is not None:
            out[key] = value
    return out


def release(bundle):
    """Remove what the directory-backed keys keep outside the bundle (before it is deleted)."""
    for key in DIR_KEYS:
        directory = os.path.join(bundle, OPTIONS[key].directory)
        if os.path.isdir(directory):
            OPTIONS[key].backend.release(directory)


def availability(root):
    """{key: {available, reason}} of the directory-backed keys on the filesystem of ``root``."""
    return {key: OPTIONS[key].backend.available(root) for key in DIR_KEYS}
