# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A migration asked again after it happened: is the container already on the destination?

``already_moved`` runs at the entry of ``_migrate.migrate``. When the container runs
here it answers None at once (no SSH), and the migration goes on. Otherwise it asks the
destination over SSH what runs there (the report of the ``containers`` inventory,
``_report.report``, shipped with the module_utils zip): when the container runs
there and is not an unfinished incoming copy, the move is done, and the result says so
with changed=false, so that a rerun playbook converges.

Two moves of one container at once: the container's lock (``ContainerStore.lock``) is
taken before these checks, so the one that waited sees what the other did. The winner
notes in the lock file where the container went (``record_move``); the loser, finding
the container gone from here, fails naming that destination and the winner
(``moved_elsewhere``), or, when both asked for the same destination, reports
changed=false like any rerun.
"""

from __future__ import annotations

import subprocess
import time

from ansible_collections.ctrhost.fleet.plugins.module_utils.host import report as _report
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import sysinfo as _sysinfo
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CommandError, ConflictError, NotFoundError
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.store import ContainerStore, describe

RUNNING = ("running", "frozen", "paused")


def running_here(layout, name, runtime_path=None):
    """(spec, whether the runtime runs or has paused ``name`` on this host)."""
    from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime.driver import runtime_for

    spec = ContainerStore(layout).load(name)
    if spec is None:
        return None, False
    st = runtime_for(layout, spec.get("runtime"), runtime_path).state(name)
    return spec, bool(st) and st.get("status") in RUNNING


def query(link, dest_root, timeout=60):
    """The destination's report ({root, containers}) over ``link``'s SSH options."""
    from ansible_collections.ctrhost.fleet.plugins.module_utils.core.ship import payload

    data = payload()
    remote = _report.remote_command(link.python, _report.BOOTSTRAP, len(data), dict(root=dest_root))
    cmd = link.ssh_cmd(link.dest, remote)
    try:
        proc = subprocess.run(cmd, input=data, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise CommandError("dest: no answer from %s in %ss" % (link.dest, timeout), cmd, -1) from None
    try:
        return _report.parse_report(link.dest, proc.stdout.decode("utf-8", "replace"))
    except ValueError as exc:
        raise CommandError("dest: could not read the containers of %s: %s %s"
                           % (link.dest, exc, proc.stderr.decode("utf-8", "replace").strip()[-300:]),
                           cmd, proc.returncode) from None


def already_moved(layout, name, dest, dest_root, make_link, mode, runtime_path=None):
    """The changed=false result when ``name`` runs on ``dest`` and not here; None when the
    migration must go on. ``make_link()`` gives an unopened ``_migrate_ssh.Link`` to ``dest``."""
    t0 = time.monotonic()
    spec, here = running_here(layout, name, runtime_path)
    if here:
        return None
    link = make_link()
    try:
        report = query(link, dest_root or layout.root)
    except CommandError as exc:
        if spec is None:
            raise NotFoundError("name: container %s does not exist under %s, and %s"
                                % (name, layout.containers_dir, exc.msg), field="name") from None
        return None  # here but not running: the migration says why it cannot move it
    finally:
        link.close()
    there = next((c for c in report.get("containers", []) if c.get("name") == name), None)
    if there is None or there.get("state") not in RUNNING:
        if spec is None:
            raise NotFoundError("name: container %s does not exist under %s, nor runs on %s (%s)"
                                % (name, layout.containers_dir, dest,
                                   there.get("state") if there else "absent"), field="name")
        return None
    return dict(changed=False, name=name, dest=dest, where=dest, already_moved=True,
                source_leftover=spec is not None, state=there.get("state"), pid=there.get("pid"),
                mode=mode, mode_requested=mode, fallback=None, downtime=None,
                total_time=round(time.monotonic() - t0, 3), bytes_moved=0, stats={}, preflight=None,
                steps=[], timings={}, dest_timings=None, rootfs_delta=None, fence=None,
                kernel=_sysinfo.kernel_release(),
                msg="container %s already runs on %s%s" % (
                    name, dest, " (a stopped copy is left here)" if spec is not None else ""))


def record_move(held, dest):
    """Note in the held lock ``held`` that the container went to ``dest`` (its commit)."""
    held.note(moved_to=dest, at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def moved_elsewhere(layout, name, dest, held):
    """Raise ConflictError naming where ``name`` went when the task this one waited for
    (``held``, the lock now held) moved it to another host than ``dest``."""
    note = held.previous if held.waited else None
    went = (note or {}).get("moved_to")
    if not went or went == dest or ContainerStore(layout).exists(name):
        return
    raise ConflictError("name: container %s was moved to %s at %s by another task while this "
                        "one waited for its lock: %s; it is no longer on this host, so it was not "
                        "moved to %s" % (name, went, note.get("at") or "?", describe(note), dest),
                        field="name", where=went, holder=note, changed=False)
