#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: container_limits
short_description: Change the resource limits of one container live
version_added: 0.1.0
description:
  - Changes the cgroup limits of a container. When it runs (or is frozen) the change is applied in place through
    the OCI runtime's C(update) (the io throttles through the cgroup files) and verified by reading the cgroup
    files back; the container is never restarted and its init pid stays the same.
  - The new limits are stored in the container's C(spec.json) and in its bundle's C(config.json), so a later
    M(ctrhost.fleet.container) task without O(limits) keeps them, and a restore from a checkpoint or a restart
    applies them too. A stopped container only gets the stored limits.
  - Lowering the C(memory) key of O(limits) below what the container uses asks the kernel to reclaim first (cgroup v2
    C(memory.reclaim); cgroup v1 steps the limit down). When the memory cannot be reclaimed (tmpfs without swap,
    locked pages) the task fails with the current usage and the requested limit, leaves the previous limit in
    place and kills nothing.
  - Works on cgroup v1, hybrid and v2 hosts, with the cgroupfs driver (C(cgroupsPath) such as C(/ctrhost/host1/web1)).
author:
  - ctrhost.fleet maintainers (@ctrhost)
requirements:
  - Python 3 on the managed host
  - runc or crun
options:
  name:
    description: Name of an existing container.
    type: str
    required: true
  limits:
    description:
      - Limits to set. Keys not given keep their stored value (unless O(replace)); a key set to C(null) is removed,
        which lifts the limit (memory, cpus, pids unlimited; cpuset back to the parent's; weights to the default).
      - Sizes are binary and case-insensitive, the C(B) optional - C(512M), C(1G), C(1.5GiB), C(64k) or a number of
        bytes; values are normalised before comparing, so C(1G) and C(1024M) are the same.
      - C(cpus) (e.g. C(1.5)) is a CFS quota over a 100000 us period, at most the host's cpu count.
      - C(cpu_weight) 1-10000 (cgroup v2 C(cpu.weight); on v1 C(cpu.shares) through runc's conversion).
      - C(cpuset_cpus) / C(cpuset_mems) are lists such as C(0-1,3) of cpus / memory nodes present on the host.
      - C(memory) at least C(4M); C(memory_swap) is memory plus swap (as in OCI), at least C(memory), or C(-1) /
        C(unlimited); C(memory_reservation) a soft limit, at most C(memory).
      - C(pids) 1-4194304. C(io_weight) 10-1000 (needs the blkio weight file, BFQ on v1).
      - C(io_read_bps) / C(io_write_bps) a list of C({device, rate}) where C(device) is a block device path or
        C(MAJ:MIN) and C(rate) a size per second (C(10M)); a mapping of device to rate is accepted too.
      - C(disk) the space of the container's own files (its directory, with the overlay's upper and work), at least
        C(1M); a project quota
        on the filesystem holding O(root), refused with the reason where it cannot be enforced; lowering it below
        the current usage is refused, naming the usage.
    type: dict
    required: true
  replace:
    description: Make O(limits) the whole set of limits, so stored keys not given are removed.
    type: bool
    default: false
  runtime:
    description: OCI runtime of the container; the one it was created with when omitted.
    type: str
    choices: [runc, crun]
  runtime_path:
    description: Absolute path of the runtime binary; found on C(PATH) and the sbin directories when omitted.
    type: path
extends_documentation_fragment:
  - ctrhost.fleet.common
  - ctrhost.fleet.attributes
  - ctrhost.fleet.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
    details: Compares the declared limits and the cgroup files and reports the same C(changed) as a real run.
  diff_mode:
    support: full
    details: The declared limits before and after.
  idempotent:
    support: full
notes:
  - Runs under the container's lock (C(<run dir>/locks/<name>.lock)), so it never interleaves with another task
    on the same container.
  - Only cgroupfs paths are supported, not systemd C(slice:prefix:name) ones.
seealso:
  - module: ctrhost.fleet.container
  - module: ctrhost.fleet.container_info
"""

EXAMPLES = r"""
- name: Give web1 more memory and half a cpu, without restarting it
  ctrhost.fleet.container_limits:
    name: web1
    limits:
      memory: 1G
      cpus: 0.5
      pids: 512
  register: web1_limits

- name: Show what it uses now
  ansible.builtin.debug:
    msg: "{{ web1_limits.usage.memory_current | human_readable }} of {{ web1_limits.after.memory | human_readable }}"

- name: Throttle reads from the first disk and drop the cpu limit
  ctrhost.fleet.container_limits:
    name: web1
    limits:
      cpus: null
      io_read_bps:
        - device: /dev/vda
          rate: 20M
"""

RETURN = r"""
before:
  description: Declared limits before the task (normalised; sizes in bytes, rates in bytes/s).
  returned: always
  type: dict
  sample: {memory: 536870912, cpus: 1.0}
after:
  description: Declared limits after the task (stored in C(spec.json) and C(config.json)).
  returned: always
  type: dict
  sample: {memory: 1073741824, cpus: 0.5, pids: 512}
changes:
  description: Declared keys that changed, each with C(before) and C(after).
  returned: always
  type: dict
  sample: {"memory": {"before": 536870912, "after": 1073741824}}
effective:
  description: Limits read back from the cgroup files after the change (predicted in check mode).
  returned: when the container runs
  type: dict
  sample: {"memory": 1073741824, "cpus": 0.5, "pids": 512}
effective_before:
  description: Limits read from the cgroup files before the change.
  returned: when the container runs
  type: dict
  sample: {"memory": 536870912, "cpus": 1.0}
live_changes:
  description: Keys whose cgroup files had to change, each with C(before) and C(after).
  returned: when the container runs
  type: dict
  sample: {"memory": {"before": 536870912, "after": 1073741824}}
usage:
  description: Current usage read from the cgroup, null when the container is not running.
  returned: always
  type: dict
  sample:
    memory_current: 1056768
    memory_peak: 2199552
    cpu_ns: 14000000
    pids_current: 2
    oom_kills: 0
  contains:
    memory_current: {description: Memory charged now (bytes)., type: int}
    memory_peak: {description: Highest memory charged (bytes); null where the kernel has no peak file., type: int}
    cpu_ns: {description: Cpu time used (nanoseconds)., type: int}
    pids_current: {description: Number of tasks., type: int}
    oom_kills: {description: OOM kills in this cgroup., type: int}
running:
  description: Whether the container was running (or frozen), so the change was applied live.
  returned: always
  type: bool
  sample: true
pid:
  description: Host pid of the container's init, the same before and after the change.
  returned: always
  type: int
  sample: 12345
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ctrhost.fleet.plugins.module_utils.container import limits as _container_limits
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.module import COMMON_ARGS, argument_spec, run


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            COMMON_ARGS,
            name=dict(type="str", required=True),
            limits=dict(type="dict", required=True),
            replace=dict(type="bool", default=False),
            runtime=dict(type="str", choices=["runc", "crun"]),
            runtime_path=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    run(module, _container_limits.adjust, module.params, module.check_mode)


if __name__ == "__main__":
    main()
