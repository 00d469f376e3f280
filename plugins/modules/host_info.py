#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: host_info
short_description: Capacity, kernel, cgroup layout, runtimes and CRIU features of a container host
version_added: 0.1.0
description:
  - Reports what a container host can take and what it can do, read-only.
  - Capacity is the cpus this process may run on (its affinity), total and available memory, and what
    the containers declared under O(root) have committed (sums of their memory and cpus limits).
  - Capabilities are the kernel release, the cgroup mode (C(v1), C(v2) or C(hybrid)) with where each
    controller is mounted, the OCI runtimes (runc, crun) with whether each can run containers here,
    overlayfs support, and CRIU with its C(criu check) verdict and features (lazy pages through
    userfaultfd, dirty-memory tracking for pre-copy, clock continuity through time namespaces).
  - Host state (C(active), C(cordoned), C(draining), C(drained), C(upgrading)) comes from
    C(host.json) under O(root); a host without that file is C(active).
  - Results of external commands are computed once per run.
author:
  - ctrhost.fleet maintainers (@ctrhost)
requirements:
  - Python 3 on the managed host (runc, crun and CRIU are reported when present)
options:
  gather:
    description:
      - Parts to gather. V(all) is every part; V(min) is the parts that run no command
        (V(cpu), V(memory), V(kernel), V(cgroup), V(overlayfs), V(limits), V(host_state), V(committed),
        V(kernel_limits)).
      - A part prefixed with V(!) is left out; a list of only such items starts from V(all),
        so V([!criu_check]) skips the slowest probe.
      - V(criu) is CRIU's path and version; V(criu_check) runs C(criu check);
        V(criu_features) runs C(criu check --feature) for each feature and probes pipe resizing.
      - A passing C(criu check), CRIU's version and the feature verdicts are kept (the same cache as
        checkpoints and migrations use) until the CRIU binary or the kernel changes, or the host reboots.
    type: list
    elements: str
    default: [all]
    choices: [all, min, cpu, memory, kernel, cgroup, overlayfs, limits, runtimes, criu, criu_check,
              criu_features, host_state, committed, kernel_limits,
              '!cpu', '!memory', '!kernel', '!cgroup', '!overlayfs', '!limits', '!runtimes', '!criu',
              '!criu_check', '!criu_features', '!host_state', '!committed', '!kernel_limits']
extends_documentation_fragment:
  - ctrhost.fleet.common
  - ctrhost.fleet.attributes
  - ctrhost.fleet.attributes.INFO_MODULE
  - ctrhost.fleet.attributes.ACTIONGROUP
notes:
  - Lazy migration through the runtime needs CRIU to grow a pipe beyond C(fs.pipe-max-size), which takes
    C(CAP_SYS_RESOURCE) or a larger C(fs.pipe-max-size); C(criu.features.lazy_pages_usable) tells
    whether that works for this process and RV(criu.lazy_pages_reason) why not.
  - crun refuses a hybrid cgroup layout whose cgroup2 hierarchy has controllers; runc works there.
"""

EXAMPLES = r"""
- name: Gather everything about the host
  ctrhost.fleet.host_info:
  register: host

- name: Stop unless CRIU passed its check
  ansible.builtin.assert:
    that: host.criu.check_passed
    fail_msg: "{{ host.criu.check_output }}"

- name: Quick capacity read without running criu check
  ctrhost.fleet.host_info:
    gather: ['!criu_check', '!criu_features']
  register: capacity

- name: Only the facts that run no command, under another root
  ctrhost.fleet.host_info:
    root: /srv/ctrhost
    gather: [min]
"""

RETURN = r"""
gathered:
  description: Parts gathered.
  returned: always
  type: list
  elements: str
  sample: ["min", "runtime", "criu"]
root:
  description: The root whose C(host.json) and containers were read.
  returned: always
  type: str
  sample: "/var/lib/ctrhost"
cpus:
  description: CPUs this process may run on (its affinity), as C(nproc) counts them.
  returned: when cpu is gathered
  type: int
  sample: 8
cpus_online:
  description: CPUs online on the host.
  returned: when cpu is gathered
  type: int
  sample: 8
memory_total:
  description: Total memory in bytes (C(MemTotal)).
  returned: when memory is gathered
  type: int
  sample: 16777216000
memory_available:
  description: Memory available for new work in bytes (C(MemAvailable)).
  returned: when memory is gathered
  type: int
  sample: 12884901888
swap_total:
  description: Swap in bytes.
  returned: when memory is gathered
  type: int
  sample: 0
