# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: placement
short_description: Choose a destination host for each container, within the hosts' capacity
version_added: 0.1.0
description:
  - Takes the containers to place (entries of the RV(ctrhost.fleet.container_info#module:containers) result)
    and the C(ctrhost.fleet.host_info) results of the candidate hosts, keyed by inventory host name, and
    returns a mapping of container name to destination host.
  - A candidate is eligible when its C(host_state) is V(active) (never V(cordoned), V(draining), V(drained)
    or V(upgrading)), its host_info result did not fail, and it is not O(source).
  - Memory is never over-committed - C(committed.memory) plus what is placed stays within
    C(memory_total * (1 - memory_headroom)). CPUs likewise - C(committed.cpus) plus what is placed stays
    within C(cpus * cpu_overcommit). A host already past either bound takes nothing.
  - What a container needs is its declared C(limits.memory) and C(limits.cpus). A container without a memory
    limit counts its current C(usage.memory_current) (0 when unknown); one without a cpus limit counts 0 cpus.
  - Containers with a pinned C(dest) (see O(_input)) go there first (it must be eligible and have room). The others
    are placed largest first (memory, then cpus, then name), each on the fitting host that is least loaded
    afterwards (its higher fraction of memory or cpu capacity used, then the lower one, then the fewest
    containers, then the host name), which spreads load. The answer does not depend on the order of the
    inputs.
  - An unprivileged container of the shared id range (C(idmap) in its entry, not C(isolated)) goes only to a
    host whose key quota has room for one more start (C(kernel_limits.containers_free) of its host_info, when
    that part is gathered; every running container of the shared id range holds one key of
    C(kernel.keys.maxkeys) as the same uid).
  - All or nothing. When a container does not fit, the filter fails naming every container that does not fit
    and what each host has free, so a play can stop before it moves anything.
author:
  - ctrhost.fleet contributors
positional: hosts
options:
  _input:
    description:
      - The containers to place, a list of mappings with C(name), C(limits) (C(memory) in bytes or a size such
        as V(512M), C(cpus)) and optionally C(usage.memory) and C(dest) (a pinned destination).
      - A mapping of container name to such a mapping is accepted too.
    type: raw
    required: true
  hosts:
    description:
      - Candidate hosts, inventory host name to the C(ctrhost.fleet.host_info) result of that host, which needs
        C(cpus), C(memory_total), C(host_state) and C(committed) (the default gather has them).
    type: dict
    required: true
  source:
    description:
      - The host the containers leave; never chosen even when listed among O(hosts).
    type: str
  memory_headroom:
    description:
      - Fraction of each host's memory kept free, in [0, 1).
    type: float
    default: 0.1
  cpu_overcommit:
    description:
      - Ratio of cpu limits to cpus a host may carry; V(1.0) never promises more cpu time than the host has.
    type: float
    default: 1.0
"""

EXAMPLES = r"""
- name: Read the candidates
  ctrhost.fleet.host_info:
    gather: ['!criu_check', '!criu_features']
  register: candidate
  delegate_to: "{{ item }}"
  loop: "{{ groups['ctrhost'] | difference([inventory_hostname]) }}"

- name: Decide where the containers of this host go (fails before anything moves if they do not fit)
  ansible.builtin.set_fact:
    destinations: >-
      {{ here.containers | ctrhost.fleet.placement(
           dict(candidate.results | map(attribute='item') | zip(candidate.results)),
           source=inventory_hostname, memory_headroom=0.2) }}
"""

RETURN = r"""
_value:
  description: Container name to destination host name.
  type: dict
  sample: {web1: host2, db1: host3}
"""

from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CtrhostError  # noqa: E402
from ansible_collections.ctrhost.fleet.plugins.module_utils.fleet.placement import (  # noqa: E402
    DEFAULT_CPU_OVERCOMMIT,
    DEFAULT_MEMORY_HEADROOM,
    place,
)


def placement(containers, hosts, source=None, memory_headroom=DEFAULT_MEMORY_HEADROOM,
              cpu_overcommit=DEFAULT_CPU_OVERCOMMIT):
    try:
        return place(containers, hosts, source=source, memory_headroom=memory_headroom,
                     cpu_overcommit=cpu_overcommit)
    except CtrhostError as exc:
        raise AnsibleFilterError(exc.msg)


class FilterModule(object):
    def filters(self):
        return {"placement": placement}
