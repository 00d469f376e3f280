# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore a container from CRIU images, on the host that dumped it or another one.

``restore_images`` is the one code path (used by ``container_restore`` and by
the migration agent on the destination): check the template by checksum,
recreate the overlay rootfs (from ``rootfs-diff.tar`` when the upper layer is
not here), the netns and veths with the same IP and MAC, write config.json
(this host's cgroups path, the spec's limits), ``runtime restore``, and verify
that the container runs. On failure everything this call created is removed
and CommandError carries CRIU's classified cause and log lines.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time

from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import store as _ckstore
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import oci as _ocifile
from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import dump as _checkpoint
from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.criu import reports as _criu
from ansible_collections.ctrhost.fleet.plugins.module_utils.criu import config as _criuconf
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import idmap as _idmap
from ansible_collections.ctrhost.fleet.plugins.module_utils.limits import records as _limits
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import netns as _netns
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import procfs as _procfs
from ansible_collections.ctrhost.fleet.plugins.module_utils.criu.tool import criu_for
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.steps import network_attach, network_birth, network_detach
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import (
    CommandError,
    CtrhostError,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint.restore_config import (
    check_template,
    recreate_cgroups,
    restore_command,
    restore_config,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime.driver import runtime_for
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.store import ContainerStore, private_dir
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.rootfs import Overlay, is_mounted
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.validate import validate_name

LOG_FILE = "console.log"


def work_dir(layout, name, kind="restore"):
    return os.path.join(layout.run_dir, "criu", "%s.%s" % (name, kind))


def keep_log(layout, name, work, leaf):
    """Copy CRIU's ``leaf`` log out of ``work`` (about to be removed) next to the
    container's checkpoints as ``last-<leaf>``; return its path (None when absent)."""
    src = os.path.join(work, leaf)
    if not os.path.exists(src):
        return None
    os.makedirs(layout.checkpoint_dir(name), mode=0o700, exist_ok=True)
    dest = layout.checkpoint_dir(name, "last-" + leaf)
    shutil.copy2(src, dest)
    return dest


def cleanup_work(path):
    """Unmount what a killed CRIU left in its work dir, then remove the dir."""
    if not os.path.isdir(path):
        return
    for point in _procfs.mounts_below(path):
        if point != os.path.realpath(path):
            _cli.run(["umount", "-l", point], check=False)
    shutil.rmtree(path, ignore_errors=True)


def forget_runtime(rt, name, cgroups_path=None):
    """Kill and delete whatever the runtime holds under ``name``."""
    st = rt.state(name)
    if st is None:
        return
    if cgroups_path:
        _checkpoint.thaw(cgroups_path)
    with contextlib.suppress(CtrhostError):
        rt.kill(name, "KILL", all_processes=True)
    with contextlib.suppress(CtrhostError):
        rt.delete(name, force=True)
    leftover = os.path.join(rt.state_root, name)
    if os.path.isdir(leftover) and not any(is_mounted(os.path.join(leftover, e))
                                           for e in os.listdir(leftover)):
        shutil.rmtree(leftover, ignore_errors=True)


def remove_created(layout, name, spec, overlay):
    """Undo a restore that created the container on this host."""
    with contextlib.suppress(CtrhostError, OSError):
        overlay.umount()
    with contextlib.suppress(CtrhostError, OSError):
        _drop_network(name, spec)
    bundle = layout.container_dir(name)
    if os.path.isdir(bundle) and not overlay.is_mounted():
        with contextlib.suppress(CtrhostError, OSError):
            _limits.release(bundle)
        shutil.rmtree(bundle, ignore_errors=True)


def stage(layout, name, meta, image_dir, created=None, incoming=None):
    """Everything a restore needs but the rootfs mount: the upper layer (from
    ``rootfs-diff.tar`` when absent), netns, network, config.json and spec.json.
    Returns (spec, created). A migration stages before the source freezes.

    ``created``: whether the container is new on this host (so a failure removes it);
    found out from its directory when None.

    ``incoming`` (a migration): a dict saved as spec.json's ``incoming`` marker (who
    stages it, since when) until ``clear_incoming``; the host-side veths stay down so
    that the staged copy neither answers for the container's addresses nor shows its
    MAC on the bridge before it takes over (``links_up``)."""
    check_template(layout, meta)
    store = ContainerStore(layout)
    if created is None:
        created = not os.path.isdir(layout.container_dir(name))
    spec = dict(meta["spec"], cgroups_path=_ocifile.cgroups_path(name))
    overlay = Overlay(layout, name, spec["template"], idmap=_idmap.of(spec))
    marked = dict(spec, incoming=dict(incoming, created=created)) if incoming is not None else None
    try:
        idmap = _idmap.of(spec)
        private_dir(layout.container_dir(name), (idmap or {}).get("gid"))
        if marked and created:  # an agent killed from here on leaves a staging known as one
            store.save(name, marked)
        tar = os.path.join(image_dir, _checkpoint.ROOTFS_TAR)
        if not os.path.isdir(overlay.upper) and os.path.exists(tar):
            os.makedirs(overlay.upper, mode=0o755)
            _cli.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls",
                      "-C", overlay.upper, "-xf", tar], msg="unpack the rootfs changes",
                     timeout=3600)
        if idmap:  # the runtime makes its netns at the restore (_nethook): leftovers go
            _drop_network(name, spec)
            _idmap.ensure_shifted(overlay.template_rootfs, idmap)  # not in a frozen window
        else:
            network_attach(name, _netns.ensure(name), spec.get("network"), incoming is not None)
        _limits.persist(layout.container_dir(name), spec.get("limits") or {},
                        config=restore_config(layout, name, spec, image_dir))
        store.save(name, marked or spec)
    except BaseException:
        if created:
            remove_created(layout, name, spec, overlay)
        raise
    return spec, created