kernel:
  description: Kernel release, as C(uname -r) prints it.
  returned: when kernel is gathered
  type: str
  sample: 6.1.0-18-amd64
kernels_installed:
  description:
    - The kernel releases installed for a reboot to boot (C(/boot/vmlinuz-*)), and the running one, newest
      first in the order GRUB uses (numbers compared as numbers). The first is the kernel a reboot into the
      newest one runs; the role C(ctrhost.fleet.kernel_upgrade) checks it after its reboot.
  returned: when kernel is gathered
  type: list
  elements: str
  sample: [6.1.0-41-amd64, 6.1.0-18-amd64]
cgroup:
  description: The cgroup layout.
  returned: when cgroup is gathered
  type: dict
  contains:
    mode:
      description: V(v1), V(v2), V(hybrid) (v1 controllers plus a cgroup2 mount) or V(none).
      type: str
    version:
      description: The hierarchy resource limits go through (2 for v2, 1 for v1 and hybrid).
      type: int
    controllers:
      description: Controllers available.
      type: list
      elements: str
    mounts:
      description: Controller name to the mount point of its hierarchy.
      type: dict
    v2_mount:
      description: Mount point of the cgroup2 hierarchy, if any.
      type: str
    v2_controllers:
      description: Controllers attached to the cgroup2 hierarchy.
      type: list
      elements: str
  sample: {mode: v2, version: 2, controllers: [cpu, io, memory, pids], mounts: {cpu: /sys/fs/cgroup},
           v2_mount: /sys/fs/cgroup, v2_controllers: [cpu, io, memory, pids]}
overlayfs:
  description: Whether overlay mounts work; C(source) is V(registered) (in C(/proc/filesystems))
    or V(module) (installed, loaded on first mount).
  returned: when overlayfs is gathered
  type: dict
  sample: {supported: true, source: registered}
limits:
  description:
    - Per limit key that is kept on the containers' directories rather than in a cgroup (V(disk)), whether
      the filesystem holding O(root) can enforce it (V(available)) and why not (V(reason)), with the
      filesystem's mount point and type.
  returned: when limits is gathered
  type: dict
  sample: {disk: {available: false, reason: "the kernel has no project quota support", mount: /, fstype: ext4}}
