#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: container_migrate_batch
short_description: Move several running containers from this host to other hosts, several at once
version_added: 0.2.0
description:
  - Runs on the source host and moves every container of O(moves) to its destination, each with the same
    migration as M(ctrhost.fleet.container_migrate) (same sequence, same guarantee - whatever fails, that
    container runs on exactly one host with its data), several at once in one task.
  - "Concurrency is bounded: at most O(parallel) moves at once, at most O(per_dest) to any one destination, the
    memory of the containers in flight (each one's memory limit, else its current usage) within
    O(memory_in_flight) (a move alone is always started, however big), and at most O(frozen) in their frozen
    window."
  - A move that fails does not stop or disturb the others. Its result says where its container runs and why it
    failed; the task fails at the end naming every failed move, with every result in RV(results).
  - With O(fallback_cold=true) a live or lazy move that fails while its container still runs here is tried
    once more as a cold (stop-and-copy) move.
  - With O(deadline), a move not yet started when that time has passed is left here (O(after_deadline=skip),
    listed in RV(late)) or made cold (O(after_deadline=cold)). A move under way is never cut.
  - A move asked again after it happened reports C(changed=false) with C(already_moved) in its result, so a
    rerun converges.
author:
  - ctrhost.fleet maintainers (@ctrhost)
requirements:
  - Python 3 with pyroute2 on the source and the destinations
  - runc or crun and a CRIU that passes C(criu check) on all of them
  - rsync and ssh on all of them
options:
  moves:
    description: The containers to move.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Container name.
        type: str
        required: true
      dest:
        description: Destination host (name or address as SSH reaches it from the source).
        type: str
        required: true
      mode:
        description: Migration mode of this container; O(mode) when omitted.
        type: str
        choices: [cold, live, lazy]
      dest_python:
        description: Python interpreter on this destination; O(dest_python) when omitted.
        type: str
  mode:
    description: Migration mode of the moves that name none.
    type: str
    choices: [cold, live, lazy]
    default: cold
  parallel:
    description: Moves at once from this host.
    type: int
    default: 4
  per_dest:
    description: Moves at once into any one destination.
    type: int
    default: 2
  frozen:
    description:
      - Moves at once in their frozen window (from the end of their rootfs pre-copy to their restore on the
        destination); the others wait there, their containers still running, so that few frozen windows compete
        for the cpus.
      - The other moves' earlier steps (SSH, the destination's agent, preflight, pre-copy) still run meanwhile; where
        the cpus are scarce, downtimes grow with O(parallel) - lower it when downtime matters more than the total.
    type: int
    default: 2
  memory_in_flight:
    description:
      - Memory of the containers being moved at once (bytes or a size such as V(2G)); no bound when omitted.
    type: str
  fallback_cold:
    description: Try a failed live or lazy move once more as a cold move when its container still runs here.
    type: bool
    default: true
  deadline:
    description: Epoch seconds after which no move is started as asked (see O(after_deadline)).
    type: float
  after_deadline:
    description: What happens to a move not yet started at O(deadline) - V(skip) leaves it here, V(cold) moves it cold.
    type: str
    choices: [skip, cold]
    default: skip
extends_documentation_fragment:
  - ctrhost.fleet.common
  - ctrhost.fleet.common.CRIU
  - ctrhost.fleet.common.CRIU_TOOLS
  - ctrhost.fleet.common.MIGRATE_SSH
  - ctrhost.fleet.common.PRECOPY
  - ctrhost.fleet.attributes
  - ctrhost.fleet.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
    details: The plan only - each destination's preflight runs (several at once); nothing moves.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: A container already running on its destination and not here is reported with C(changed=false).
  async:
    support: full
    description: Supports being used with the C(async) keyword.
seealso:
  - module: ctrhost.fleet.container_migrate
"""

EXAMPLES = r"""
- name: Empty this host onto two others, four moves at once, two per destination
  ctrhost.fleet.container_migrate_batch:
    moves:
      - {name: web1, dest: host2}
      - {name: web2, dest: host3}
      - {name: db1, dest: host2, mode: cold}
    mode: live
    parallel: 4
    per_dest: 2
    memory_in_flight: 4G
  register: batch

- name: One line per container
  ansible.builtin.debug:
    msg: "{{ item.name }}: {{ item.msg if item.failed | default(false) else 'moved to ' ~ item.where }}"
  loop: "{{ batch.results }}"
"""

RETURN = r"""
results:
  description:
    - One result per move, in the order of O(moves) - the result of M(ctrhost.fleet.container_migrate) (C(name),
      C(dest), C(mode), C(downtime), C(bytes_moved), C(where), C(steps), ...), or for a failed move C(failed),
      C(msg) and C(where) (where its container runs), or for a move not started at the deadline C(skipped) and
      C(late).
    - A move made cold after a failure has C(first_error); one started after the deadline has C(late).
  returned: always
  type: list
  elements: dict
  sample: [{name: web1, dest: host2, mode: cold, downtime: 0.71, bytes_moved: 245000, where: host2, changed: true}]
moved:
  description: Names of the containers that moved.
  returned: always
  type: list
  elements: str
  sample: [web1, web2]
already_moved:
  description: Names of the containers that already ran on their destination.
  returned: always
  type: list
  elements: str
  sample: []
late:
  description: Names of the containers left here because the deadline had passed (O(after_deadline=skip)).
  returned: always
  type: list
  elements: str
  sample: []
failed_moves:
  description: Names of the containers whose move failed.
  returned: always
  type: list
  elements: str
  sample: []
wall_time:
  description: Seconds the whole batch took.
  returned: always
  type: float
  sample: 9.8
max_downtime:
  description: The longest downtime of a move, in seconds (null when nothing moved).
  returned: always
  type: float
  sample: 0.84
peak_parallel:
  description: Most moves that ran at once.
  returned: always
  type: int
  sample: 4
peak_memory_in_flight:
  description: Most memory (bytes) of containers in flight at once.
  returned: always
  type: int
  sample: 134217728
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import source as _migrate
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import batch as _migrate_batch
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import precopy as _migrate_precopy
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.module import (
    COMMON_ARGS,
    CRIU_ARGS,
    CRIU_TOOL_ARGS,
    MIGRATE_SSH_ARGS,
    argument_spec,
    run,
)


def main():
    modes = list(_migrate.MODES)
    module = AnsibleModule(
        argument_spec=argument_spec(
            COMMON_ARGS, CRIU_ARGS, CRIU_TOOL_ARGS, MIGRATE_SSH_ARGS, _migrate_precopy.ARGS,
            moves=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                dest=dict(type="str", required=True),
                mode=dict(type="str", choices=modes),
                dest_python=dict(type="str"),
            )),
            mode=dict(type="str", default="cold", choices=modes),
            parallel=dict(type="int", default=_migrate_batch.DEFAULT_PARALLEL),
            per_dest=dict(type="int", default=_migrate_batch.DEFAULT_PER_DEST),
            frozen=dict(type="int", default=_migrate_batch.DEFAULT_FROZEN),
            memory_in_flight=dict(type="str"),
            fallback_cold=dict(type="bool", default=True),
            deadline=dict(type="float"),
            after_deadline=dict(type="str", default="skip", choices=list(_migrate_batch.AFTER_DEADLINE)),
        ),
        supports_check_mode=True,
    )
    run(module, _migrate_batch.task, module.params, module.check_mode)


if __name__ == "__main__":
    main()
