# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Resource limits: one option table drives normalisation, comparison, the OCI
``linux.resources`` of config.json, the live update through the runtime and its
verification against the cgroup files.

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

cpu_weight reaches the runtime as OCI ``cpu.shares`` through the conversion runc uses
for cgroup v2 (``weight = 1 + (shares - 2) * 9999 // 262142``), inverted exactly, so
a v2 host shows the requested ``cpu.weight`` and a v1 host the matching ``cpu.shares``.
"""

from __future__ import annotations

import copy
import os
import stat

from ansible_collections.ctrhost.fleet.plugins.module_utils import _units
from ansible_collections.ctrhost.fleet.plugins.module_utils._errors import (
    CommandError,
    LimitError,
    NotFoundError,
    ValidationError,
)

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


# ---------------------------------------------------------------- parsers
def _int_range(low, high, what):
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


def _p_cpus(value, field, host):
    cpus = _units.parse_cpus(value, field)
    if cpus > host["cpus"]:
        raise ValidationError(field, "%s cpus is more than this host's %d cpus" % (value, host["cpus"]))
    return cpus


def _cpuset_parser(which):
    def parse(value, field, host):
        items, text = _units.parse_cpuset(value, field)
        missing = [i for i in items if i not in host[which]]
        if missing:
            raise ValidationError(field, "%s not present on this host (it has %s)"
                                  % (_units.format_cpuset(missing), _units.format_cpuset(host[which])))
        return text
    return parse


def _p_memory(value, field, host):
    size = _units.parse_size(value, field)
    if size < MIN_MEMORY:
        raise ValidationError(field, "expected at least 4M, got %r" % (value,))
    if host.get("memory") and size > host["memory"]:
        raise ValidationError(field, "%s is more than this host's memory (%s)"
                              % (value, _units.format_size(host["memory"])))
    return size


def _p_swap(value, field, host):
    if value in (-1, "-1") or str(value).lower() in ("unlimited", "max"):
        return -1
    return _units.parse_size(value, field)


def _p_reservation(value, field, host):
    size = _units.parse_size(value, field)
    if size < PAGE:
        raise ValidationError(field, "expected at least %d bytes, got %r" % (PAGE, value))
    if host.get("memory") and size > host["memory"]:
        raise ValidationError(field, "%s is more than this host's memory" % (value,))
    return size


def _p_io_list(value, field, host):
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


# ---------------------------------------------------------------- the table
# name -> parse(value, field, host); ``runc`` marks what `runc update` can change
# (the io throttles are written to the cgroup files directly: runc update skips them).
OPTIONS = {
    "cpus": dict(parse=_p_cpus, runc=True),
    "cpu_weight": dict(parse=_int_range(1, 10000, "cpu weight"), runc=True),
    "cpuset_cpus": dict(parse=_cpuset_parser("cpuset"), runc=True),
    "cpuset_mems": dict(parse=_cpuset_parser("mems"), runc=True),
    "memory": dict(parse=_p_memory, runc=True),
    "memory_swap": dict(parse=_p_swap, runc=True),
    "memory_reservation": dict(parse=_p_reservation, runc=True),
    "pids": dict(parse=_int_range(1, MAX_PIDS, "pids limit"), runc=True),
    "io_weight": dict(parse=_int_range(10, 1000, "io weight"), runc=True),
    "io_read_bps": dict(parse=_p_io_list, runc=False),
    "io_write_bps": dict(parse=_p_io_list, runc=False),
}
KEYS = tuple(OPTIONS)


def host_facts():
    """cpus, memory, cpuset and mems of this host (for ``normalize``)."""
    def _list(path, default):
        try:
            with open(path) as handle:
                return _units.parse_cpuset(handle.read().strip())[0]
        except (OSError, ValidationError):
            return default
    memory = 0
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    memory = int(line.split()[1]) * 1024
    except OSError:
        pass
    cpus = os.cpu_count() or 1
    return dict(cpus=cpus, memory=memory,
                cpuset=_list("/sys/devices/system/cpu/online", list(range(cpus))),
                mems=_list("/sys/devices/system/node/online", [0]))


def normalize(raw, host_cpus, host_memory, host_cpuset, host_mems=None, field="limits"):
    """Validate ``raw`` user limits and return the normalised dict (see module doc)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValidationError(field, "expected a dict of limits, got %r" % (raw,))
    unknown = sorted(k for k in raw if k not in OPTIONS)
    if unknown:
        raise ValidationError("%s.%s" % (field, unknown[0]),
                              "unknown limit; valid keys: %s" % ", ".join(KEYS))
    host = dict(cpus=host_cpus, memory=host_memory, cpuset=list(host_cpuset),
                mems=list(host_mems) if host_mems is not None else [0])
    out = {}
    for key, option in OPTIONS.items():
        if raw.get(key) is not None:
            out[key] = option["parse"](raw[key], "%s.%s" % (field, key), host)
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


def diff(old, new):
    """{key: {before, after}} for every key whose normalised value differs."""
    old, new = old or {}, new or {}
    return {key: dict(before=old.get(key), after=new.get(key))
            for key in KEYS if old.get(key) != new.get(key)}


def _throttle(entries):
    out = []
    for entry in entries:
        major, minor = resolve_device(entry["device"])
        out.append(dict(major=major, minor=minor, rate=entry["rate"]))
    return out


def to_oci_resources(limits):
    """Normalised limits -> OCI ``linux.resources`` (cpu, memory, pids, blockIO)."""
    res = {}
    cpu = {}
    if "cpus" in limits:
        cpu.update(quota=_units.cpus_to_quota(limits["cpus"]), period=_units.CPU_PERIOD)
    if "cpu_weight" in limits:
        cpu["shares"] = weight_to_shares(limits["cpu_weight"])
    if "cpuset_cpus" in limits:
        cpu["cpus"] = limits["cpuset_cpus"]
    if "cpuset_mems" in limits:
        cpu["mems"] = limits["cpuset_mems"]
    memory = {}
    if "memory" in limits:
        memory["limit"] = limits["memory"]
        memory["swap"] = limits.get("memory_swap", -1)
    if "memory_reservation" in limits:
        memory["reservation"] = limits["memory_reservation"]
    block = {}
    if "io_weight" in limits:
        block["weight"] = limits["io_weight"]
    if limits.get("io_read_bps"):
        block["throttleReadBpsDevice"] = _throttle(limits["io_read_bps"])
    if limits.get("io_write_bps"):
        block["throttleWriteBpsDevice"] = _throttle(limits["io_write_bps"])
    for key, value in (("cpu", cpu), ("memory", memory), ("blockIO", block)):
        if value:
            res[key] = value
    if "pids" in limits:
        res["pids"] = dict(limit=limits["pids"])
    return res


def persist_to_config(config_path, limits, check_mode=False):
    """Write the limits into the bundle's config.json (``linux.resources``, device rules
    kept) so that a CRIU restore or a re-create keeps them. True when it changed."""
    from ansible_collections.ctrhost.fleet.plugins.module_utils import _oci
    config = _oci.load_config(config_path)
    if config is None:
        raise NotFoundError("config.json: %s does not exist" % config_path, path=config_path)
    old = copy.deepcopy((config.get("linux") or {}).get("resources") or {})
    _oci.set_resources(config, to_oci_resources(limits))
    if config["linux"]["resources"] == old:
        return False
    if not check_mode:
        _oci.save_config(config_path, config)
    return True


# ---------------------------------------------------------------- live update
def update_resources(keys, limits, cgroup):
    """The ``runc update --resources -`` document that moves ``keys`` to ``limits``.

    Unset keys are reset (memory/cpus/pids unlimited, cpuset to the parent's, weights
    to the default). Memory and swap always travel together so that runc orders the
    v1 writes (memory.memsw.limit_in_bytes must stay >= memory.limit_in_bytes).
    """
    keys = set(keys)
    res = to_oci_resources({k: v for k, v in limits.items() if k in keys and OPTIONS[k]["runc"]})
    unified = {}
    cpu, memory = res.setdefault("cpu", {}), res.setdefault("memory", {})
    if "cpus" in keys and "cpus" not in limits:
        cpu.update(quota=-1, period=_units.CPU_PERIOD)
    if "cpu_weight" in keys and "cpu_weight" not in limits:
        if cgroup.v2:
            unified["cpu.weight"] = "100"
        else:
            cpu["shares"] = 1024
    for key, which in (("cpuset_cpus", "cpus"), ("cpuset_mems", "mems")):
        if key in keys and key not in limits:
            cpu[which] = cgroup.parent_cpuset(which)
    if keys & {"memory", "memory_swap"}:
        memory.update(limit=limits.get("memory", -1), swap=limits.get("memory_swap", -1))
    if "memory_reservation" in keys and "memory_reservation" not in limits:
        if cgroup.v2:
            unified["memory.low"] = "0"
        else:
            memory["reservation"] = -1
    if "pids" in keys and "pids" not in limits:
        res["pids"] = dict(limit=-1)
    if "io_weight" in keys and "io_weight" not in limits:
        name = cgroup.location("io_weight")[1]
        if name == "io.weight":
            unified["io.weight"] = "default 100"
        else:
            res.setdefault("blockIO", {})["weight"] = 500 if name == "blkio.weight" else 100
    res.get("blockIO", {}).pop("throttleReadBpsDevice", None)
    res.get("blockIO", {}).pop("throttleWriteBpsDevice", None)
    if unified:
        res["unified"] = unified
    return {k: v for k, v in res.items() if v}


def apply_live(runtime, container_id, cgroup, current_limits, new_limits, check_mode=False):
    """Move a running container's cgroup to ``new_limits`` without restarting it.

    Changes go through ``runtime.update(container_id, resources)`` (``runc update
    --resources -``), the io throttles straight to the cgroup files (runc update does
    not touch them). Lowering memory below the current usage is prepared with
    ``Cgroup.lower_memory`` (reclaim or fail cleanly, never an OOM kill). Every key is
    verified against the cgroup files afterwards; a mismatch raises LimitError naming
    the file, the expected and the actual value.

    ``cgroup`` is a ``_cgroups.Cgroup`` or a cgroups path. Returns {changed, before,
    after, changes, declared_changes}: before/after are the effective limits read from
    the cgroup (after is the prediction in check mode).
    """
    if isinstance(cgroup, str):
        from ansible_collections.ctrhost.fleet.plugins.module_utils._cgroups import Cgroup
        cgroup = Cgroup(cgroup)
    new_limits = dict(new_limits or {})
    before = cgroup.read_limits()
    for key in ("io_weight",):
        controller, name = cgroup.location(key)
        if key in new_limits and not cgroup.has(controller, name):
            raise LimitError("limits.%s: this host's cgroup has no %s file (the io weight needs the "
                             "BFQ scheduler or the cgroup v2 io controller)" % (key, name),
                             field="limits." + key, file=name)
    pending = [m[0] for m in cgroup.mismatches(new_limits)]
    changes = {k: dict(before=before.get(k), after=new_limits.get(k)) for k in pending}
    result = dict(changed=bool(pending), before=before, changes=changes,
                  declared_changes=diff(current_limits, new_limits))
    if not pending or check_mode:
        result["after"] = before if not pending else _predict(before, new_limits, pending)
        return result
    if "memory" in pending and "memory" in new_limits:
        cgroup.lower_memory(new_limits["memory"])
    runc_keys = [k for k in pending if OPTIONS[k]["runc"]]
    if runc_keys:
        resources = update_resources(runc_keys, new_limits, cgroup)
        try:
            runtime.update(container_id, resources)
        except CommandError as exc:
            raise LimitError("limits: the runtime refused the update of %s: %s"
                             % (", ".join(sorted(runc_keys)), (exc.stderr or exc.msg).strip()),
                             field="limits", resources=resources, stderr=exc.stderr)
    # runc update re-applies the throttles of the original config on v1: set ours last.
    for key in ("io_read_bps", "io_write_bps"):
        if cgroup.mismatches(new_limits, [key]):
            cgroup.write_throttle(key, new_limits.get(key))
    wrong = cgroup.mismatches(new_limits, pending)
    if wrong:
        key, path, want, have = wrong[0]
        raise LimitError("limits.%s: %s shows %r after the update, expected %r"
                         % (key, path, have, want), field="limits." + key, file=path,
                         expected=want, actual=have,
                         mismatches=[dict(key=k, file=p, expected=w, actual=h) for k, p, w, h in wrong])
    result["after"] = cgroup.read_limits()
    return result


def _predict(before, new_limits, keys):
    after = dict(before)
    for key in keys:
        if key in new_limits:
            after[key] = new_limits[key]
        else:
            after.pop(key, None)
    return after
