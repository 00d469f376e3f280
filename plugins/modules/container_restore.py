#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: container_restore
short_description: Restore a container from a CRIU checkpoint
version_added: 0.1.0
description:
  - Restores container O(name) from a checkpoint made by M(ctrhost.fleet.container_checkpoint), on the
    host that made it or on another one where the checkpoint directory was copied to
    C(<root>/checkpoints/<name>/<id>/).
  - The template must be installed here with the same sha256 as when the checkpoint was made; otherwise
    the task fails naming both checksums and nothing is changed.
  - Recreates what the container needs on this host - the overlay rootfs (from the checkpoint's rootfs
    changes when the container has no upper layer here), the network namespace C(/run/netns/ctrhost-<name>)
    with the same interfaces, IP addresses and MAC addresses, C(config.json) with this host's cgroups path
    and the spec's limits - then runs the runtime's C(restore) and verifies the container runs. Processes
    continue from their dumped state (same memory, same counters).
  - CRIU restores the container in a new time namespace whose offsets make its CLOCK_MONOTONIC,
    CLOCK_BOOTTIME and C(/proc/uptime) continue from where they stood at the dump, however long ago and
    whatever this host's uptime (on a host that booted since, the offsets are positive; the clocks never
    jump backward). This also holds for checkpoints of containers started without a time namespace.
    M(ctrhost.fleet.container_info) shows the offsets (C(clock)).
  - When the restore fails, what this task created is removed again and the task fails with a classified
    C(cause) and CRIU's log lines.
author:
  - ctrhost.fleet maintainers (@ctrhost)
requirements:
  - Python 3 with pyroute2 on the managed host
  - runc or crun
  - CRIU that passes C(criu check)
options:
  name:
    description: Container name.
    type: str
    required: true
  id:
    description: Checkpoint id; the newest checkpoint of the container when omitted.
    type: str
extends_documentation_fragment:
  - ctrhost.fleet.common
  - ctrhost.fleet.common.CRIU_TOOLS
  - ctrhost.fleet.attributes
  - ctrhost.fleet.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
    details: Validates the checkpoint and the template checksum and lists the command that would run.
  diff_mode:
    support: full
    details: The container's run state before and after.
  idempotent:
    support: full
    details: A container that already runs is left alone (C(changed=false)).
seealso:
  - module: ctrhost.fleet.container_checkpoint
  - module: ctrhost.fleet.container_migrate
"""

EXAMPLES = r"""
- name: Restore web1 from its newest checkpoint
  ctrhost.fleet.container_restore:
    name: web1

- name: Restore a given checkpoint
  ctrhost.fleet.container_restore:
    name: web1
    id: before-upgrade
"""

RETURN = r"""
id:
  description: Checkpoint id restored from.
  returned: always
  type: str
  sample: "20260101T120000Z"
checkpoint_dir:
  description: Directory of the checkpoint.
  returned: always
  type: str
  sample: "/var/lib/ctrhost/checkpoints/web1/20260101T120000Z"
pid:
  description: Host pid of the restored container's init.
  returned: success
  type: int
  sample: 23456
stats:
  description: CRIU's restore statistics (times in seconds, C(*_us) in microseconds).
  returned: changed and not check mode
  type: dict
  sample: {restore_time: 0.27, forking_time: 0.0007, pages_restored: 32}
duration:
  description: Seconds the runtime's restore took.
  returned: changed and not check mode
  type: float
  sample: 0.41
created:
  description: Whether the container did not exist on this host before (restored from another host).
  returned: changed and not check mode
  type: bool
  sample: false
cause:
  description: On failure, the classified cause (see M(ctrhost.fleet.container_checkpoint)).
  returned: failure of the restore
  type: str
  sample: "pid_conflict"
criu_log:
  description: On failure, the error lines of CRIU's restore log.
  returned: failure of the restore
  type: list
  elements: str
  sample: ["Error (criu/cr-restore.c:1480): Can't fork for 42: File exists"]
commands:
  description: Commands run (or that would run in check mode).
  returned: always
  type: list
  elements: str
  sample:
    - /usr/sbin/runc --root /run/ctrhost/runtime/runc restore -d --image-path /var/lib/ctrhost/checkpoints/web1/20260101T120000Z/images
      -b /var/lib/ctrhost/containers/web1 web1
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import restore as _restore
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.module import COMMON_ARGS, CRIU_TOOL_ARGS, argument_spec, run


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            COMMON_ARGS, CRIU_TOOL_ARGS,
            name=dict(type="str", required=True),
            id=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    run(module, _restore.task, module.params, module.check_mode)


if __name__ == "__main__":
    main()
