#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: container
short_description: Create, run, freeze, stop and remove system containers
version_added: 0.1.0
description:
  - Manages a system container created from an installed OS template (see M(ctrhost.fleet.template)).
    The rootfs is an overlay over the template's rootfs with a per-container upper layer; the template is
    never copied.
  - The container runs under an OCI runtime (runc by default) with its own pid, ipc, uts, mount and
    network namespaces (and a cgroup namespace where the kernel has one). The network namespace is
    C(/run/netns/ctrhost-<name>) and exists as long as the container does, stopped or not.
  - Every container starts in a time namespace of its own (the runtime runs under C(unshare --time); runc
    1.1 has no time namespace in C(config.json)), so that a restore or a migration can give it clock
    offsets and its CLOCK_MONOTONIC, CLOCK_BOOTTIME and C(/proc/uptime) continue from the dump. Its clocks
    read as the host's until then. Where the host cannot (M(ctrhost.fleet.host_info) says why in
    C(criu.clock_continuity_reason)), it starts in the host's time namespace as before.
  - Default isolation - no host devices beyond null, zero, full, random, urandom, tty, console and pts;
    the OCI default masked and read-only C(/proc) paths; Docker's default capability set without
    C(CAP_MKNOD); a seccomp profile (when the runtime has seccomp) that returns EPERM for calls reaching
    host-global kernel state (kexec, kernel modules, keyrings, bpf, perf_event_open, swap, syslog, acct,
    ioperm/iopl, clock setting; mount, unshare and setns unless C(CAP_SYS_ADMIN) is added).
  - O(limits), O(network) and O(autostart) change live on a running container (same pid, no restart).
    O(template), O(command), O(hostname), O(env), O(mounts), O(capabilities), O(privileged) and
    O(runtime) need a re-create; a change to any of them fails and lists the fields unless O(recreate=true).
  - An option left out keeps the container's stored value (so limits changed with
    M(ctrhost.fleet.container_limits) are not undone by a later task that does not mention them).
  - Two tasks on the same container do not interleave; each holds the container's lock under
    C(/run/ctrhost/locks).
author:
  - ctrhost.fleet maintainers (@ctrhost)
requirements:
  - Python 3 on the managed host; pyroute2 for containers with O(network)
  - runc or crun
  - overlayfs in the kernel
extends_documentation_fragment:
  - ctrhost.fleet.container
  - ctrhost.fleet.common
  - ctrhost.fleet.attributes
  - ctrhost.fleet.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
    details: Reports the same C(changed) as a real run and the commands that would run.
  diff_mode:
    support: full
    details: The declared spec before and after.
  idempotent:
    support: partial
    details: V(restarted) always restarts.
notes:
  - The container's console output (stdout and stderr of its init) goes to C(console.log) in its directory.
seealso:
  - module: ctrhost.fleet.containers
    description: Converge every container of a host in one task.
  - module: ctrhost.fleet.container_info
  - module: ctrhost.fleet.container_limits
  - module: ctrhost.fleet.template
"""

EXAMPLES = r"""
- name: A running busybox container with limits
  ctrhost.fleet.container:
    name: web1
    template: busybox
    command: [/bin/sh, -c, "trap 'exit 0' TERM; while :; do sleep 1; done"]
    limits:
      memory: 256M
      cpus: 0.5
      pids: 128

- name: A container with the host's ids (root inside is root of the host), as before
  ctrhost.fleet.container:
    name: legacy1
    template: busybox
    privileged: true

- name: Raise its memory limit live (same pid)
  ctrhost.fleet.container:
    name: web1
    limits:
      memory: 1G
      cpus: 0.5
      pids: 128

- name: A full OS (VPS) from a Debian template with systemd, sshd and cron
  ctrhost.fleet.container:
    name: vps1
    template: debian12
    command: /sbin/init  # init auto-detected: tmpfs /run, cgroup subtree, terminal console
    hostname: vps1.example.org
    network:
      - ifname: eth0
        bridge: br0
        ipv4: 10.0.0.21/24
        gateway: 10.0.0.1

