# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: rebalance_plan
short_description: The fewest container moves that bring every host under memory and cpu thresholds
version_added: 0.2.0
description:
  - Takes the C(ctrhost.fleet.host_info) results of the hosts (keyed by inventory host name) and the containers on
    each (the RV(ctrhost.fleet.container_info#module:containers) lists, keyed the same way) and returns the moves
    that bring every host under O(memory_threshold) and O(cpu_threshold), with the load of each host before and
    after.
  - A host's load is counted as the C(ctrhost.fleet.placement) filter counts it - each container's declared
    C(limits.memory) (else its current memory usage) and C(limits.cpus), as fractions of the host's C(memory_total)
    and C(cpus). A host is over when either fraction passes its threshold.
  - Only hosts whose C(host_state) is V(active) take part, as sources and destinations; cordoned, draining, drained
    and upgrading hosts (and hosts whose facts failed) are left alone.
  - Fewest moves, greedily - on each over host (the most loaded first) the smallest container that alone removes
    the whole excess moves, else the one that removes most of it, and again. A destination never ends over a
    threshold nor past the placement bounds (O(memory_headroom), O(cpu_overcommit)); among those that fit, the
    least loaded after the move is chosen.
  - A host that cannot be brought under is listed in C(unresolved); the moves that help are still returned.
    Hosts all under their thresholds give no move. The same input gives the same plan.
author:
  - ctrhost.fleet contributors
positional: containers, memory_threshold, cpu_threshold
options:
  _input:
    description: Inventory host name to the C(ctrhost.fleet.host_info) result of that host (C(cpus), C(memory_total),
      C(host_state)).
    type: dict
    required: true
  containers:
    description: Inventory host name to the list of its containers (C(ctrhost.fleet.container_info) entries).
    type: dict
    required: true
  memory_threshold:
    description: Fraction of a host's memory its containers may commit, in (0, 1].
    type: float
    required: true
  cpu_threshold:
    description: Fraction of a host's cpus its containers' cpu limits may add up to, in (0, 1].
    type: float
    required: true
  memory_headroom:
    description: Fraction of each destination's memory kept free, in [0, 1) (as the C(placement) filter).
    type: float
    default: 0.1
  cpu_overcommit:
    description: Ratio of cpu limits to cpus a destination may carry (as the C(placement) filter).
    type: float
    default: 1.0
"""

EXAMPLES = r"""
- name: The moves that bring every host under 70% of its memory and 80% of its cpus
  ansible.builtin.set_fact:
    plan: >-
      {{ infos | ctrhost.fleet.rebalance_plan(containers_by_host, memory_threshold=0.7, cpu_threshold=0.8) }}
  vars:
    infos: "{{ dict(ansible_play_hosts | zip(ansible_play_hosts | map('extract', hostvars, 'host_facts'))) }}"
    containers_by_host: >-
      {{ dict(ansible_play_hosts | zip(ansible_play_hosts | map('extract', hostvars, ['here', 'containers']))) }}
  run_once: true
"""

RETURN = r"""
_value:
  description:
    - C(moves) - a list of C({name, source, dest, memory, cpus}) (memory in bytes), in the order planned.
    - C(hosts) - per host, C(before) and C(after) (C(memory) and C(cpu) load as fractions), C(over_before),
      C(over_after) and C(excluded) (why it took no part, or null).
    - C(unresolved) - one line per host left over its thresholds.
    - C(lines) - the plan for people - one line per move, one per host (its load before and after), then
      C(unresolved).
  type: dict
  sample:
    moves: [{name: web3, source: host1, dest: host2, memory: 536870912, cpus: 0.5}]
    hosts: {host1: {before: {memory: 0.82, cpu: 0.5}, after: {memory: 0.69, cpu: 0.25}, over_before: true,
                    over_after: false, excluded: null}}
    unresolved: []
"""

from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CtrhostError  # noqa: E402
from ansible_collections.ctrhost.fleet.plugins.module_utils.fleet.placement import (  # noqa: E402
    DEFAULT_CPU_OVERCOMMIT,
    DEFAULT_MEMORY_HEADROOM,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils.fleet.rebalance import plan  # noqa: E402


def rebalance_plan(hosts, containers, memory_threshold, cpu_threshold, memory_headroom=DEFAULT_MEMORY_HEADROOM,
                   cpu_overcommit=DEFAULT_CPU_OVERCOMMIT):
    try:
        return plan(hosts, containers, memory_threshold, cpu_threshold, memory_headroom, cpu_overcommit)
    except CtrhostError as exc:
        raise AnsibleFilterError(exc.msg)


class FilterModule(object):
    def filters(self):
        return {"rebalance_plan": rebalance_plan}
