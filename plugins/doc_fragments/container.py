# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options of one container, documented once.

``ctrhost.fleet.container`` uses them as its options (``DOCUMENTATION``);
``ctrhost.fleet.containers`` as the suboptions of each item of ``containers``
(``BATCH``). The argument spec they describe is
plugins/module_utils/container/args.py (CONTAINER_OPTIONS).
"""

from __future__ import annotations

import re
import textwrap

_CONTAINER_OPTIONS = r"""
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
init:
  description:
    - System-container mode, for a full OS userland whose init (systemd) runs as PID 1.
    - C(systemd) switches it on, C(none) off; C(auto) switches it on when O(command) is a known
      init (C(/sbin/init), C(/lib/systemd/systemd), C(/usr/lib/systemd/systemd)).
    - In this mode the container gets tmpfs on C(/run), C(/run/lock) and C(/tmp), its own
      cgroup subtree writable through its cgroup namespace, a pseudo-terminal as console (boot
      output reaches C(console.log)), its O(hostname) written to C(/etc/hostname), and
      SIGRTMIN+3 (systemd's halt request) as the stop signal. No capability is added; the
      seccomp profile answers C(mount), C(unshare) and C(bpf) with EPERM, which systemd takes as
      "sandboxing unavailable" and skips.
    - On cgroup v1 and hybrid hosts the controller hierarchies stay read-only inside and only
      the container's C(name=systemd) directory is writable (systemd's legacy mode); on v2 the
      unified hierarchy is writable and C(nsdelegate) keeps the container's own limits out of
      its reach.
    - Changing it needs O(recreate=true).
    - Default - C(auto).
  type: str
  choices: [auto, systemd, none]
hostname:
  description:
    - Host name inside the container (uts namespace). Default - the container name.
  type: str
env:
  description:
    - Environment of the init process, added to C(PATH), C(HOME), C(TERM) and C(container=ctrhost).
  type: dict