- name: Change the hostname; needs a re-create
  ctrhost.fleet.container:
    name: web1
    hostname: web1.example.org
    recreate: true

- name: A Debian system container with its own address and a read-only bind mount
  ctrhost.fleet.container:
    name: db1
    template: debian-minbase
    command: /sbin/init
    capabilities:
      add: [SYS_ADMIN]
    mounts:
      - source: /srv/db1
        destination: /srv
        readonly: true
    network:
      - ifname: eth0
        bridge: ctrbr0
        ipv4: 10.88.0.11/24
        gateway: 10.88.0.1
    autostart: true

- name: Freeze, then remove
  ctrhost.fleet.container:
    name: web1
    state: "{{ item }}"
  loop: [frozen, absent]
"""

RETURN = r"""
container:
  description: The container after the task (in check mode, as far as it can be known).
  returned: always
  type: dict
  contains:
    name:
      description: Container name.
      type: str
      returned: always
    state:
      description: V(running), V(frozen), V(stopped), V(created) or V(absent).
      type: str
      returned: always
    pid:
      description: Host pid of the init process; null when not running.
      type: int
      returned: always
    template:
      description: Template name.
      type: str
      returned: when present
    runtime:
      description: OCI runtime.
      type: str
      returned: when present
    hostname:
      description: Host name inside.
      type: str
      returned: when present
    init:
      description: The declared system-container mode (auto, systemd, none).
      type: str
      returned: when present
    system:
      description: Whether it runs as a system container (an init as PID 1, see O(init)).
      type: bool
      returned: when present
    command:
      description: Init command.
      type: list
      elements: str
      returned: when present
    limits:
      description: Declared (normalised) limits.
      type: dict
      returned: when present
    network:
      description: Declared (normalised) interfaces.
      type: list
      elements: dict
      returned: when present
    autostart:
      description: Autostart flag.
      type: bool
      returned: when present
    privileged:
      description: Whether the container runs with the host's ids (no user namespace).
      type: bool
      returned: when present
    idmap:
      description:
        - The id range of an unprivileged container's user namespace ({uid, gid, size}; ids 0 to size-1
          inside are uid (gid) to uid+size-1 on the host); null when privileged.
        - With C(isolated=true), a range of the container's own (O(ctrhost.fleet.container#module:idmap_isolated)).
      type: dict
      returned: when present
      sample: {uid: 1000000000, gid: 1000000000, size: 65536}
    created:
      description: Creation time (UTC, ISO 8601).
      type: str
      returned: when present
    cgroups_path:
      description: Cgroup path of the container.
      type: str
      returned: when present
    bundle:
      description: OCI bundle directory.
      type: str
      returned: when present
    rootfs:
      description: Overlay mount point.
      type: str
      returned: when present
    netns:
      description: Network namespace path.
      type: str
      returned: when present
  sample:
    name: web1
    state: running
    pid: 12345
    template: busybox
commands:
  description: Commands the task ran (in check mode, those it would run).
  returned: always
  type: list
  elements: str
  sample:
    - /usr/bin/unshare --fork --kill-child --time -- /usr/sbin/runc --root /run/ctrhost/runtime/runc run
      --bundle /var/lib/ctrhost/containers/web1 --detach --pid-file /run/ctrhost/runtime/runc.pids/web1 web1
diff:
  description: Declared spec before and after.
  returned: when changed
  type: dict
  sample: {"before": {"limits": {"memory": 268435456}}, "after": {"limits": {"memory": 536870912}}}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ctrhost.fleet.plugins.module_utils.container import lifecycle as _container
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.args import container_spec
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.module import run


def main():
    module = AnsibleModule(argument_spec=container_spec(), supports_check_mode=True)
    run(module, _container.ensure, module.params, module.check_mode)


if __name__ == "__main__":
    main()
