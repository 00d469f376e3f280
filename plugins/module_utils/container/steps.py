# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A container's processes, the steps ``_container``'s lifecycle is made of: its run
status, config.json written from its spec, start (``runtime run -d``, then verified
alive) and stop (stop signal, wait, kill), and its network interfaces attached,
updated and detached (through ``_netlink``, imported only when needed).
"""

from __future__ import annotations

import contextlib
import os

from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import oci as _ocifile
from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import console as _console
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import idmap as _idmap
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import peruser as _peruser
from ansible_collections.ctrhost.fleet.plugins.module_utils.limits import records as _limits
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import prestart_hook as _nethook
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import netns as _netns
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import bundle as _oci
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import system as _sysctr
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CommandError, ConflictError, LimitError

LOG_FILE = "console.log"
# CRIU settings for this host's checkpoints and restores (e.g. ``network-lock nftables``),
# written by the checkpoint library where CRIU supports them; see _oci.build_config.
CRIU_CONFIG = os.path.join("criu", "runc.conf")
# Seconds a started container's init must live for the start to count (``verify_started``).
# (an init that boots an OS gets longer: its first failures take a while).
START_GRACE = 0.5
SERVICE_GRACE = 0.1


# -- calls into the network library (one place each) ----------------------------
def _netlink():
    """Imported only for a container with interfaces: it loads pyroute2 (slow to import)."""
    from ansible_collections.ctrhost.fleet.plugins.module_utils.net import links as mod

    return mod


def network_attach(name, netns_path, interfaces, incoming=False):
    """The interfaces in the container's netns. ``incoming`` (a migration's destination):
    the host-side veths stay down until the commit (``_restore.links_up``), and the
    interfaces announce their addresses (gratuitous ARP) when they get carrier."""
    if interfaces:
        _netlink().attach(name, netns_path, interfaces, host_up=not incoming)
        if incoming:
            _arp_notify(netns_path, interfaces)


def _arp_notify(netns_path, interfaces):
    names = [i["ifname"] for i in interfaces or [] if i.get("ipv4")]
    if names:
        script = "; ".join("echo 1 > /proc/sys/net/ipv4/conf/%s/arp_notify" % n for n in names)
        _cli.run(["nsenter", "--net=" + netns_path, "--", "sh", "-c", script], check=False,
                 timeout=30)


def network_birth(name, interfaces, incoming=False):
    """While the runtime starts or restores an unprivileged container (``with``): its user
    namespace gets the container's own caps (``_peruser.CONTAINER_CAPS``: inotify, fanotify,
    namespaces; CRIU makes the namespace again at a restore, without them) and the netns
    it makes gets the interfaces, before the container runs (``_nethook``)."""
    def born(pid):
        _peruser.cap_userns("/proc/%d/ns/user" % pid)
        network_attach(name, _nethook.adopt(name, pid), interfaces, incoming)

    return _nethook.Birth(name, born)


def network_update(name, netns_path, old, new):
    _netlink().update(name, netns_path, old, new)


def network_detach(name, interfaces):
    if interfaces:
        _netlink().detach(name, interfaces)


def network_remove(name, interfaces):
    """The host-side veths detached and the container's namespaces removed."""
    network_detach(name, interfaces)
    _netns.remove(name)


# -- run status, config, start and stop --------------------------------------------
def status_of(rt, name, ctx=None):
    """created, running, frozen or stopped (also when the runtime does not know it).
    With ``ctx``, remember what was seen for the result."""
    st = rt.state(name)
    status = "stopped" if st is None else {"paused": "frozen"}.get(st["status"], st["status"])
    if ctx is not None:
        ctx.known = (status, st.get("pid") if st and status != "stopped" else None)
    return status, st


def write_config(ctx, spec):
    """(Re)write config.json from the declared spec."""
    seccomp = ctx.runtime(spec["runtime"]).has_seccomp()
    if not seccomp:
        ctx.warnings.append("runtime %s has no seccomp support: the container runs without "
                            "a seccomp profile" % spec["runtime"])
    cfg = _oci.build_config(ctx.name, spec, _netns.path(ctx.name),
                            cgroups=spec.get("cgroups_path"), seccomp=seccomp,
                            criu_config=os.path.join(ctx.layout.run_dir, CRIU_CONFIG))
    _limits.persist(ctx.bundle, spec.get("limits") or {}, ctx.check_mode, config=cfg)
    return cfg


