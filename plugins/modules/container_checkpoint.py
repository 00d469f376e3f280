#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: container_checkpoint
short_description: Checkpoint a running container with CRIU, or delete checkpoints
version_added: 0.1.0
description:
  - Dumps a running (or frozen) container through the runtime's C(checkpoint) (CRIU) into
    C(<root>/checkpoints/<name>/<id>/), a directory of mode 0700 because the images hold the
    container's memory.
  - Next to CRIU's images the checkpoint keeps C(checkpoint.json) (the container's spec, the template
    and its sha256, CRIU version, kernel, runtime, CRIU's dump statistics, size and options), the
    bundle's C(config.json) and the container's rootfs changes (C(rootfs-diff.tar)), so that
    M(ctrhost.fleet.container_restore) can bring it back on this host or, after copying the directory,
    on another one with the same template.
  - A checkpoint is written under a temporary name and renamed when complete.
  - When the dump fails the container keeps running (the runtime resumes it; this module thaws it when
    it was left frozen) and the task fails with a classified C(cause) and the relevant CRIU log lines.
author:
  - ctrhost.fleet maintainers (@ctrhost)
requirements:
  - Python 3 on the managed host
  - runc or crun
  - CRIU that passes C(criu check) (4.2 or newer on kernels 6.16 and newer)
options:
  name:
    description: Container name.
    type: str
    required: true
  id:
    description:
      - Checkpoint id (1-64 characters V([A-Za-z0-9_.-])). Defaults to the UTC time as
        V(YYYYmmddTHHMMSSZ) when creating; with O(state=absent) and no id every checkpoint of the
        container is deleted.
      - A checkpoint that already exists under this id is not dumped again (idempotent).
    type: str
  state:
    description: V(present) dumps the container, V(absent) deletes checkpoints.
    type: str
    choices: [present, absent]
    default: present
  leave_running:
    description: Keep the container running after the dump (otherwise it stops, as CRIU leaves it).
    type: bool
    default: false
  keep:
    description: After a successful dump, delete all but the newest O(keep) checkpoints of the container.
    type: int
  rootfs:
    description: Keep the container's rootfs changes (the overlay upper layer) in the checkpoint.
    type: bool
    default: true
extends_documentation_fragment:
  - ctrhost.fleet.common
  - ctrhost.fleet.common.CRIU
  - ctrhost.fleet.common.CRIU_TOOLS
  - ctrhost.fleet.attributes
  - ctrhost.fleet.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
    details: Reports the same C(changed) and lists the command that would run; nothing is dumped.
  diff_mode:
    support: partial
    details: With O(state=absent), the checkpoints before and after.
  idempotent:
    support: partial
    details: With an explicit O(id) a second run changes nothing; the default id is new every second.
notes:
  - Requires a CRIU that passes C(criu check) (see M(ctrhost.fleet.host_info)).
  - The container's stdout and stderr must be a pipe or C(/dev/null); CRIU cannot dump an open host file
    outside the container's mounts (cause V(external_stdio)).
seealso:
  - module: ctrhost.fleet.container_restore
  - module: ctrhost.fleet.container_migrate
"""

EXAMPLES = r"""
- name: Checkpoint web1 and keep it running, keeping the three newest checkpoints
  ctrhost.fleet.container_checkpoint:
    name: web1
    leave_running: true
    tcp_established: true
    keep: 3

- name: Checkpoint under a fixed id (stops the container)
  ctrhost.fleet.container_checkpoint:
    name: web1
    id: before-upgrade

- name: Delete one checkpoint
  ctrhost.fleet.container_checkpoint:
    name: web1
    id: before-upgrade
    state: absent
"""

RETURN = r"""
id:
  description: Checkpoint id.
  returned: always
  type: str
  sample: 20260101T120000Z
checkpoint_dir:
  description: Directory of the checkpoint.
  returned: state=present
  type: str
  sample: "/var/lib/ctrhost/checkpoints/web1/20260101T120000Z"
size:
  description: Bytes on disk of the checkpoint (images, logs, rootfs changes).
  returned: state=present and not check mode
  type: int
  sample: 7340032
stats:
  description:
    - CRIU's dump statistics; times in seconds (and C(*_us) in microseconds).
  returned: state=present and not check mode
  type: dict
  sample: {frozen_time: 0.183, freezing_time: 0.002, memdump_time: 0.002, memwrite_time: 0.0002,
           pages_scanned: 48, pages_written: 34, pages_lazy: 0}
options:
  description: The dump options used.
  returned: state=present
  type: dict
  sample: {"leave_running": true, "tcp_established": false, "file_locks": false, "ext_unix_sk": false}
checkpoint:
  description:
    - The checkpoint's metadata (checkpoint.json without the spec).
    - Its C(images) says how the dump was taken. C(frozen_first) and C(freeze_time) (seconds) - the
      container's cgroup frozen before CRIU started. C(staged) - the images written to the run directory's
      tmpfs and copied to disk while and after CRIU wrote them (images of 32 MiB and more that fit there),
      C(why_not) why not, C(move_time) the seconds the copy took after the dump.
  returned: state=present
  type: dict
  sample:
    id: 20260101T120000Z
    name: web1
    created: '2026-01-01T12:00:00+00:00'
    template: busybox
    criu_version: 4.2.1
    size: 7340032
    images: {frozen_first: true, freeze_time: 0.002, staged: true, why_not: null, move_time: 0.06}
pruned:
  description: Ids deleted by O(keep).
  returned: state=present
  type: list
  elements: str
  sample: ["20251231T120000Z"]
deleted:
  description: Ids deleted by O(state=absent).
  returned: state=absent
  type: list
  elements: str
  sample: ["20260101T120000Z"]
cause:
  description:
    - On failure, the classified cause (V(tcp_established), V(ext_unix_sk), V(file_locks),
      V(external_stdio), V(external_file), V(no_space), V(image_corrupt), V(pipe_size), V(page_server),
      V(missing_file), V(pid_conflict), V(network), V(mounts), V(cgroup), V(permission),
      V(process_gone), V(unknown)).
  returned: failure of the dump
  type: str
  sample: "tcp_established"
criu_log:
  description: On failure, the error lines of CRIU's dump log.
  returned: failure of the dump
  type: list
  elements: str
  sample: ["Error (criu/sk-inet.c:188): inet: Connected TCP socket, consider using --tcp-established option."]
commands:
  description: Commands run (or that would run in check mode).
  returned: always
  type: list
  elements: str
  sample:
    - /usr/sbin/runc --root /run/ctrhost/runtime/runc checkpoint --image-path /var/lib/ctrhost/checkpoints/web1/.20260101T120000Z/images
      --leave-running web1
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import dump as _checkpoint
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.module import COMMON_ARGS, CRIU_ARGS, CRIU_TOOL_ARGS, argument_spec, run


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            COMMON_ARGS, CRIU_ARGS, CRIU_TOOL_ARGS,
            name=dict(type="str", required=True),
            id=dict(type="str"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            leave_running=dict(type="bool", default=False),
            keep=dict(type="int"),
            rootfs=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    run(module, _checkpoint.ensure, module.params, module.check_mode)


if __name__ == "__main__":
    main()
