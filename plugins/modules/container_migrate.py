#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: container_migrate
short_description: Move a running container to another host with CRIU
version_added: 0.1.0
description:
  - Runs on the source host and moves running container O(name) to O(dest), another host reachable
    from the source over SSH with the host-to-host key (C(<root>/ssh/config) and C(<root>/ssh/id_ed25519)
    when present). The destination needs Python, the runtime, a CRIU that passes C(criu check) and
    pyroute2; the source ships the collection's library to it for the duration of the move.
  - "Sequence: preflight on the destination (template sha256, runtime and CRIU, free memory, disk and cpus,
    name and IP addresses free) -> rsync of the rootfs upper layer while the container runs -> freeze and
    dump -> rsync of the delta and the images -> restore on the destination (same IP and MAC) -> verify it
    runs there -> only then remove it from the source. The frozen window holds no Ansible round trip."
  - Modes - V(cold) stop-and-copy; V(live) pre-copy - while the container runs, rounds of CRIU pre-dumps
    (C(runc checkpoint --pre-dump), each round only the pages dirtied since the one before) stream to the
    destination until O(precopy) says stop, then the final dump in the frozen window holds only what changed
    since the last round. It needs dirty memory tracking (soft-dirty) in the kernels of both hosts (C(pre_dump)
    in their CRIU facts) and otherwise falls back to V(cold) (the result says so in RV(fallback));
    V(lazy) post-copy - the container
    is restored at once and its memory pages are pulled on demand from the source's CRIU page server
    through an SSH port forward (falls back to V(cold) when either host cannot do it).
  - Whatever fails before the destination took over, the container ends up running on the source
    (resumed, or restored from the local images when the dump had stopped it), and the destination removes
    what it had restored.
  - A rerun after the move converges - when the container does not run here but runs on O(dest) (and is not an
    unfinished incoming copy there), nothing is done and the result says RV(already_moved=true) with RV(where).
    Only then is the destination asked before the move, in one SSH call.
  - Two moves of one container at once (two controllers, two tasks) - each move holds the container's lock
    on the source (C(<run dir>/locks/<name>.lock), which names its holder) from before these checks to its end,
    so the container moves once. The other waits for the lock (up to 60 s, else it fails naming the holder),
    then reports C(changed=false) when the container went to the same O(dest), or fails with C(name) named,
    saying where the container went and which task moved it (RV(where) is that host).
  - A move can take minutes. Run it with C(async) and C(poll) (the task prints nothing until it ends) or
    C(async), C(poll=0) and M(ansible.builtin.async_status) to follow several moves at once; the result is the
    same as in the foreground.
author:
  - ctrhost.fleet maintainers (@ctrhost)
requirements:
  - Python 3 with pyroute2 on the source and the destination
  - runc or crun and a CRIU that passes C(criu check) on both
  - rsync and ssh on both
options:
  name:
    description: Container name.
    type: str
    required: true
  dest:
    description: Destination host (name or address as SSH reaches it from the source).
    type: str
    required: true
  mode:
    description: Migration mode.
    type: str
    choices: [cold, live, lazy]
    default: cold
extends_documentation_fragment:
  - ctrhost.fleet.common
  - ctrhost.fleet.common.CRIU
  - ctrhost.fleet.common.CRIU_TOOLS
  - ctrhost.fleet.common.MIGRATE_SSH
  - ctrhost.fleet.common.PRECOPY
  - ctrhost.fleet.attributes
  - ctrhost.fleet.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
    details: Connects to the destination and runs the preflight only; reports the mode that would be used.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - A container already running on O(dest) and not here is reported with C(changed=false); a container that
        is neither here nor there fails with C(name) named.
  async:
    support: full
    description: Supports being used with the C(async) keyword.
seealso:
  - module: ctrhost.fleet.container_checkpoint
  - module: ctrhost.fleet.container_restore
"""

EXAMPLES = r"""
- name: Move web1 to host2 with post-copy memory transfer
  ctrhost.fleet.container_migrate:
    name: web1
    dest: host2
    mode: lazy
    tcp_established: true

- name: Move db1 live (pre-copy), at most 8 rounds, frozen once at most 4 MiB are dirty
  ctrhost.fleet.container_migrate:
    name: db1
    dest: host2
    mode: live
    precopy:
      max_iterations: 8
      dirty_threshold: 4M

- name: What would happen (preflight only)
  ctrhost.fleet.container_migrate:
    name: web1
    dest: host2
  check_mode: true

- name: Several moves at once, in the background
  ctrhost.fleet.container_migrate:
    name: "{{ item }}"
    dest: host2
  loop: [web1, web2, db1]
  async: 900
  poll: 0
  register: moves

- name: Wait for every move, one line per container
  ansible.builtin.async_status:
    jid: "{{ item.ansible_job_id }}"
  loop: "{{ moves.results }}"
  loop_control:
    label: "{{ item.item }}"
  register: moved
  until: moved.finished
  retries: 900
  delay: 1
