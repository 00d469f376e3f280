# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  root:
    description:
      - Root of the collection's on-host layout (templates, containers, checkpoints, C(host.json)).
    type: path
    default: /var/lib/ctrhost
"""

    RUNTIME = r"""
options:
  runtime:
    description:
      - OCI runtime that runs the containers. C(crun) needs a cgroup layout it accepts (pure cgroup v2 for crun 1.8).
    type: str
    choices: [runc, crun]
    default: runc
  runtime_path:
    description:
      - Absolute path of the runtime binary; found on C(PATH) when omitted.
    type: path
"""

    # CRIU options shared by container_checkpoint and container_migrate.
    CRIU = r"""
options:
  tcp_established:
    description:
      - Dump established TCP connections (CRIU C(--tcp-established)) so that they survive; the restore repeats it.
    type: bool
    default: false
  file_locks:
    description:
      - Dump and restore file locks (CRIU C(--file-locks)).
      - Turned on by itself when a process of the container holds a lock at dump time.
    type: bool
    default: false
  ext_unix_sk:
    description: Allow unix sockets connected outside the container (CRIU C(--ext-unix-sk)).
    type: bool
    default: false
"""

    # Tool paths of the modules that run CRIU through the runtime.
    CRIU_TOOLS = r"""
options:
  criu_path:
    description: Absolute path of the CRIU binary; found on C(PATH) and in the sbin directories when omitted.
    type: path
  runtime_path:
    description: Absolute path of the container's runtime binary; found on C(PATH) when omitted.
    type: path
"""

    # How a migration reaches its destination (container_migrate, container_migrate_batch).
    # container_migrate and container_migrate_batch: the pre-copy policy of mode live.
    PRECOPY = r"""
options:
  precopy:
    description:
      - When V(live) pre-copy stops its rounds and does the final dump (ignored by the other modes).
      - A round stops the rounds when its dirty set is at most O(precopy.dirty_threshold), when it shrank by less
        than O(precopy.min_progress) percent against the round before, or when it is round
        O(precopy.max_iterations).
    type: dict
    default: {}
    suboptions:
      max_iterations:
        description: Most pre-dump rounds (1 to 100).
        type: int
        default: 5
      dirty_threshold:
        description: Dirty memory small enough to freeze for (a size such as V(2M) or a number of bytes).
        type: str
        default: 2M
      min_progress:
        description:
          - Percentage by which each round's dirty set must shrink against the one before for another round;
            V(0) turns this rule off (then only the threshold and O(precopy.max_iterations) stop the rounds).
        type: int
        default: 10
"""

    MIGRATE_SSH = r"""
options:
  dest_root:
    description: Layout root on the destination; the same as O(root) when omitted.
    type: path
  ssh_config:
    description: SSH client config; C(<root>/ssh/config) when omitted and present.
    type: path
  identity:
    description: SSH private key; C(<root>/ssh/id_ed25519) when omitted and present.
    type: path
  ssh_port:
    description: SSH port of the destination.
    type: int
  ssh_user:
    description: SSH user on the destination.
    type: str
  dest_python:
    description:
      - Python interpreter that runs the migration agent on the destination; it needs pyroute2.
      - When omitted, the interpreter this module runs under on the source (its
        C(ansible_python_interpreter)), at the same path on the destination.
    type: str
  timeout:
    description: Seconds any one step (dump, transfer, restore) may take before the move is abandoned.
    type: int
    default: 600
"""
