# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CRIU configuration files runc hands to CRIU.

* ``write_config(run_dir, criu_path)``: ``<run_dir>/criu/runc.conf``, the file
  every config.json names in its ``org.criu.config`` annotation. It holds
  ``network-lock nftables`` when this CRIU can lock the network with nftables
  (one ruleset instead of many iptables runs) and is 4.2 or newer: 3.17
  (Debian 12's) and 4.1.1 (Debian 13's) report the feature but crash (SIGSEGV,
  nothing in their log) on a ``network-lock`` line of a configuration file read
  through runc. Absent otherwise (CRIU's iptables default).

The network lock stays on for every dump, also of a container that has only its own
network namespace (CRIU 4.2 would take ``network-lock skip``). It is what keeps the
peers of connections dumped with ``tcp_established`` from seeing resets while their
sockets are in repair mode and after the source is gone, and what keeps connection
requests out of a listening socket while it is dumped: CRIU refuses to dump one with a
connection waiting in its accept queue ("In-flight connection"), so without the lock a
server under traffic would fail its dumps. Measured, it costs 1.5-2 ms of a dump (one
nftables ruleset and one runtime notification): nothing worth trading those for. A
migration also takes the source's host-side veths down at the freeze.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import sysinfo as _sysinfo
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.atomic import atomic_write
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import RUN_DIR
from ansible_collections.ctrhost.fleet.plugins.module_utils.criu.tool import Criu
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.probecache import cache_dir_of

CONFIG_LEAF = os.path.join("criu", "runc.conf")
NFT_LINE = "network-lock nftables\n"
SCAN_PREFIX = "irmap-scan-path "


def config_path(run_dir=None):
    return os.path.join(run_dir or RUN_DIR, CONFIG_LEAF)


def container_config_path(run_dir, name):
    return os.path.join(run_dir or RUN_DIR, "criu", "%s.conf" % name)


def write_restore_config(run_dir, criu_path, name, cgroups_path):
    """The CRIU configuration of a restored container (its config.json names this file
    from then on, for its next dumps too): the host's lines plus, on a pure cgroup v2
    host, ``cgroup-root`` with the container's cgroup here. runc hands CRIU the new
    cgroup root on cgroup v1 only; on v2 CRIU would otherwise put the processes back
    into the cgroup path they had on the source host, outside what runc manages."""
    text = write_config(run_dir, criu_path) or ""
    if cgroups_path and _sysinfo.cgroup_layout()["mode"] == "v2":
        text += "cgroup-root %s\n" % cgroups_path
    path = container_config_path(run_dir, name)
    atomic_write(path, text, mode=0o644, parents=True)
    return path


def refresh_container_config(run_dir, name, host_text):
    """After ``write_config``: a restored container's own file (when it has one) gets the
    host's new lines and keeps its ``cgroup-root``, so its next dump sees both."""
    path = container_config_path(run_dir, name)
    try:
        with open(path) as handle:
            own = [line for line in handle if line.startswith("cgroup-root ")]
    except FileNotFoundError:
        return None
    text = (host_text or "") + "".join(own)
    atomic_write(path, text, mode=0o644, parents=True)
    return text


def remove_container_config(run_dir, name):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(container_config_path(run_dir, name))


def write_config(run_dir, criu_path, scan_paths=()):
    """Write (or remove) ``<run_dir>/criu/runc.conf`` for this CRIU; returns its text or None.

    ``scan_paths``: directories (inside the containers) CRIU's inode map must search
    for the watches of inotify handles it cannot open (``irmap-scan-path``), e.g. those
    on an overlayfs rootfs. Kept once written, so that concurrent dumps of different
    containers never drop each other's (a path no container has costs nothing)."""
    path = config_path(run_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lock = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the directory itself: no lock file left behind
        try:
            with open(path) as handle:
                current = handle.read()
        except OSError:
            current = None
        kept = [line for line in (current or "").splitlines(True)
                if line.startswith(SCAN_PREFIX)]
        for scan in sorted(set(scan_paths)):
            line = "%s%s\n" % (SCAN_PREFIX, scan)
            if "\n" not in scan and line not in kept:
                kept.append(line)
        nft = NFT_LINE if Criu(criu_path, cache_dir_of(run_dir)).nft_lock_usable() else ""
        wanted = (nft + "".join(kept)) or None
        if current == wanted:
            return wanted
        if wanted is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        else:
            atomic_write(path, wanted, mode=0o644, parents=True)
    finally:
        os.close(lock)
    return wanted


def remove_lock_tables(netns_path):
    """Delete CRIU's network-lock tables (``inet CRIU-*``, policy drop) from the network
    namespace at ``netns_path``: a dump that left the container running, or a restore
    that failed, must not leave it cut off. Returns the tables removed."""
    if not os.path.exists(netns_path):
        return []
    nft = _cli.which("nft")
    if not nft:
        return []
    enter = [_cli.which("nsenter") or "nsenter", "--net=" + netns_path, "--"]
    listed = _cli.run(enter + [nft, "list", "tables"], check=False, timeout=30)
    removed = []
    for line in listed.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "table" and parts[2].startswith("CRIU"):
            done = _cli.run(enter + [nft, "delete", "table", parts[1], parts[2]], check=False,
                            timeout=30)
            if done.rc == 0:
                removed.append("%s %s" % (parts[1], parts[2]))
    return removed
