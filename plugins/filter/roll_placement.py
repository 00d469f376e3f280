# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: roll_placement
short_description: One placement plan for the hosts of a batch that drain together
version_added: 0.2.0
description:
  - Takes the containers of every host of a batch of a rolling upgrade (the RV(ctrhost.fleet.container_info#module:containers)
    lists, keyed by inventory host name) and the C(ctrhost.fleet.host_info) results of the candidate hosts, and returns,
    for each host of the batch, a mapping of its container names to destination hosts.
  - One plan for the whole batch - the capacity of each destination is reserved across all the moves of the batch, as
    the C(ctrhost.fleet.placement) filter reserves it across the moves of one host (same bounds, same demand of a
    container, same least-loaded choice, all or nothing).
  - Nothing is placed on a host of O(batch), nor on a host whose C(host_state) is not V(active).
  - A host the roll still has to drain (O(pending)) is chosen only when no other host has room - a container goes to a
    host already upgraded in this roll, or to a spare host that the roll does not drain, whenever one fits. So, while
    those hosts have room for what a batch drains, each container moves at most once in the roll, plus once more for
    the containers of the first batch when there is no spare host; no container moves back and forth.
  - Containers with a pinned C(dest) go there first. The answer does not depend on the order of the inputs.
author:
  - ctrhost.fleet contributors
positional: hosts
options:
  _input:
    description:
      - Batch host name to the list of its containers (C(ctrhost.fleet.container_info) entries, or mappings with
        C(name), C(limits), optionally C(usage.memory) and C(dest)). A container name appears once in the batch.
    type: dict
    required: true
  hosts:
    description:
      - Candidate hosts, inventory host name to the C(ctrhost.fleet.host_info) result of that host (C(cpus),
        C(memory_total), C(host_state), C(committed)). Hosts of O(batch) among them are never chosen.
    type: dict
    required: true
  batch:
    description: The hosts drained together (C(ansible_play_batch)).
    type: list
    elements: str
    required: true
  pending:
    description: The hosts the roll still has to drain after this batch; chosen only when no other host has room.
    type: list
    elements: str
    default: []
  memory_headroom:
    description: Fraction of each host's memory kept free, in [0, 1) (as the C(placement) filter).
    type: float
    default: 0.1
  cpu_overcommit:
    description: Ratio of cpu limits to cpus a host may carry (as the C(placement) filter).
    type: float
    default: 1.0
"""

EXAMPLES = r"""
- name: One plan for the batch (fails before anything moves when the batch does not fit)
  ansible.builtin.set_fact:
    batch_plan: >-
      {{ dict(ansible_play_batch | zip(ansible_play_batch | map('extract', hostvars, ['here', 'containers'])))
         | ctrhost.fleet.roll_placement(dict(candidates.results | map(attribute='item') | zip(candidates.results)),
                                        batch=ansible_play_batch, pending=still_to_do) }}
  run_once: true

- name: Each host of the batch moves its own part
  ansible.builtin.include_role:
    name: ctrhost.fleet.evacuate
  vars:
    ctrhost_evacuate_placement: "{{ batch_plan[inventory_hostname] }}"
"""

RETURN = r"""
_value:
  description: Batch host name to a mapping of its container names to destination host names.
  type: dict
  sample: {host1: {web1: host3, db1: host4}, host2: {}}
"""

from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CtrhostError  # noqa: E402
from ansible_collections.ctrhost.fleet.plugins.module_utils.fleet.placement import (  # noqa: E402
    DEFAULT_CPU_OVERCOMMIT,
    DEFAULT_MEMORY_HEADROOM,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils.fleet.rollplan import place_batch  # noqa: E402


def roll_placement(containers, hosts, batch, pending=None, memory_headroom=DEFAULT_MEMORY_HEADROOM,
                   cpu_overcommit=DEFAULT_CPU_OVERCOMMIT):
    try:
        return place_batch(containers, hosts, batch, pending, memory_headroom, cpu_overcommit)
    except CtrhostError as exc:
        raise AnsibleFilterError(exc.msg)


class FilterModule(object):
    def filters(self):
        return {"roll_placement": roll_placement}