def _drop_network(name, spec):
    with contextlib.suppress(Exception):
        network_detach(name, spec.get("network"))
    _netns.remove(name)


def _birth(layout, name, spec):
    """An unprivileged container's netns, made by CRIU, gets its interfaces at CRIU's
    ``setup-namespaces`` step (``_nethook``)."""
    if not _idmap.of(spec):
        return contextlib.nullcontext()
    return network_birth(name, spec.get("network"),
                         incoming="incoming" in (ContainerStore(layout).load(name) or {}))


class HostLinks:
    """The host-side veths of a container, looked up ahead (netlink socket open,
    indexes known) so that switching them inside the frozen window is one message
    per link. A veth not there yet (an unprivileged container's, made during its
    restore: ``_nethook``) is looked up when it is switched."""

    def __init__(self, interfaces, netns=None):
        from ansible_collections.ctrhost.fleet.plugins.module_utils.net import links as _netlink
        self.ipr = _netlink.ipr()
        self.netns = netns  # the container's netns (path): its pending neighbours kicked
        self.ns = None  # a netlink socket there, opened ahead when the netns exists
        if netns and os.path.exists(netns):
            with contextlib.suppress(Exception):
                self.ns = _netlink.ipr(netns)
        self.interfaces = list(interfaces or [])
        self.names = [iface["host_veth"] for iface in self.interfaces]
        self.indexes = {n: _netlink.lookup(self.ipr, n) for n in self.names}
        from ansible_collections.ctrhost.fleet.plugins.module_utils.net import fleet as _fleet
        self.routed = _fleet.routed_bridges(self.ipr)  # routed fleet bridges (read ahead)
        self.tunnels = _fleet.overlay_tunnels(self.ipr)  # overlay bridges' VXLAN devices

    def set(self, state):
        """Down: the container's addresses withdrawn from a routed fleet bridge first
        (``_fleet``), then the veths down. Up: the veths up, then its addresses published
        and announced: so one host at a time answers for them."""
        from ansible_collections.ctrhost.fleet.plugins.module_utils.net import fleet as _fleet
        from ansible_collections.ctrhost.fleet.plugins.module_utils.net import links as _netlink
        if state == "down":
            _fleet.withdraw(self.ipr, self.interfaces, routed=self.routed)
        for name in self.names:
            index = self.indexes[name] or _netlink.lookup(self.ipr, name)
            if index:
                self.ipr.link("set", index=index, state=state)
        if state == "up":
            with contextlib.suppress(Exception):
                _netlink.kick_neighbours(self.netns, self.ns)
            _fleet.publish(self.ipr, self.interfaces, routed=self.routed)
            _fleet.announce(self.interfaces, self.tunnels)

    def close(self):
        self.ipr.close()
        if self.ns is not None:
            self.ns.close()


