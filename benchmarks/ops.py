# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rows of the benchmark table: key, label, unit and target, and the notes beside them."""

from __future__ import annotations

import ckphases


def r(peer, limit):
    return dict(kind="ratio", peer=peer, max=limit)


def a(limit, unit="s"):
    return dict(kind="abs", side="ours", max=limit, unit=unit)


# key, label, unit, target
OPS = (
    ("create_start", "create+start (library call)", "s", r("podman", 0.5)),
    ("create_start_proc", "create+start (fresh Python process)", "s", r("podman", 0.5)),
    ("stop", "stop", "s", None),
    ("checkpoint_idle", "checkpoint to disk, idle", "s", r("podman", 0.5)),
) + ckphases.ops("idle") + (
    ("restore_idle", "restore from disk, idle", "s", r("podman", 0.7)),
    ("checkpoint_mem", "checkpoint to disk, 256 MB", "s", r("podman", 0.5)),
) + ckphases.ops("mem") + (
    ("restore_mem", "restore from disk, 256 MB", "s", r("podman", 0.7)),
    ("migrate_cold_downtime", "migration 256 MB, cold: downtime", "s", a(1.5)),
    ("migrate_cold_total", "migration 256 MB, cold: total", "s", None),
    ("migrate_live_downtime", "migration 256 MB, live: downtime", "s", a(1.5)),
    ("migrate_live_total", "migration 256 MB, live: total", "s", None),
    ("migrate_lazy_downtime", "migration 256 MB, lazy: downtime", "s", a(0.5)),
    ("migrate_lazy_total", "migration 256 MB, lazy: total", "s", None),
    ("density_wall", "density: start 100 idle containers", "s", None),
    ("density_host_mem", "density: host memory for 100 (MemAvailable drop)", "MiB", None),
    ("density_accounted", "density: cgroups + monitors of 100", "MiB", None),
    ("converge_first", "ansible-playbook, 50 containers: first run", "s", None),
    ("converge_second", "ansible-playbook, 50 containers: idempotent run", "s", a(15)),
    ("converge_batch_first", "converge (batch module), 50 containers: first run", "s", None),
    ("converge_batch_second", "converge (batch module), 50 containers: idempotent run", "s",
     a(15)),
    ("fleet_evacuate_wall", "evacuate.yml, 20 containers onto 2 hosts: playbook", "s", None),
    ("fleet_evacuate_batch", "evacuate.yml, 20 containers: the moves (one task)", "s", a(15)),
    ("fleet_evacuate_downtime", "evacuate.yml, 20 containers: worst downtime", "s", a(1)),
    ("fleet_rebalance_wall", "rebalance.yml, skewed 3-host lab: playbook", "s", None),
    ("fleet_rebalance_moves", "rebalance.yml, skewed 3-host lab: moves (two are the fewest)", "moves", None),
    ("fleet_rebalance_second", "rebalance.yml, balanced: second run (changed=0)", "s", None),
    ("vm_migrate_cold_downtime", "VM tier, 256 MB dirtying 1.25 MB/s, cold: downtime", "s", None),
    ("vm_migrate_cold_total", "VM tier, 256 MB dirtying 1.25 MB/s, cold: total", "s", None),
    ("vm_migrate_lazy_downtime", "VM tier, 256 MB dirtying 1.25 MB/s, lazy: downtime", "s", None),
    ("vm_migrate_lazy_total", "VM tier, 256 MB dirtying 1.25 MB/s, lazy: total", "s", None),
    ("vm_migrate_live_downtime", "VM tier, 256 MB dirtying 1.25 MB/s, live (pre-copy): downtime", "s", None),
    ("vm_migrate_live_total", "VM tier, 256 MB dirtying 1.25 MB/s, live (pre-copy): total", "s", None),
)
NOTES = dict(ckphases.NOTES, **{
    "create_start_proc": "ours: `python -c` importing the library and converging one container "
                         "(what a module pays besides Ansible); peers: the same CLI runs as above",
    "migrate_cold_downtime": "Podman: `container checkpoint --export`, scp, `container restore "
                             "--import` on the destination (its only way); downtime = the three",
    "density_host_mem": "machine-wide MemAvailable drop: noisy while other work runs",
    "density_accounted": "sum of the containers' memory cgroups plus the RSS of per-container "
                         "monitors (conmon, lxc monitor; ours has none)",
    "converge_second": "ctrhost.fleet.container in a loop over 50 items, over SSH to one lab "
                       "host; Podman column empty: no Podman Ansible content installed here",
    "converge_batch_second": "ctrhost.fleet.containers: the same 50 containers in one task "
                             "(one module run), over SSH to the same lab host",
    "fleet_evacuate_batch": "idle busybox, 32M memory limit each, cold, lab hosts 1 -> 2 and 3 "
                            "(benchmarks/fleet.py); ours only",
    "fleet_rebalance_moves": "host 1 at 21% memory / 75% cpu, thresholds 15% / 50%, host 3 cordoned "
                             "is not used",
    "vm_migrate_cold_downtime": "two Debian 12 VMs under QEMU (TCG here: an emulated CPU), provisioned by "
                                "the host role (benchmarks/vmtier.py); ours only",
    "vm_migrate_live_downtime": "pre-copy rounds while it runs, then only the delta frozen",
})
