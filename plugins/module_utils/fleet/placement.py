# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where should each container go? Capacity-aware placement onto candidate hosts.

Pure Python, no Ansible: the ``placement`` filter is a thin wrapper around ``place``.

Rules (the filter's documentation repeats them for users):

* A candidate host is eligible when its ``host_state`` is ``active``, its ``host_info``
  result did not fail, and it is not the ``source`` host.
* Memory: ``committed.memory + placed <= memory_total * (1 - memory_headroom)``.
* CPUs: ``committed.cpus + placed <= cpus * cpu_overcommit``.
  A host already past either bound takes nothing, not even a container that declares
  no limits.
* What a container needs is its declared ``limits.memory`` / ``limits.cpus``; a container
  without a memory limit counts its current ``usage.memory`` (or ``usage.memory_current``, as
  ``container_info`` reports it; 0 when unknown), one without a
  cpus limit counts 0 cpus.
* Containers with a pinned destination (``dest``) are placed first, in name order; the others
  largest first (memory, then cpus, then name), each on the eligible host that fits and is
  least loaded afterwards (highest of its memory and cpu fractions, then the other fraction,
  then fewest containers, then host name). Inputs in any order give the same answer.
* The least loaded host is found without trying every host (``LoadIndex``), with the
  same answer as trying every host: 20,000 containers onto 1,000 hosts in well under a
  second (``benchmarks/scale_plan.py``).
* Kernel limits: an unprivileged container of the shared id range (``idmap`` in its
  ``container_info`` entry, not ``isolated``) goes
  only to a host whose key quota has room for one more (``kernel_limits.containers_free`` of
  its ``host_info``, when gathered): the runtime would fail to start it there.
* All or nothing: when any container does not fit, ``PlacementError`` names every container
  left over and what each host had free; nothing is returned.
"""

from __future__ import annotations

import bisect
import math

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CtrhostError, ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.units import parse_size

ELIGIBLE_STATE = "active"
DEFAULT_MEMORY_HEADROOM = 0.10
DEFAULT_CPU_OVERCOMMIT = 1.0
CPU_UNITS = 100000  # cpus are counted in 1/100000 cpu (a CFS quota over 100 ms), as integers


class PlacementError(CtrhostError):
    """Some containers do not fit on the eligible hosts."""


def _number(value, field, minimum=0.0):
    if isinstance(value, bool) or value is None:
        raise ValidationError(field, "expected a number, got %r" % (value,))
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValidationError(field, "expected a number, got %r" % (value,))
    if not isinstance(value, (int, float)) or value != value or value < minimum or math.isinf(value):
        raise ValidationError(field, "expected a number >= %s, got %r" % (minimum, value))
    return value


def _memory(value, field):
    if value is None:
        return None
    return parse_size(value, field)


def _cpu_units(value, field):
    if value is None:
        return None
    return int(round(_number(value, field) * CPU_UNITS))


def check_options(memory_headroom, cpu_overcommit):
    """(headroom, overcommit) validated: a fraction in [0, 1) and a ratio > 0."""
    headroom = _number(memory_headroom, "memory_headroom")
    if headroom >= 1:
        raise ValidationError("memory_headroom", "expected a fraction in [0, 1), got %r" % (memory_headroom,))
    overcommit = _number(cpu_overcommit, "cpu_overcommit")
    if overcommit <= 0:
        raise ValidationError("cpu_overcommit", "expected a ratio > 0, got %r" % (cpu_overcommit,))
    return headroom, overcommit


def memory_capacity(memory_total, headroom):
    """Bytes that containers may commit on a host of ``memory_total`` bytes."""
    return int(math.floor(memory_total * (1.0 - headroom)))


def cpu_capacity(cpus, overcommit):
    """CPU units (1/100000 cpu) that containers may commit on a host with ``cpus`` cpus."""
    return int(math.floor(cpus * overcommit * CPU_UNITS + 1e-6))


def normalise_container(item, index=0):
    """A container_info entry (or any mapping with name/limits/dest) -> demand record."""
    where = "containers[%d]" % index
    if not isinstance(item, dict):
        raise ValidationError(where, "expected a mapping with name and limits, got %r" % (item,))
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise ValidationError(where + ".name", "expected a container name, got %r" % (name,))
    where = "container %s" % name
    limits = item.get("limits") or {}
    if not isinstance(limits, dict):
        raise ValidationError(where + ": limits", "expected a mapping, got %r" % (limits,))
    memory = _memory(limits.get("memory"), where + ": limits.memory")
    if memory is None:
        usage = item.get("usage") or {}
        if not isinstance(usage, dict):
            usage = {}
        memory = _memory(usage.get("memory", usage.get("memory_current")), where + ": usage.memory") or 0
    cpus = _cpu_units(limits.get("cpus"), where + ": limits.cpus") or 0
    dest = item.get("dest")
    if dest is not None and (not isinstance(dest, str) or not dest):
        raise ValidationError(where + ": dest", "expected a host name, got %r" % (dest,))
    idmap = item.get("idmap")  # the shared range's root holds a key per container (isolated: its own)
    return dict(name=name, memory=memory, cpus=cpus, dest=dest,
                unprivileged=isinstance(idmap, dict) and bool(idmap) and not idmap.get("isolated"))


def _host_state(name, info):
    state = info.get("host_state", info.get("state"))
    if isinstance(state, dict):  # a whole host.json
        state = state.get("state")
    return state


def normalise_host(name, info, headroom, overcommit):
    """A host_info result -> capacity record (with ``excluded`` saying why it is not eligible)."""
    where = "hosts[%s]" % name
    if not isinstance(info, dict):
        raise ValidationError(where, "expected a host_info result (a mapping), got %r" % (info,))
    record = dict(name=name, excluded=None, containers=0, memory_used=0, cpu_used=0,
                  memory_capacity=0, cpu_capacity=0, keys_free=None)
    if info.get("failed") or info.get("unreachable"):
        record["excluded"] = "its host_info result failed"
        return record
    state = _host_state(name, info)
    if state is None:
        raise ValidationError(where + ".host_state",
                              "expected the host state (gather host_state in host_info), got nothing")
    if state != ELIGIBLE_STATE:
        record["excluded"] = "state %s" % state
    committed = info.get("committed") or {}
    if not isinstance(committed, dict):
        raise ValidationError(where + ".committed", "expected a mapping, got %r" % (committed,))
    for key in ("memory_total", "cpus"):
        if info.get(key) is None:
            raise ValidationError(where + "." + key, "expected a number (gather %s in host_info), got nothing"
                                  % ("memory" if key == "memory_total" else "cpu"))
    record["memory_capacity"] = memory_capacity(_memory(info["memory_total"], where + ".memory_total"), headroom)
    record["cpu_capacity"] = cpu_capacity(_number(info["cpus"], where + ".cpus"), overcommit)
    record["memory_used"] = _memory(committed.get("memory") or 0, where + ".committed.memory")
    record["cpu_used"] = _cpu_units(committed.get("cpus") or 0, where + ".committed.cpus")
    count = committed.get("containers", info.get("container_count", info.get("containers", 0)))
    record["containers"] = int(_number(count if not isinstance(count, list) else len(count),
                                       where + ".committed.containers"))
    keys_free = (info.get("kernel_limits") or {}).get("containers_free")
    if keys_free is not None:
        record["keys_free"] = int(_number(keys_free, where + ".kernel_limits.containers_free"))
    return record


def _fits(host, ctr):
    return (host["memory_used"] + ctr["memory"] <= host["memory_capacity"]
            and host["cpu_used"] + ctr["cpus"] <= host["cpu_capacity"]
            and (host["keys_free"] is None or not ctr["unprivileged"] or host["keys_free"] >= 1))


def _denominators(host):
    return host["memory_capacity"], host["cpu_capacity"]


def _load_after(host, ctr):
    mem = (host["memory_used"] + ctr["memory"]) / host["memory_capacity"] if host["memory_capacity"] else 1.0
    cpu = (host["cpu_used"] + ctr["cpus"]) / host["cpu_capacity"] if host["cpu_capacity"] else 1.0
    return (round(max(mem, cpu), 9), round(min(mem, cpu), 9), host["containers"], host["name"])


class LoadIndex:
    """The host with the least ``key(host, ctr)`` among those where ``ctr`` fits, found
    without trying every host; the same host as ``min`` over all of them.

    ``fits(host, ctr)`` says whether ``ctr`` fits on ``host``. ``key`` is a load after the move, ``(round(max(mem, cpu), 9),
    ...)`` with ``mem = (memory_used + ctr memory) / memory denominator`` and ``cpu =
    (cpu_used + ctr cpus) / cpu denominator`` (1.0 for a denominator of 0);
    ``denominators(host)`` gives both. The hosts are grouped by their denominators, and
    each group kept sorted twice, by memory used and by cpu used: read in those orders,
    ``mem`` and ``cpu`` never decrease, so a host not read yet in either order has a key
    whose first item is at least the larger of the two orders' next values. A group is read
    until that bound passes the best key found, always in the order whose next value is
    the higher (it gets there sooner), the group of the lowest such bound first. Call
    ``remove`` before changing a host's ``memory_used`` or ``cpu_used``, and ``add`` after."""

    def __init__(self, hosts, denominators, fits, key):
        self.denominators, self.fits, self.key = denominators, fits, key
        self.groups, self.hosts = {}, {}
        for host in hosts:
            self.add(host)

    def add(self, host):
        self.hosts[host["name"]] = host
        by_memory, by_cpu = self.groups.setdefault(self.denominators(host), ([], []))
        bisect.insort(by_memory, (host["memory_used"], host["name"]))
        bisect.insort(by_cpu, (host["cpu_used"], host["name"]))

    def remove(self, host):
        by_memory, by_cpu = self.groups[self.denominators(host)]
        del by_memory[bisect.bisect_left(by_memory, (host["memory_used"], host["name"]))]
        del by_cpu[bisect.bisect_left(by_cpu, (host["cpu_used"], host["name"]))]

    def best(self, ctr, skip=None):
        """The host (not ``skip``) where ``ctr`` fits with the least key, or None."""
        need_mem, need_cpu = ctr["memory"], ctr["cpus"]
        groups = []
        for (den_mem, den_cpu), (by_mem, by_cpu) in self.groups.items():
            if by_mem:
                mem = (by_mem[0][0] + need_mem) / den_mem if den_mem else 1.0
                cpu = (by_cpu[0][0] + need_cpu) / den_cpu if den_cpu else 1.0
                groups.append((max(mem, cpu), den_mem, den_cpu, by_mem, by_cpu))
        groups.sort(key=lambda group: group[0])
        best, found, first = None, None, math.inf  # first: best[0]
        hosts, fits = self.hosts, self.fits
        for _bound, den_mem, den_cpu, by_mem, by_cpu in groups:
            count, i_mem, i_cpu = len(by_mem), 0, 0
            while i_mem < count and i_cpu < count:
                mem = (by_mem[i_mem][0] + need_mem) / den_mem if den_mem else 1.0
                cpu = (by_cpu[i_cpu][0] + need_cpu) / den_cpu if den_cpu else 1.0
                if mem >= cpu:
                    if mem > first and (mem > first + 1e-8 or round(mem, 9) > first):
                        break  # round() is monotonic, and first is a rounded value
                    name = by_mem[i_mem][1]
                    i_mem += 1
                else:
                    if cpu > first and (cpu > first + 1e-8 or round(cpu, 9) > first):
                        break
                    name = by_cpu[i_cpu][1]
                    i_cpu += 1
                host = hosts[name]  # (a host read in both orders is only compared twice)
                mem = (host["memory_used"] + need_mem) / den_mem if den_mem else 1.0
                cpu = (host["cpu_used"] + need_cpu) / den_cpu if den_cpu else 1.0
                if (mem if mem > cpu else cpu) > first + 1e-8 or host is skip or not fits(host, ctr):
                    continue  # (the first test, cheaper than its key: surely above the best's first item)
                key = self.key(host, ctr)
                if best is None or key < best:
                    best, found, first = key, host, key[0]
        return found


def human(nbytes):
    """``nbytes`` as 1.50G, 512.00M ..."""
    for letter, power in (("T", 4), ("G", 3), ("M", 2), ("K", 1)):
        if nbytes >= 1024 ** power:
            return "%.2f%s" % (nbytes / 1024.0 ** power, letter)
    return "%d" % nbytes


def _free(host):
    if host["excluded"]:
        return "%s: not eligible (%s)" % (host["name"], host["excluded"])
    keys = "" if host["keys_free"] is None else (
        ", key quota (kernel.keys.maxkeys) for %d more unprivileged" % host["keys_free"])
    return "%s: %s memory, %.2f cpus free%s" % (
        host["name"], human(max(0, host["memory_capacity"] - host["memory_used"])),
        max(0, host["cpu_capacity"] - host["cpu_used"]) / CPU_UNITS, keys)


def _describe(ctr):
    return "%s (memory %s, cpus %.2f%s)" % (ctr["name"], human(ctr["memory"]), ctr["cpus"] / CPU_UNITS,
                                            ", pinned to %s" % ctr["dest"] if ctr["dest"] else "")


def plan(containers, hosts, source=None, memory_headroom=DEFAULT_MEMORY_HEADROOM,
         cpu_overcommit=DEFAULT_CPU_OVERCOMMIT):
    """Place every container; return ``(placement, host_records)`` or raise PlacementError."""
    headroom, overcommit = check_options(memory_headroom, cpu_overcommit)
    if isinstance(containers, dict):
        containers = [dict(value, name=key) if isinstance(value, dict) else value
                      for key, value in sorted(containers.items())]
    if not isinstance(containers, (list, tuple)):
        raise ValidationError("containers", "expected a list of container_info entries, got %r" % (containers,))
    if not isinstance(hosts, dict):
        raise ValidationError("hosts", "expected a mapping of host name to host_info result, got %r" % (hosts,))
    ctrs = [normalise_container(item, index) for index, item in enumerate(containers)]
    seen = set()
    for ctr in ctrs:
        if ctr["name"] in seen:
            raise ValidationError("containers", "container %s is listed twice" % ctr["name"])
        seen.add(ctr["name"])
    records = {}
    for name in sorted(hosts):
        records[name] = normalise_host(name, hosts[name], headroom, overcommit)
        if source is not None and name == source:
            records[name]["excluded"] = "it is the source host"
    eligible = [records[name] for name in sorted(records) if not records[name]["excluded"]]

    placement = {}

    def note(host, ctr):
        placement[ctr["name"]] = host["name"]

    unplaced = place_all(ctrs, records, [eligible], note)
    fail_unplaced("placement", unplaced, len(ctrs), headroom, overcommit, records)
    return placement, records


def place_all(ctrs, records, tiers, note):
    """Place the normalised containers ``ctrs`` on the host records ``records``: a pinned one
    (``dest``) on its host, the others, the largest first, on the least loaded host where they
    fit in the first of ``tiers`` (lists of eligible host records) that has room for them. The
    host's capacity is taken (``reserve``) and ``note(host, ctr)`` called for each choice.
    Returns the descriptions of the containers that do not fit."""
    unplaced = []
    for ctr in sorted((c for c in ctrs if c["dest"]), key=lambda c: c["name"]):
        host = records.get(ctr["dest"])
        if host is None or host["excluded"] or not _fits(host, ctr):
            why = ("not a candidate host" if host is None else
                   "not eligible: %s" % host["excluded"] if host["excluded"] else "not enough room")
            unplaced.append("%s: %s" % (_describe(ctr), why))
            continue
        reserve(host, ctr)
        note(host, ctr)
    indexes = [LoadIndex(tier, _denominators, _fits, _load_after) for tier in tiers]
    for ctr in sorted((c for c in ctrs if not c["dest"]), key=lambda c: (-c["memory"], -c["cpus"], c["name"])):
        for index in indexes:
            host = index.best(ctr)
            if host is not None:
                index.remove(host)
                reserve(host, ctr)
                index.add(host)
                note(host, ctr)
                break
        else:
            unplaced.append(_describe(ctr))
    return unplaced


def fail_unplaced(what, unplaced, count, headroom, overcommit, records):
    """PlacementError naming every container of ``unplaced`` (of ``count``) and what each host
    has free; nothing when ``unplaced`` is empty."""
    if unplaced:
        raise PlacementError(
            "%s: %d of %d container(s) do not fit (memory headroom %g, cpu overcommit %g): %s. Hosts: %s"
            % (what, len(unplaced), count, headroom, overcommit, "; ".join(unplaced),
               "; ".join(_free(records[name]) for name in sorted(records)) or "none given"),
            unplaced=sorted(u.split(" ", 1)[0] for u in unplaced))


def reserve(host, ctr):
    """Count container ``ctr`` on host record ``host`` (its memory, cpus, a key of the quota)."""
    host["memory_used"] += ctr["memory"]
    host["cpu_used"] += ctr["cpus"]
    host["containers"] += 1
    if host["keys_free"] is not None and ctr["unprivileged"]:
        host["keys_free"] -= 1


def place(containers, hosts, source=None, memory_headroom=DEFAULT_MEMORY_HEADROOM,
          cpu_overcommit=DEFAULT_CPU_OVERCOMMIT):
    """Container name -> destination host (see the module docstring for the rules)."""
    return plan(containers, hosts, source, memory_headroom, cpu_overcommit)[0]