def _host_links(interfaces, state, links=None):
    if not interfaces:
        return
    own = links is None
    links = links or HostLinks(interfaces)
    try:
        links.set(state)
    finally:
        if own:
            links.close()


def links_down(interfaces, links=None):
    """Host-side veths of a staged container down: its netns is cut off the bridge."""
    _host_links(interfaces, "down", links)


def links_up(interfaces, links=None):
    """Host-side veths up: the container's interfaces get carrier and (arp_notify)
    announce their addresses, so neighbours and bridges learn where it runs now."""
    _host_links(interfaces, "up", links)


def clear_incoming(layout, name):
    """Commit point of a migration on the destination: spec.json without its marker."""
    store = ContainerStore(layout)
    spec = store.load(name)
    if spec and "incoming" in spec:
        spec.pop("incoming")
        store.save(name, spec)


def kill_cgroup(cgroups_path):
    """SIGKILL whatever still sits in the container's cgroup (a restore cut short)."""
    from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.cgroups import Cgroup
    _checkpoint.thaw(cgroups_path)
    for _ in range(50):
        try:
            pids = Cgroup(cgroups_path).procs()
        except (OSError, CtrhostError):
            return
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
        time.sleep(0.02)


def remove_incoming(layout, name, spec, runtime_path=None):
    """Remove an uncommitted incoming migration of ``name`` (its stored ``spec`` carries
    the ``incoming`` marker): processes, runtime state, and when it was new here its
    rootfs mount, netns, veths, bundle; then the received images."""
    spec = dict(spec, cgroups_path=spec.get("cgroups_path") or _ocifile.cgroups_path(name))
    marker = spec.get("incoming") or {}
    with contextlib.suppress(Exception):  # it answers for its addresses no more here
        links_down(spec.get("network"))
    rt = runtime_for(layout, spec.get("runtime"), runtime_path)
    forget_runtime(rt, name, spec["cgroups_path"])
    kill_cgroup(spec["cgroups_path"])
    cleanup_work(work_dir(layout, name, "migrate"))
    if marker.get("created", True):
        remove_created(layout, name, spec, Overlay(layout, name, spec["template"]))
    if marker.get("id"):
        shutil.rmtree(os.path.join(layout.checkpoint_dir(name), ".incoming-%s" % marker["id"]),
                      ignore_errors=True)


def mount_rootfs(layout, name, spec, created):
    overlay = Overlay(layout, name, spec["template"], idmap=_idmap.of(spec))
    try:
        overlay.mount()
    except BaseException:
        if created:
            remove_created(layout, name, spec, overlay)
        raise


def prepare(layout, name, meta, image_dir, created=None):
    """Rootfs, netns, network, config.json and spec.json for a restore; returns (spec, created)."""
    spec, created = stage(layout, name, meta, image_dir, created)
    mount_rootfs(layout, name, spec, created)
    return spec, created


