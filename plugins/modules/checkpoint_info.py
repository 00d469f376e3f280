#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: checkpoint_info
short_description: The checkpoints kept on a host, their sizes, checksums, age and what they need
version_added: 0.1.0
description:
  - Lists the complete checkpoints under O(root) (of every container, or of the named ones), read-only, oldest
    first per container.
  - For each, the recorded CRIU statistics and options, the space the images take now, its age, whether it is the
    newest of its container, whether the container still exists on this host, and whether the template it needs is
    installed here with the same content (so that M(ctrhost.fleet.container_restore) can use it on this host).
  - With O(checksum=true), a sha256 over the checkpoint's files, to compare copies on two hosts.
author:
  - ctrhost.fleet maintainers (@ctrhost)
requirements:
  - Python 3 on the managed host.
options:
  name:
    description:
      - Containers whose checkpoints to report. Every container's when omitted.
    type: list
    elements: str
    aliases: [names]
  checksum:
    description:
      - Compute RV(checkpoints[].sha256), reading every file of every reported checkpoint (memory images can be
        large).
    type: bool
    default: false
  disk_usage:
    description: Measure the space each checkpoint takes now; V(false) reports RV(checkpoints[].disk_usage) as null.
    type: bool
    default: true
extends_documentation_fragment:
  - ctrhost.fleet.common
  - ctrhost.fleet.attributes
  - ctrhost.fleet.attributes.INFO_MODULE
  - ctrhost.fleet.attributes.ACTIONGROUP
seealso:
  - module: ctrhost.fleet.container_checkpoint
  - module: ctrhost.fleet.container_restore
  - module: ctrhost.fleet.template_info
"""

EXAMPLES = r"""
- name: Checkpoints of the host
  ctrhost.fleet.checkpoint_info:
  register: kept

- name: Space taken by checkpoints
  ansible.builtin.debug:
    msg: "{{ kept.total_size | human_readable }}"

- name: Checkpoints older than a week whose container is gone
  ansible.builtin.debug:
    msg: "{{ kept.checkpoints | selectattr('age_seconds', 'gt', 604800) | rejectattr('container_exists') | list }}"

- name: Newest checkpoint of web1 with a checksum
  ctrhost.fleet.checkpoint_info:
    name: web1
    checksum: true
  register: web1
"""

RETURN = r"""
checkpoints:
  description: One entry per complete checkpoint, by container name, oldest first.
  returned: always
  type: list
  elements: dict
  sample:
    - id: 20261130T080000Z
      name: web1
      size: 7340032
      age_seconds: 3600
      latest: true
      restorable_here: true
  contains:
    id:
      description: Checkpoint id.
      type: str
      returned: always
      sample: 20261130T080000Z
    name:
      description: Container name.
      type: str
      returned: always
      sample: web1
    path:
      description: Checkpoint directory.
      type: str
      returned: always
      sample: /var/lib/ctrhost/checkpoints/web1/20261130T080000Z
    created:
      description: When it was taken (UTC, ISO 8601).
      type: str
      returned: always
      sample: "2026-11-30T08:00:00+00:00"
    age_seconds:
      description: Seconds since it was taken.
      type: int
      returned: always
      sample: 3600
    size:
      description: Bytes of the images when it was taken.
      type: int
      returned: always
      sample: 7340032
    disk_usage:
      description: Bytes it takes now; null with O(disk_usage=false).
      type: int
      returned: always
      sample: 7340032
    sha256:
      description: sha256 over its files (sorted names and contents); null unless O(checksum=true).
      type: str
      returned: always
      sample: 3b1f5e2d4c6a8b0e9f7d5c3a1b2e4f6d8c0a9b7e5d3c1f2a4b6d8e0c9a7b5d3f1
    latest:
      description: Whether it is the newest checkpoint of its container.
      type: bool
      returned: always
      sample: true
    template:
      description: The template the container was made from.
      type: str
      returned: always
      sample: debian12
    template_sha256:
      description: The content of that template when the checkpoint was taken.
      type: str
      returned: always
      sample: 9f2c1c3d6c0e4f1f0b8e2a7d5c4b3a29181716151413121110f0e0d0c0b0a090
    template_installed:
      description: Whether a template of that name is installed on this host.
      type: bool
      returned: always
      sample: true
    restorable_here:
      description: Whether that template is installed here with the same content, as a restore requires.
      type: bool
      returned: always
      sample: true
    container_exists:
      description: Whether the container is declared on this host.
      type: bool
      returned: always
      sample: true
    criu_version:
      description: CRIU version that took it.
      type: str
      returned: always
      sample: 4.2.1
    kernel:
      description: Kernel release it was taken on.
      type: str
      returned: always
      sample: 6.1.0-28-amd64
    host:
      description: Host name it was taken on.
      type: str
      returned: always
      sample: host1
    runtime:
      description: OCI runtime name and version.
      type: dict
      returned: always
      sample: {name: runc, version: 1.1.5}
    options:
      description: CRIU options of the dump.
      type: dict
      returned: always
      sample: {tcp_established: false, file_locks: false, ext_unix_sk: false, leave_running: true}
    rootfs_tar:
      description: Whether the rootfs changes are in the checkpoint (needed to restore on another host).
      type: bool
      returned: always
      sample: true
count:
  description: Number of checkpoints reported.
  returned: always
  type: int
  sample: 2
total_size:
  description: Bytes all reported checkpoints take.
  returned: always
  type: int
  sample: 14680064
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ctrhost.fleet.plugins.module_utils.host import catalog as _catalog
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.module import COMMON_ARGS, argument_spec, run


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            COMMON_ARGS,
            name=dict(type="list", elements="str", aliases=["names"]),
            checksum=dict(type="bool", default=False),
            disk_usage=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    run(module, _catalog.checkpoint_task, module.params, module.check_mode)


if __name__ == "__main__":
    main()