kernel_limits:
  description:
    - The kernel limits that many containers hit before the host's memory runs out (per-user quotas and
      host-wide tables; the C(ctrhost.fleet.host) role sets them, sized for the host's memory).
    - V(sysctls) are their values now (V(null) where the kernel has no such setting), V(recommended) what this
      host's memory calls for, V(below_recommended) the names whose value is lower.
    - V(key_quota) is, per root uid of unprivileged containers (the shared range's, the first range of root in
      C(/etc/subuid), then that of each container with an isolated range,
      O(ctrhost.fleet.container#module:idmap_isolated)), the keys and key bytes it holds, the limits
      (C(kernel.keys.maxkeys) and C(kernel.keys.maxbytes)), what is free, and V(containers_free), how many more
      containers can start before a start is refused. Every running container holds one key as its root.
    - V(containers_free) is that of the shared range's root, to which every container of the shared range
      counts (V(null) when the kernel has no keys).
  returned: when kernel_limits is gathered
  type: dict
  sample:
    sysctls: {kernel.keys.maxkeys: 49152, kernel.keys.maxbytes: 49152000, fs.inotify.max_user_instances: 98304}
    recommended: {kernel.keys.maxkeys: 49152, kernel.keys.maxbytes: 49152000, fs.inotify.max_user_instances: 98304}
    below_recommended: []
    key_quota:
      - {uid: 1000000000, keys: 250, maxkeys: 49152, bytes: 3500, maxbytes: 49152000, free_keys: 48902,
         free_bytes: 49148500, containers_free: 48902}
    containers_free: 48902
runtimes:
  description: Per runtime (V(runc), V(crun)) its path, version, commit, spec, whether it can run containers
    here (V(usable)) and why not (V(reason)); crun also reports V(checkpoint) (built with CRIU).
  returned: when runtimes is gathered
  type: dict
  sample: {runc: {path: /usr/sbin/runc, version: 1.1.5, usable: true, reason: null},
           crun: {path: null, version: null, usable: false, reason: crun not found on this host}}
criu:
  description: CRIU found on the host.
  returned: when criu, criu_check or criu_features is gathered
  type: dict
  sample:
    path: /usr/sbin/criu
    version: 4.2.1
    check_passed: true
    check_output: Looks good.
    features:
      uffd: true
      mem_dirty_track: false
      lazy_pages: true
      pre_dump: false
    cap_sys_resource: true
    pipe_max_size: 1048576
    pipe_size_needed: 4194304
    lazy_pages_reason: null
    clock_continuity_reason: null
  contains:
    path:
      description: Path of C(criu), or null.
      type: str
    version:
      description: Version from C(criu --version).
      type: str
    check_passed:
      description: Whether C(criu check) succeeded.
      type: bool
      returned: when criu_check is gathered
    check_output:
      description: Last lines of the output of C(criu check).
      type: str
      returned: when criu_check is gathered
    features:
      description:
        - Verdicts of C(criu check --feature) (V(uffd), V(uffd_noncoop), V(mem_dirty_track), V(pidfd_store),
          V(timens), V(network_lock_nftables); null when this CRIU does not know the feature) and derived
          V(lazy_pages), V(dirty_tracking), V(pre_dump), V(lazy_pages_usable), V(clock_continuity) and
          V(kdat_cache) (see RV(criu.kdat_cache_reason)).
        - V(clock_continuity) is true when a restored or migrated container's CLOCK_MONOTONIC, CLOCK_BOOTTIME
          and C(/proc/uptime) continue from where they stood at the dump. It needs a kernel with time namespaces,
          util-linux's C(unshare) and C(nsenter) with C(--time) (containers start in a time namespace of
          their own, commands exec'd into them join it) and a CRIU that restores time namespaces.
      type: dict
      returned: when criu_features is gathered and CRIU is found
    cap_sys_resource:
      description: Whether this process holds C(CAP_SYS_RESOURCE) in the initial user namespace.
      type: bool
      returned: when criu_features is gathered and CRIU is found
    pipe_max_size:
      description: C(fs.pipe-max-size) in bytes.
      type: int
      returned: when criu_features is gathered and CRIU is found
    pipe_size_needed:
      description: Pipe size in bytes CRIU's page-pipe asks for when serving lazy pages.
      type: int
      returned: when criu_features is gathered and CRIU is found
    lazy_pages_reason:
      description: Why lazy migration will not work here, or null.
      type: str
      returned: when criu_features is gathered and CRIU is found
    kdat_cache_reason:
      description:
        - Why CRIU cannot keep its kernel probe between runs here, or null (V(features.kdat_cache) true).
          Run as root it keeps it in C(/run/criu.kdat) only when C(/run) is a tmpfs; elsewhere every dump
          and restore probes the kernel again (tens of milliseconds each).
      type: str
      returned: when criu_features is gathered on the host itself and CRIU is found
    clock_continuity_reason:
      description:
        - Why clock continuity is not available here (kernel without time namespaces, C(unshare) or
          C(nsenter) without C(--time), CRIU too old), or null. Without it a restored container's clocks may
          jump with the host's, or commands exec'd into it read other clocks than its init.
      type: str
      returned: when criu_features is gathered and CRIU is found
host_state:
  description: State of the host for evacuation (from C(host.json); V(active) when absent).
  returned: when host_state is gathered
  type: str
  sample: active
host_state_detail:
  description: The whole content of C(host.json) (empty when absent).
  returned: when host_state is gathered
  type: dict
  sample: {"state": "active", "since": null, "history": []}
committed:
  description: What the containers under O(root) declared, summed.
  returned: when committed is gathered
  type: dict
  sample:
    memory: 4294967296
    cpus: 3.5
    containers: 6
    without_memory_limit: 1
    without_cpus_limit: 2
  contains:
    memory:
      description: Sum of C(limits.memory) in bytes.
      type: int
    cpus:
      description: Sum of C(limits.cpus).
      type: float
    containers:
      description: Containers (directories with a C(spec.json)).
      type: int
    without_memory_limit:
      description: Containers that declare no memory limit.
      type: int
    without_cpus_limit:
      description: Containers that declare no cpus limit.
      type: int
container_count:
  description: Containers declared under O(root).
  returned: when committed is gathered
  type: int
  sample: 6
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ctrhost.fleet.plugins.module_utils.host import info as _hostinfo
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.module import COMMON_ARGS, argument_spec, run


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            COMMON_ARGS,
            gather=dict(type="list", elements="str", default=["all"], choices=list(_hostinfo.GATHER_CHOICES)),
        ),
        supports_check_mode=True,
    )
    run(module, _hostinfo.task, module.params, module.check_mode)


if __name__ == "__main__":
    main()