def restore_images(layout, name, image_dir, meta, runtime_path=None, criu_path=None,
                   lazy=False, work=None, timeout=600, recorder=None, created=None, staged=False):
    """Restore ``name`` from ``image_dir`` (checkpoint.json ``meta``); return facts of the run.

    ``staged``: ``stage`` already ran (a migration did it before the freeze), so only
    the rootfs mount and the runtime's restore remain."""
    t0 = time.monotonic()
    if staged:
        spec = dict(meta["spec"], cgroups_path=_ocifile.cgroups_path(name))
        mount_rootfs(layout, name, spec, created)
    else:
        spec, created = prepare(layout, name, meta, image_dir, created)
    t_prepared = time.monotonic()
    rt = runtime_for(layout, spec.get("runtime"), runtime_path, recorder)
    overlay = Overlay(layout, name, spec["template"])
    bundle = layout.container_dir(name)
    work = work or work_dir(layout, name)
    if not lazy:
        cleanup_work(work)
    os.makedirs(work, mode=0o700, exist_ok=True)
    idmap = _idmap.of(spec)
    for path in (image_dir, work) if idmap and lazy else (image_dir,) if idmap else ():
        # opened from inside the restored user namespace (work: the lazy pages' socket)
        _idmap.give_images(path, idmap, within=(layout.root, layout.run_dir))
    forget_runtime(rt, name, spec["cgroups_path"])
    recreate_cgroups(spec["cgroups_path"], meta.get("cgroup_tree"))
    found = criu_for(layout, criu_path).found
    if found:
        _criuconf.write_restore_config(layout.run_dir, found, name, spec["cgroups_path"])
    args = restore_command(rt, criu_path, name, image_dir, work, bundle,
                           meta.get("options") or {}, lazy)
    try:
        terminal = bool(((_ocifile.load_config(bundle) or {}).get("process") or {}).get("terminal"))
        with _birth(layout, name, spec):
            duration = rt.spawn(args, os.path.join(bundle, LOG_FILE), timeout,
                                msg="%s restore of %s" % (rt.name, name),
                                terminal=terminal).duration
        st = rt.state(name)
        if not st or st.get("status") != "running" or not os.path.exists("/proc/%s" % st["pid"]):
            raise CommandError("restore of %s: the runtime reports %s after restore"
                               % (name, (st or {}).get("status", "nothing")), args, 1)
    except CtrhostError as exc:
        cause, hint, lines = _criu.classify_work_dir(work, "restore.log",
                                                     getattr(exc, "stderr", "") or "")
        forget_runtime(rt, name, spec["cgroups_path"])
        kill_cgroup(spec["cgroups_path"])
        with contextlib.suppress(CtrhostError, OSError):
            from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.cgroups import Cgroup
            Cgroup(spec["cgroups_path"]).remove()
        _criuconf.remove_lock_tables(_netns.path(name))
        log = keep_log(layout, name, work, "restore.log")
        cleanup_work(work)
        if created:
            remove_created(layout, name, spec, overlay)
        raise CommandError("restore of container %s failed: %s (%s)%s; CRIU's log: %s"
                           % (name, cause, hint, ": " + lines[0] if lines else "", log),
                           getattr(exc, "cmd", args), getattr(exc, "rc", -1), "",
                           getattr(exc, "stderr", ""), cause=cause, criu_log=lines, log=log)
    stats = _criu.work_stats(work).get("restore", {})
    return dict(pid=st["pid"], status=st["status"], stats=stats, created=created,
                duration=round(duration, 3), work=work,
                timings=dict(prepare=round(t_prepared - t0, 3), runtime_restore=round(duration, 3),
                             total=round(time.monotonic() - t0, 3)),
                cgroups_path=spec["cgroups_path"], network=spec.get("network") or [])


def restore(root, name, cid=None, runtime_path=None, criu_path=None, check_mode=False):
    """``container_restore``: restore ``name`` from checkpoint ``cid`` (newest when None)."""
    layout = Layout(root)
    validate_name(name, "name")
    if cid is not None:
        _ckstore.validate_id(cid)
    meta = _ckstore.find(layout, name, cid)
    recorder = _cli.Recorder()
    store = ContainerStore(layout)
    rt = runtime_for(layout, meta["spec"].get("runtime"), runtime_path, recorder, check_mode)
    st = rt.state(name)
    if st and st.get("status") in ("running", "paused"):
        return dict(changed=False, id=meta["id"], checkpoint_dir=meta["path"], pid=st.get("pid"),
                    msg="container %s is already %s; nothing restored" % (name, st["status"]),
                    commands=[])
    check_template(layout, meta)
    criu = criu_for(layout, criu_path).require()
    bundle = layout.container_dir(name)
    if check_mode:
        recorder.add(rt.base_cmd() + restore_command(rt, criu["path"], name, meta["path"],
                                                     work_dir(layout, name), bundle,
                                                     meta.get("options") or {}))
        return dict(changed=True, id=meta["id"], checkpoint_dir=meta["path"], pid=None,
                    commands=recorder.commands,
                    diff=dict(before=dict(state="stopped"), after=dict(state="running")))
    with store.lock(name):
        facts = restore_images(layout, name, meta["path"], meta, runtime_path, criu["path"],
                               recorder=recorder)
    cleanup_work(facts["work"])
    return dict(changed=True, id=meta["id"], checkpoint_dir=meta["path"], pid=facts["pid"],
                stats=facts["stats"], duration=facts["duration"], created=facts["created"],
                commands=recorder.commands,
                diff=dict(before=dict(state="stopped"), after=dict(state="running")))


def task(params, check_mode=False):
    """The ``container_restore`` module's entry."""
    return restore(params["root"], params["name"], params["id"], params["runtime_path"],
                   params["criu_path"], check_mode)