def start(ctx, spec, rt, status, configured=False):
    """Bring a stopped (or created) container to running (``runtime run -d``).

    ``configured``: config.json was just written from ``spec`` and the netns made
    (a new container), so neither is done again."""
    ctx.known = None
    if status == "created":
        rt.start(ctx.name)
        return
    idmap = _idmap.of(spec)
    missing = _idmap.missing_on_host(idmap) if idmap else []
    if missing:
        raise ConflictError("privileged: container %s maps its ids to %d-%d of the host, but %s: "
                            "give this host the fleet's range (the host role does)"
                            % (ctx.name, idmap["uid"], idmap["uid"] + idmap["size"] - 1,
                               "; ".join(missing)), field="privileged")
    # The runtime joins a session keyring of its own, counted to the container's root.
    _peruser.refuse_start(idmap["uid"] if idmap else 0, ctx.name)
    ctx.overlay(spec["template"], idmap).mount()
    if not ctx.check_mode and idmap:
        _netns.prepare_user(ctx.name, idmap)
    elif not ctx.check_mode and not configured and not _netns.exists(ctx.name):
        network_attach(ctx.name, _netns.ensure(ctx.name), spec.get("network"))
    if not configured:
        write_config(ctx, spec)
    leftover = rt.state(ctx.name)
    if leftover is not None and (not ctx.check_mode or leftover["status"] == "stopped"):
        rt.delete(ctx.name, force=True)  # a stopped instance the runtime still knows
    system = _sysctr.is_system(spec)
    if system and not ctx.check_mode:
        _sysctr.write_hostname(ctx.overlay(spec["template"]).rootfs, spec["hostname"])
        if idmap:
            _sysctr.delegate(spec.get("cgroups_path") or _ocifile.cgroups_path(ctx.name), idmap)
    pid_file = rt.pid_file(ctx.name)
    log = os.path.join(ctx.bundle, LOG_FILE)
    offset = os.path.getsize(log) if os.path.exists(log) else 0
    try:
        with (network_birth(ctx.name, spec.get("network")) if idmap and not ctx.check_mode
              else contextlib.nullcontext()):
            rt.run(ctx.name, ctx.bundle, log, pid_file=pid_file, terminal=system)
    except CommandError as exc:
        _raise_as_limit(exc, idmap, ctx.name)
        raise
    if not ctx.check_mode:
        pid = rt.read_pid(ctx.name)
        ctx.known = ("running", pid) if pid else None
        try:
            _console.verify_started(rt, ctx.name, log, offset,
                                    START_GRACE if system else SERVICE_GRACE)
        except CommandError as exc:
            ctx.known = None
            _raise_as_limit(exc, idmap, ctx.name)
            raise


def _raise_as_limit(exc, idmap, name):
    """A runtime's failure to join its session keyring (the key quota, raced past the
    check before the start) raised as a LimitError naming the limit; any other returns."""
    why = _peruser.explain_runtime_failure("%s %s %s" % (exc.msg, exc.stdout, exc.stderr),
                                           idmap["uid"] if idmap else 0, name)
    if why:
        raise LimitError(why, limit=why.split(":", 1)[0], cmd=exc.cmd, rc=exc.rc,
                         stderr=exc.stderr) from exc


def stop(ctx, spec, rt, status, timeout):
    """Stop the container's processes and forget its runtime state; keep the bundle."""
    ctx.known = None
    if status == "frozen":
        rt.resume(ctx.name)
    if status in ("running", "frozen"):
        rt.kill(ctx.name, _sysctr.stop_signal(spec))
        if not ctx.check_mode and not rt.wait_stopped(ctx.name, timeout):
            rt.kill(ctx.name, "KILL", all_processes=True)
            rt.wait_stopped(ctx.name, 10)
    if ctx.check_mode or rt.state(ctx.name) is not None:
        rt.delete(ctx.name, force=True)
    ctx.overlay(spec["template"]).umount()
    if not ctx.check_mode and _idmap.of(spec):  # its netns ends with it (_nethook)
        network_remove(ctx.name, spec.get("network"))
    if not ctx.check_mode:
        ctx.known = ("stopped", None)
