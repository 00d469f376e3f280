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
  - Default isolation - no host devices beyond null, zero, full, random, urandom, tty, console and pts;
    the OCI default masked and read-only C(/proc) paths; Docker's default capability set without
    C(CAP_MKNOD); a seccomp profile (when the runtime has seccomp) that returns EPERM for calls reaching
    host-global kernel state (kexec, kernel modules, keyrings, bpf, perf_event_open, swap, syslog, acct,
    ioperm/iopl, clock setting; mount, unshare and setns unless C(CAP_SYS_ADMIN) is added).
  - O(limits), O(network) and O(autostart) change live on a running container (same pid, no restart).
    O(template), O(command), O(hostname), O(env), O(mounts), O(capabilities) and O(runtime) need a
    re-create; a change to any of them fails and lists the fields unless O(recreate=true).
  - An option left out keeps the container's stored value (so limits changed with
    M(ctrhost.fleet.container_limits) are not undone by a later task that does not mention them).
  - Two tasks on the same container do not interleave; each holds the container's lock under
    C(/run/ctrhost/locks).
author:
  - ctrhost.fleet maintainers (@ctrhost)
options:
  name:
    description:
      - Container name; 1 to 63 letters, digits, C(.), C(_) or C(-), starting with a letter or digit.
        It is the runtime's container id, the cgroup leaf and part of the netns name.
    type: str
    required: true
  state:
    description:
      - V(present) - the container exists (created stopped if it did not); its run state is left as is.
      - V(started) - it runs (a frozen container is thawed).
      - V(stopped) - it does not run; its bundle, upper layer and netns are kept, the rootfs is unmounted.
      - V(frozen) - it runs with every process frozen (cgroup freezer, through the runtime's pause).
      - V(restarted) - stopped if running, then started (a new init pid); always reports a change.
      - V(absent) - process, rootfs mount, cgroups, netns, network links and files are removed.
    type: str
    choices: [present, started, stopped, frozen, restarted, absent]
    default: started
  template:
    description:
      - Installed template the rootfs is layered on. Required to create a container.
      - Changing it needs O(recreate=true) and discards the container's changes to the rootfs.
    type: str
  command:
    description:
      - Init process of the container, a list of arguments or a string split like a shell would.
      - Default - the template's init (C(init) in its C(template.json)), else C(/bin/sh).
    type: raw
  hostname:
    description:
      - Host name inside the container (uts namespace). Default - the container name.
    type: str
  env:
    description:
      - Environment of the init process, added to C(PATH), C(HOME), C(TERM) and C(container=ctrhost).
    type: dict
  mounts:
    description:
      - Host directories or files bound into the container, or tmpfs mounts.
    type: list
    elements: dict
    suboptions:
      source:
        description:
          - Absolute host path (must exist). Required for V(bind).
        type: path
      destination:
        description:
          - Absolute path inside the container.
        type: str
        required: true
      readonly:
        description:
          - Mount read-only.
        type: bool
        default: false
      type:
        description:
          - V(bind) a host path or an empty V(tmpfs).
        type: str
        choices: [bind, tmpfs]
        default: bind
  capabilities:
    description:
      - Changes to the default capability set (C(AUDIT_WRITE CHOWN DAC_OVERRIDE FOWNER FSETID KILL
        NET_BIND_SERVICE NET_RAW SETFCAP SETGID SETPCAP SETUID SYS_CHROOT)).
      - Names with or without the C(CAP_) prefix, any case.
    type: dict
    suboptions:
      add:
        description:
          - Capabilities to grant in addition to the default set.
        type: list
        elements: str
      drop:
        description:
          - Capabilities to remove; V(ALL) removes the whole default set.
        type: list
        elements: str
  limits:
    description:
      - Resource limits, applied live to a running container through the runtime's C(update) and
        verified against the cgroup files. Human units are accepted (V(512M), V(1G)); values are
        normalised before comparison (V(1G) equals V(1024M)).
      - Keys - C(cpus) (e.g. V(1.5)), C(cpu_weight) (1-10000), C(cpuset_cpus), C(cpuset_mems), C(memory),
        C(memory_swap) (memory plus swap, V(-1) unlimited), C(memory_reservation), C(pids),
        C(io_weight) (10-1000), C(io_read_bps) and C(io_write_bps) (lists of C({device, rate})).
      - Lowering C(memory) below the current usage steps down or fails stating usage and the request;
        it never kills the workload silently.
      - An unknown key fails and names it.
    type: dict
  network:
    description:
      - Interfaces of the container, each a veth pair whose host side joins the C(bridge) of the interface.
        Changes apply live.
      - Keys - C(ifname) (required), C(bridge), C(ipv4) (CIDR), C(gateway), C(ipv6), C(gateway6), C(mac),
        C(mtu), C(rate) (egress limit, e.g. V(100mbit)). An unknown key fails and names it.
    type: list
    elements: dict
  autostart:
    description:
      - Start the container when its host boots (stored; honoured by the C(host) role). Default V(false).
    type: bool
  runtime:
    description:
      - OCI runtime for a new container. Default - the stored one, or V(runc) for a new container.
        Changing it needs O(recreate=true).
      - crun 1.8 refuses a hybrid cgroup layout; the error says so.
    type: str
    choices: [runc, crun]
  runtime_path:
    description:
      - Absolute path of the runtime binary; found on C(PATH) and the sbin directories when omitted.
    type: path
  recreate:
    description:
      - Allow a change that needs the container re-created. The container is stopped, its config rebuilt
        and it is brought back to the run state it had (or to O(state)). Its rootfs changes are kept
        unless O(template) changes.
    type: bool
    default: false
  stop_timeout:
    description:
      - Seconds to wait after SIGTERM before the container's processes are killed.
    type: int
    default: 10
extends_documentation_fragment:
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

- name: Raise its memory limit live (same pid)
  ctrhost.fleet.container:
    name: web1
    limits:
      memory: 1G
      cpus: 0.5
      pids: 128

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
diff:
  description: Declared spec before and after.
  returned: when changed
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ctrhost.fleet.plugins.module_utils import _container
from ansible_collections.ctrhost.fleet.plugins.module_utils._module import COMMON_ARGS, argument_spec, run

MOUNT_OPTIONS = dict(
    source=dict(type="path"),
    destination=dict(type="str", required=True),
    readonly=dict(type="bool", default=False),
    type=dict(type="str", choices=["bind", "tmpfs"], default="bind"),
)


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            COMMON_ARGS,
            name=dict(type="str", required=True),
            state=dict(type="str", default="started", choices=list(_container.STATES)),
            template=dict(type="str"),
            command=dict(type="raw"),
            hostname=dict(type="str"),
            env=dict(type="dict"),
            mounts=dict(type="list", elements="dict", options=MOUNT_OPTIONS),
            capabilities=dict(type="dict", options=dict(add=dict(type="list", elements="str"),
                                                        drop=dict(type="list", elements="str"))),
            limits=dict(type="dict"),
            network=dict(type="list", elements="dict"),
            autostart=dict(type="bool"),
            runtime=dict(type="str", choices=["runc", "crun"]),
            runtime_path=dict(type="path"),
            recreate=dict(type="bool", default=False),
            stop_timeout=dict(type="int", default=10),
        ),
        supports_check_mode=True,
    )
    run(module, _container.ensure, module.params, module.check_mode)


if __name__ == "__main__":
    main()
