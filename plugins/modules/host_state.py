#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: host_state
short_description: Read or set the evacuation state of a container host (cordon, drain, uncordon)
version_added: 0.1.0
description:
  - Reads or sets the host state kept in C(host.json) under O(root), the state machine behind evacuation
    and rolling kernel upgrades. A host without that file is V(active).
  - V(active) hosts take containers; the C(ctrhost.fleet.placement) filter never chooses a host in any other
    state (V(cordoned), V(draining), V(drained), V(upgrading)).
  - Allowed transitions - V(active) to V(cordoned) or V(draining); V(cordoned) to V(active) or V(draining);
    V(draining) to V(drained), V(cordoned) or V(active); V(drained) to V(upgrading), V(draining), V(cordoned)
    or V(active); V(upgrading) to V(active), V(cordoned), V(draining) or V(drained). Anything else fails
    without changing the file unless O(force=true).
  - Each transition records V(since) and appends to V(history) (the last 20 transitions, each with
    V(from), V(to), V(reason) and V(at)).
  - O(progress) and O(progress_update) keep free-form data of a running workflow in the same file, so a rerun
    after a crash can resume (the C(evacuate) role records its placement and the containers it moved).
author:
  - ctrhost.fleet maintainers (@ctrhost)
requirements:
  - Python 3 on the managed host
options:
  state:
    description:
      - The state the host should be in. Omit it to only read the state (or to update O(reason) or progress).
    type: str
    choices: [active, cordoned, draining, drained, upgrading]
  reason:
    description:
      - Why; stored with the state and in the history. Setting the same O(state) with another reason updates
        the reason without a transition. A transition without a reason clears the previous reason.
    type: str
  force:
    description:
      - Allow a transition that the table in the description forbids.
    type: bool
    default: false
  progress:
    description:
      - Replace the recorded progress with this mapping (V({}) clears it).
    type: dict
  progress_update:
    description:
      - Merge this mapping into the recorded progress (nested mappings are merged; a null value removes the key).
      - Mutually exclusive with O(progress).
    type: dict
extends_documentation_fragment:
  - ctrhost.fleet.common
  - ctrhost.fleet.attributes
  - ctrhost.fleet.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
"""

EXAMPLES = r"""
- name: Cordon the host so that placement never picks it
  ctrhost.fleet.host_state:
    state: cordoned
    reason: disk replacement

- name: Read the state
  ctrhost.fleet.host_state:
  register: hs

- name: Record that web1 went to host2
  ctrhost.fleet.host_state:
    progress_update:
      moved:
        web1: host2

- name: Back into service
  ctrhost.fleet.host_state:
    state: active
"""

RETURN = r"""
state:
  description: The state after the task.
  returned: always
  type: str
  sample: draining
previous_state:
  description: The state before the task.
  returned: always
  type: str
  sample: active
reason:
  description: The reason stored with the state.
  returned: always
  type: str
  sample: "kernel upgrade"
since:
  description: When the host entered its state (UTC, ISO 8601), null for a host that never changed state.
  returned: always
  type: str
  sample: '2024-05-01T10:00:00Z'
history:
  description: The last 20 transitions, oldest first.
  returned: always
  type: list
  elements: dict
  sample: [{from: active, to: draining, reason: kernel upgrade, at: '2024-05-01T10:00:00Z'}]
progress:
  description: The recorded progress data.
  returned: always
  type: dict
  sample: {"evacuation": {"started": 1764576000, "moved": {"web1": {"dest": "host2", "mode": "cold"}}}}
transition:
  description: The transition made by this task (from, to, reason, at), or null.
  returned: always
  type: dict
  sample: {"from": "active", "to": "draining", "reason": "kernel upgrade", "at": "2026-12-01T10:00:00Z"}
file:
  description:
    - Path of C(host.json). (Not C(path) - Ansible would add the file's attributes to the result, C(state) among
      them, hiding the host state.)
  returned: always
  type: str
  sample: /var/lib/ctrhost/host.json
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ctrhost.fleet.plugins.module_utils.host import state as _hoststate
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.module import COMMON_ARGS, argument_spec, run


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            COMMON_ARGS,
            state=dict(type="str", choices=list(_hoststate.HOST_STATES)),
            reason=dict(type="str"),
            force=dict(type="bool", default=False),
            progress=dict(type="dict"),
            progress_update=dict(type="dict"),
        ),
        mutually_exclusive=[("progress", "progress_update")],
        supports_check_mode=True,
    )
    run(module, _hoststate.task, module.params, module.check_mode)


if __name__ == "__main__":
    main()