secret_env:
  description:
    - Environment variables whose values are secret (passwords, tokens), added like O(env);
      a name may not be in both.
    - The values never appear in results, diffs or logs (the option is C(no_log); diffs and
      M(ctrhost.fleet.container_info) show each name with C(********), or C(******** (changed))
      for a value that changed). On the host they are in files only root can read (the
      container's directory is 0700, C(spec.json) and C(config.json) 0600, checkpoint images
      0600 in 0700 directories).
    - Changing them needs O(recreate=true), like O(env).
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
privileged:
  description:
    - V(false) runs the container in a user namespace - root inside is the first id of the host's
      subordinate range of root (C(/etc/subuid), C(/etc/subgid); the C(ctrhost.fleet.host) role writes
      C(root:1000000000:65536), the same range on every host of a fleet), ids 0-65535 inside map to the
      first 65536 ids of that range. Root inside cannot mount filesystems of the host, load modules or
      reach host devices, and a file it creates belongs to the mapped uid on the host. The template's
      files appear owned by the mapped ids (its tree is shifted once per host into the range; containers
      never copy it). The container's own network namespace belongs to its user namespace (root inside
      may configure its interfaces).
    - V(true) runs it as before, with the host's ids (root inside is root of the host, with the default
      capability set).
    - Left out, a new container is unprivileged (V(false)); an existing one keeps its stored value, and a
      container created before this option existed stays privileged.
    - An unprivileged container's user namespace gets caps of its own on what the kernel counts per user
      namespace (1024 inotify instances, 131072 inotify watches, 128 fanotify groups, 1024 of each kind of
      namespace; its C(/proc/sys/user/*)), set at each start and restore, so that one container cannot take
      those of the others or of the host's root. Its start is refused, naming the limit, when the key quota
      of its root (C(kernel.keys.maxkeys), C(kernel.keys.maxbytes)) is full.
    - An unprivileged container checkpoints, restores and migrates in every mode. Its network namespace
      is made by the runtime at each start and restore and exists while it runs. A lazy move needs
      C(vm.unprivileged_userfaultfd=1) on the destination; without it the move is made cold and the
      result's C(fallback) says why.
    - Changing it needs O(recreate=true); the container's own files (its upper layer) are moved into (out
      of) the range and its network namespace is made again with the same interfaces.
  type: bool
idmap_isolated:
  description:
    - V(true) gives an unprivileged container (O(privileged=false)) an id range of its own, like Incus's
      C(security.idmap.isolated) - no other container of the host shares a host uid or gid with it, so the
      kernel's per-uid key quota (C(kernel.keys.maxkeys)) is its own and, should root inside ever escape, it
      owns none of another container's files.
    - The range (65536 ids) is cut from a second range of root in C(/etc/subuid) and C(/etc/subgid) (the
      C(ctrhost.fleet.host) role writes C(root:1100000000:1073741824), 16384 ranges, the same on every host),
      chosen from the container's name (the same on every host) or, when another container of this host
      holds that one, the next free one. It is kept (C(idmap) with C(isolated) in the result) and goes with
      the container when it moves; a destination where another container holds it refuses the move in its
      preflight, naming that container.
    - The template's tree is shifted for the container alone (a copy of the template per container, removed
      with it), so that creating one costs the template's size in disk and time.
    - V(false) (the default, and what a container created before this option keeps) maps it into the fleet's
      shared range. Changing it needs O(recreate=true); the container's own files are moved into the new range.
  type: bool
limits:
  description:
    - Resource limits, applied live to a running container through the runtime's C(update) and
      verified against the cgroup files. Human units are accepted (V(512M), V(1G)); values are
      normalised before comparison (V(1G) equals V(1024M)). A key not given has no limit.
    - Lowering O(limits.memory) below the current usage steps down or fails stating usage and the request;
      it never kills the workload silently.
  type: dict
  suboptions:
    cpus:
      description: CPU time as a number of cpus (V(1.5)), a CFS quota over a 100000 us period, at most the host's cpus.
      type: raw
    cpu_weight:
      description: Relative cpu weight, 1-10000 (cgroup v2 C(cpu.weight); C(cpu.shares) on v1).
      type: int
    cpuset_cpus:
      description: Cpus the container may run on, such as V(0-1,3).
      type: str
    cpuset_mems:
      description: Memory nodes the container may use, such as V(0).
      type: str
    memory:
      description: Memory limit, at least V(4M) (V(256M), V(1G), a number of bytes).
      type: raw
    memory_swap:
      description: Memory plus swap (as in OCI), at least O(limits.memory); V(-1) or V(unlimited) for no limit.
      type: raw
    memory_reservation:
      description: Soft memory limit, at most O(limits.memory).
      type: raw
    pids:
      description: Maximum number of tasks, 1-4194304.
      type: int
    io_weight:
      description: Relative block io weight, 10-1000 (needs the blkio weight file, BFQ on cgroup v1).
      type: int
    io_read_bps:
      description:
        - Read throttles, a list of C({device, rate}) where C(device) is a block device path or C(MAJ:MIN) and
          C(rate) a size per second (V(10M)); a mapping of device to rate is accepted too.
      type: raw
    io_write_bps:
      description: Write throttles, in the form of O(limits.io_read_bps).
      type: raw
    disk:
      description:
        - Disk space for the container's own files, in its directory C(<root>/containers/<name>), which
          holds the overlay's upper and work directories where everything it writes lands. At least V(1M),
          rounded up to whole KiB (V(10G)). A write past it fails
          inside the container with C(EDQUOT) ("Disk quota exceeded"); the container keeps running.
        - Enforced by a project quota on the filesystem holding that directory (ext4 with the C(quota,project)
          features or XFS, mounted with C(prjquota)); refused with the reason where that filesystem cannot
          (M(ctrhost.fleet.host_info) reports it as C(limits.disk)). Raised or lowered live; lowering it below
          what the container already uses is refused, naming the usage. It follows the container through
          checkpoint, restore and migration.
      type: raw
network:
  description:
    - Interfaces of the container, each a veth pair whose host side joins the O(network[].bridge) of the
      interface. Changes apply live.
    - An address another container of the host holds, or that answers a duplicate address probe on
      the bridge (ARP for IPv4, neighbour solicitation for IPv6), is refused naming the field and the
      holder; nothing is created or changed.
  type: list
  elements: dict
  suboptions:
    ifname:
      description: Interface name inside the container. Default - C(eth<N>), N its position in the list from 0.
      type: str
    bridge:
      description: Host bridge the host side of the veth joins (see M(ctrhost.fleet.host_network)).
      type: str
      required: true
    ipv4:
      description: IPv4 address with its prefix (V(10.0.0.5/24)).
      type: str
    gateway:
      description: IPv4 default gateway, inside the subnet of O(network[].ipv4).
      type: str
    ipv6:
      description: IPv6 address with its prefix (not link-local; the kernel makes that one).
      type: str
    gateway6:
      description: IPv6 default gateway.
      type: str
    mac:
      description: MAC address; kept stable across restarts and migration. Generated when omitted.
      type: str
    mtu:
      description: MTU of both ends of the veth (68-65535); the bridge's when omitted.
      type: int
    rate:
      description: Rate limit of the interface in both directions, as V(100mbit) or a number of bits per second.
      type: raw
    filtering:
      description:
        - Anti-spoofing on the host-side port (nftables, bridge family), default V(true). Frames from another
          MAC, IPv4/ARP from another address than O(network[].ipv4), IPv6/neighbour advertisements from another
          address than O(network[].ipv6) or the link-local of O(network[].mac), router advertisements and other
          ether types (VLAN tags) are dropped before the bridge. V(false) opts the interface out.
        - Needs the nftables Python binding (C(python3-nftables)) on the host.
      type: bool
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
"""

# In the batch module an option of a container is O(containers[].x), not O(x).
_NESTED = re.sub(r"O\((?=[a-z])", "O(containers[].", _CONTAINER_OPTIONS)


class ModuleDocFragment(object):
    DOCUMENTATION = "options:\n" + textwrap.indent(_CONTAINER_OPTIONS.strip("\n"), "  ") + "\n"

    BATCH = r"""
options:
  containers:
    description:
      - The containers of this host, each with exactly the options of M(ctrhost.fleet.container)
        (without O(root), which is common to all).
      - Names must be unique within the list.
    type: list
    elements: dict
    required: true
    suboptions:
""" + textwrap.indent(_NESTED.strip("\n"), "      ") + "\n"
