#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: container_info
short_description: State, limits, usage and network of the containers of a host
version_added: 0.1.0
description:
  - Lists every container declared under O(root), or the named ones, read-only.
  - State comes from the OCI runtime and the cgroup freezer; effective limits and usage are read from the
    cgroup files (cgroup v1, hybrid or v2); network interfaces are read back from the container's network
    namespace through netlink.
  - The result is a list of flat dictionaries so that C(json_query) and C(selectattr) filter it easily.
author:
  - ctrhost.fleet maintainers (@ctrhost)
requirements:
  - Python 3 on the managed host; pyroute2 to read interfaces back (left out without it)
  - runc or crun
options:
  name:
    description:
      - Names of the containers to report. All containers when omitted. Names that do not exist are listed in
        RV(missing) (not an error).
    type: list
    elements: str
    aliases: [names]
  network:
    description:
      - Read the interfaces of each running container from its network namespace.
    type: bool
    default: true
  runtime_path:
    description:
      - Absolute path of the runc binary; found on C(PATH) and the sbin directories when omitted.
    type: path
extends_documentation_fragment:
  - ctrhost.fleet.common
  - ctrhost.fleet.attributes
  - ctrhost.fleet.attributes.INFO_MODULE
  - ctrhost.fleet.attributes.ACTIONGROUP
seealso:
  - module: ctrhost.fleet.container
"""

EXAMPLES = r"""
- name: All containers of the host
  ctrhost.fleet.container_info:
  register: info

- name: Names of the running ones
  ansible.builtin.debug:
    msg: "{{ info.containers | selectattr('state', 'equalto', 'running') | map(attribute='name') }}"

- name: Memory used by web1
  ctrhost.fleet.container_info:
    name: web1
  register: web1

- ansible.builtin.debug:
    msg: "{{ web1.containers[0].usage.memory_current | human_readable }}"
"""

RETURN = r"""
containers:
  description: One entry per container, sorted by name.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Container name.
      type: str
      returned: always
    state:
      description: V(running), V(frozen), V(stopped) or V(created).
      type: str
      returned: always
    running:
      description: Whether its processes exist (running or frozen).
      type: bool
      returned: always
    pid:
      description: Host pid of the init process; null when stopped.
      type: int
      returned: always
    clock:
      description:
        - The time namespace of the init process and its clock offsets (C(/proc/PID/timens_offsets)), in
          seconds added to the host's CLOCK_MONOTONIC and CLOCK_BOOTTIME; null when stopped or unreadable.
        - A container starts with offsets 0 in a time namespace of its own (V(own_namespace)); a restore
          sets them so that its clocks continue from the dump (negative after a pause on the same host,
          positive on a host that booted more recently). A container started where time namespaces are not
          available shares the host's (V(own_namespace=false)) until its first restore.
      type: dict
      returned: always
      sample: {namespace: "time:[4026532304]", own_namespace: true,
               offsets: {monotonic: -5.116363905, boottime: -5.116380955}}
    template:
      description: Template name.
      type: str
      returned: always
    template_sha256:
      description: Checksum of the template when the container was created.
      type: str
      returned: always
    runtime:
      description: OCI runtime.
      type: str
      returned: always
    command:
      description: Init command.
      type: list
      elements: str
      returned: always
    hostname:
      description: Host name inside.
      type: str
      returned: always
    init:
      description: The declared system-container mode (auto, systemd, none).
      type: str
      returned: always
    system:
      description: Whether it runs as a system container (an init such as systemd as PID 1).
      type: bool
      returned: always
    env:
      description: Declared environment.
      type: dict
      returned: always
    secret_env:
      description: Names of the secret environment variables; every value is C(********).
      type: dict
      returned: always
      sample: {"DB_PASSWORD": "********"}
    mounts:
      description: Declared mounts.
      type: list
      elements: dict
      returned: always
    capabilities:
      description: Declared capability changes ({add, drop}).
      type: dict
      returned: always
    autostart:
      description: Autostart flag.
      type: bool
      returned: always
    privileged:
      description: Whether the container runs with the host's ids (no user namespace); true for a container
        created before user namespaces were supported.
      type: bool
      returned: always
    idmap:
      description:
        - The id range of an unprivileged container's user namespace ({uid, gid, size}; ids 0 to size-1
          inside are uid (gid) to uid+size-1 on the host, as C(/proc/<pid>/uid_map) shows); null when
          privileged.
        - With C(isolated=true), a range of the container's own (O(ctrhost.fleet.container#module:idmap_isolated)).
      type: dict
      returned: always
      sample: {uid: 1000000000, gid: 1000000000, size: 65536}
    created:
      description: Creation time (UTC).
      type: str
      returned: always
    started:
      description: When the runtime created the running instance; null when stopped.
      type: str
      returned: always
    bundle:
      description: OCI bundle directory.
      type: str
      returned: always
    rootfs:
      description: Overlay mount point.
      type: str
      returned: always
    rootfs_mounted:
      description: Whether the overlay is mounted.
      type: bool
      returned: always
    cgroups_path:
      description: Cgroup path.
      type: str
      returned: always
    freezer:
      description: Freezer state (thawed, freezing, frozen); null when no cgroup exists.
      type: str
      returned: always
    limits:
      description: Declared limits (normalised).
      type: dict
      returned: always
    effective_limits:
      description: Limits read from the cgroup files (normalised shape; empty when stopped).
      type: dict
      returned: always
    usage:
      description: Usage read from the cgroup files (empty when stopped).
      type: dict
      returned: always
      contains:
        memory_current:
          description: Bytes in use.
          type: int
          returned: when running
        memory_peak:
          description: Highest bytes in use.
          type: int
          returned: when running
        cpu_ns:
          description: CPU time used, nanoseconds.
          type: int
          returned: when running
        pids_current:
          description: Number of tasks.
          type: int
          returned: when running
        oom_kills:
          description: OOM kills in the cgroup.
          type: int
          returned: when the kernel reports it
    netns:
      description: Network namespace path.
      type: str
      returned: always
    netns_exists:
      description: Whether the network namespace exists.
      type: bool
      returned: always
    network_declared:
      description: Declared interfaces (normalised).
      type: list
      elements: dict
      returned: always
    network:
      description: Interfaces read back through netlink.
      type: list
      elements: dict
      returned: when the netns exists and O(network=true)
  sample:
    - name: web1
      state: running
      pid: 12345
      template: busybox
      limits: {memory: 268435456, pids: 128}
      usage: {memory_current: 1056768, memory_peak: 2199552, cpu_ns: 14000000, pids_current: 2}
missing:
  description: Requested names that are not containers of this host.
  returned: always
  type: list
  elements: str
  sample: ["web9"]
count:
  description: Number of containers reported.
  returned: always
  type: int
  sample: 1
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ctrhost.fleet.plugins.module_utils.container import info as _info
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.module import COMMON_ARGS, argument_spec, run


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            COMMON_ARGS,
            name=dict(type="list", elements="str", aliases=["names"]),
            network=dict(type="bool", default=True),
            runtime_path=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    run(module, _info.task, module.params, module.check_mode)


if __name__ == "__main__":
    main()