"""

RETURN = r"""
name:
  description: Container name.
  returned: always
  type: str
  sample: web1
dest:
  description: The destination as given.
  returned: always
  type: str
  sample: host2
mode:
  description: Mode used.
  returned: always
  type: str
  sample: cold
mode_requested:
  description: Mode asked for.
  returned: always
  type: str
  sample: live
fallback:
  description: Why the mode used differs from the one asked for (null when it does not).
  returned: always
  type: str
  sample: "live (pre-copy) is impossible here: no soft-dirty tracking; used cold (stop-and-copy)"
downtime:
  description: Seconds from the freeze on the source to the container running on the destination (measured).
  returned: success
  type: float
  sample: 1.42
total_time:
  description: Seconds the whole move took.
  returned: always
  type: float
  sample: 4.87
bytes_moved:
  description: Bytes rsync sent (rootfs and images; lazy pages travel through the page server).
  returned: always
  type: int
  sample: 41943040
stats:
  description: CRIU's statistics - C(dump) (frozen_time, memdump_time, pages_written, pages_lazy, ...; in live
    mode those of the final dump, so C(pages_written) is the delta after the last round), C(restore) and for
    lazy mode C(lazy_pages).
  returned: success
  type: dict
  sample: {dump: {frozen_time: 210000, memdump_time: 90000, pages_written: 8300}, restore: {restore_time: 300000}}
iterations:
  description:
    - Live mode, each pre-dump round while the container ran - C(iteration), C(pages_written) and C(bytes_dirty)
      (the pages dirtied since the round before; the first round holds all), C(bytes_sent) to the destination,
      C(frozen_time) (seconds CRIU held it frozen to collect the pages), C(dump_seconds), C(transfer_seconds)
      and C(seconds). Empty in the other modes.
  returned: always
  type: list
  elements: dict
  sample: [{iteration: 1, pages_written: 17000, bytes_dirty: 69632000, bytes_sent: 69700000, frozen_time: 0.21,
            dump_seconds: 1.1, transfer_seconds: 0.7, seconds: 1.8}]
precopy:
  description: Live mode, why the rounds stopped (C(stop) - converged, not_shrinking or max_iterations - and C(why)),
    after how many (C(iterations)), and the policy in force; null in the other modes.
  returned: always
  type: dict
  sample: {iterations: 3, stop: converged, why: "409600 bytes dirty, at most the threshold of 2097152",
           policy: {max_iterations: 5, dirty_threshold: 2097152, min_progress: 10}}
where:
  description: Host the container runs on at the end.
  returned: always
  type: str
  sample: host2
pid:
  description: Pid of the container's init on the destination (in the destination's pid namespace).
  returned: success
  type: int
  sample: 48211
already_moved:
  description: The container already ran on O(dest) and not here; nothing was done.
  returned: when the container was already on the destination
  type: bool
  sample: true
source_leftover:
  description: With RV(already_moved), whether a stopped copy of the container is still declared here.
  returned: when the container was already on the destination
  type: bool
  sample: false
state:
  description: With RV(already_moved), the state of the container on the destination.
  returned: when the container was already on the destination
  type: str
  sample: running
preflight:
  description: The destination's preflight answer (ok, problems, facts); null when nothing was asked.
  returned: always
  type: dict
  sample: {ok: true, problems: [], facts: {lazy_pages: true, pre_dump: false, memory_available: 8589934592}}
steps:
  description: Steps with their time since the start, in seconds.
  returned: always
  type: list
  elements: dict
  sample: [{step: preflight, t: 0.41}, {step: staged, t: 0.52}, {step: restored, t: 3.9}]
timings:
  description: Seconds each step took.
  returned: always
  type: dict
  sample: {preflight: 0.41, staged: 0.11, restored: 3.38}
dest_timings:
  description: Seconds the destination's own steps took, as it reported them.
  returned: success
  type: dict
  sample: {restore: 0.8}
rootfs_delta:
  description: What of the rootfs changed after the pre-sync and travelled in the frozen window.
  returned: success
  type: dict
  sample: {files: 3, bytes: 12288}
fence:
  description: What the destination did with its copy after a failure (null when nothing failed).
  returned: always
  type: dict
  sample: null
kernel:
  description: Kernel release of the source.
  returned: always
  type: str
  sample: 6.1.0-28-amd64
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import source as _migrate
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import precopy as _migrate_precopy
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.module import (
    COMMON_ARGS,
    CRIU_ARGS,
    CRIU_TOOL_ARGS,
    MIGRATE_SSH_ARGS,
    argument_spec,
    run,
)


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            COMMON_ARGS, CRIU_ARGS, CRIU_TOOL_ARGS, MIGRATE_SSH_ARGS, _migrate_precopy.ARGS,
            name=dict(type="str", required=True),
            dest=dict(type="str", required=True),
            mode=dict(type="str", default="cold", choices=list(_migrate.MODES)),
        ),
        supports_check_mode=True,
    )
    run(module, _migrate.task, module.params, module.check_mode)


if __name__ == "__main__":
    main()
