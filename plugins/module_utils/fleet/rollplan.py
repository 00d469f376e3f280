# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One placement plan for a batch of a rolling upgrade, and the roll's count of moves.

Pure Python, no Ansible: the ``roll_placement`` filter is a thin wrapper around ``plan_batch``.

Rules (the filter's documentation repeats them for users), on top of ``placement``'s:

* The hosts of the batch drain together, so they are planned together: one set of host
  records, the capacity of each destination reserved across every move of the batch.
* Nothing goes to a host of the batch, nor to a host that is not ``active`` (cordoned,
  draining, drained, upgrading).
* A host the roll has still to drain (``pending``) is chosen only when no other host fits:
  a container is placed on a host already upgraded (or on a spare host, not part of the roll)
  whenever one has room, on the least loaded of those. So, as long as those hosts have room
  for what a batch drains, a container moves at most once in the roll, plus once more for
  the containers of the first batch when there is no spare host (they wait on a host of a
  later batch, then go to an upgraded one). Without a return trip no container moves back
  and forth.
* Order: pinned containers (``dest``) first in name order, then the others of the whole batch
  largest first (memory, then cpus, then name, then source), so that the answer does not depend
  on the order of the inputs nor on which host of the batch a container comes from.
* All or nothing: when any container does not fit, ``PlacementError`` names every one left over.
"""

from __future__ import annotations

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.fleet.placement import (
    DEFAULT_CPU_OVERCOMMIT,
    DEFAULT_MEMORY_HEADROOM,
    check_options,
    fail_unplaced,
    normalise_container,
    normalise_host,
    place_all,
)


def _names(value, field):
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple, set)):
        raise ValidationError(field, "expected a list of host names, got %r" % (value,))
    for item in value:
        if not isinstance(item, str) or not item:
            raise ValidationError(field, "expected a list of host names, got an item %r" % (item,))
    return sorted(set(value))


def _containers(containers, batch):
    """{source: [entries]} -> [demand records with ``source``], checked."""
    if not isinstance(containers, dict):
        raise ValidationError("containers", "expected a mapping of batch host to its container_info entries, got %r"
                              % (containers,))
    out, seen = [], {}
    for source in sorted(containers):
        if source not in batch:
            raise ValidationError("containers", "host %s is not a host of the batch (%s)"
                                  % (source, ", ".join(batch)))
        entries = containers[source] or []
        if not isinstance(entries, (list, tuple)):
            raise ValidationError("containers[%s]" % source, "expected a list of container_info entries, got %r"
                                  % (entries,))
        for index, item in enumerate(entries):
            ctr = normalise_container(item, index)
            if ctr["name"] in seen:
                raise ValidationError("containers", "container %s is listed on %s and on %s"
                                      % (ctr["name"], seen[ctr["name"]], source))
            seen[ctr["name"]] = source
            ctr["source"] = source
            out.append(ctr)
    return out


def plan_batch(containers, hosts, batch, pending=None, memory_headroom=DEFAULT_MEMORY_HEADROOM,
               cpu_overcommit=DEFAULT_CPU_OVERCOMMIT):
    """Place every container of the batch's hosts; ``(placement, records)`` or PlacementError.

    ``containers``: batch host -> its container_info entries; ``hosts``: candidate host -> its
    host_info result; ``batch``: the hosts drained together; ``pending``: the hosts the roll has
    still to drain after this batch. ``placement`` is batch host -> {container: destination},
    with every host of the batch (``{}`` for an empty one)."""
    headroom, overcommit = check_options(memory_headroom, cpu_overcommit)
    batch = _names(batch, "batch")
    if not batch:
        raise ValidationError("batch", "expected the hosts of the batch (ansible_play_batch), got none")
    pending = set(_names(pending, "pending"))
    if not isinstance(hosts, dict):
        raise ValidationError("hosts", "expected a mapping of host name to host_info result, got %r" % (hosts,))
    ctrs = _containers(containers, batch)
    records = {}
    for name in sorted(hosts):
        records[name] = normalise_host(name, hosts[name], headroom, overcommit)
        if name in batch:
            records[name]["excluded"] = "it drains in this batch"
    eligible = [records[name] for name in sorted(records) if not records[name]["excluded"]]
    placement = {source: {} for source in batch}

    def note(host, ctr):
        placement[ctr["source"]][ctr["name"]] = host["name"]

    # hosts upgraded already (or spare) first, the hosts still to drain only when nothing else has room
    unplaced = place_all(ctrs, records, [[h for h in eligible if h["name"] not in pending],
                                         [h for h in eligible if h["name"] in pending]], note)
    fail_unplaced("placement of batch %s" % ", ".join(batch), unplaced, len(ctrs), headroom, overcommit, records)
    return placement, records


def place_batch(containers, hosts, batch, pending=None, memory_headroom=DEFAULT_MEMORY_HEADROOM,
                cpu_overcommit=DEFAULT_CPU_OVERCOMMIT):
    """Batch host -> {container name: destination host} (see the module docstring for the rules)."""
    return plan_batch(containers, hosts, batch, pending, memory_headroom, cpu_overcommit)[0]


def moves_report(records):
    """The moves of a roll counted: ``records`` is a list of ``{name, from, to}`` (any order, from
    every host); returns ``{"moves": {name: count}, "total": n, "containers": n, "most": n}``."""
    if not isinstance(records, (list, tuple)):
        raise ValidationError("moves", "expected a list of move records (name, from, to), got %r" % (records,))
    counts = {}
    for index, record in enumerate(records):
        name = record.get("name") if isinstance(record, dict) else None
        if not isinstance(name, str) or not name:
            raise ValidationError("moves[%d].name" % index, "expected a container name, got %r" % (record,))
        counts[name] = counts.get(name, 0) + 1
    return dict(moves=dict(sorted(counts.items())), total=sum(counts.values()), containers=len(counts),
                most=max(counts.values()) if counts else 0)
