# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""After a failed migration: fence the destination, make the container run here."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time

from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import dump as _checkpoint
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import lifecycle as _container
from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import window as _dumpwindow
from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import restore as _restore
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.cgroups import Cgroup
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CtrhostError
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.ssh import LEASE
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.window import end_page_server


def fence(run, wait=10):
    """Drop the agent session and make sure the destination's uncommitted copy is gone.

    The agent fences itself when its session ends; a new session's ``fence`` waits for
    that (kills the old agent when it hangs) and removes what a killed agent left.
    Returns the destination's state: absent, fenced, committed (it runs there for
    good) or unverified (unreachable: we waited out the agent's lease instead)."""
    link = run.link
    if link is None or link.agent_id is None:
        return "absent"
    old = link.agent_id
    link.drop_agent()
    try:
        if not link.check():
            link.reopen()
        link.start_agent()
        answer = link.call("fence", root=run.dest_root or run.layout.root, name=run.name,
                           agent=old, wait=wait, runtime_path=run.runtime_path,
                           timeout=wait + 60)
        if answer.get("ok") and answer.get("state") in ("absent", "fenced", "committed"):
            return answer["state"]
    except Exception:  # unreachable: the agent's lease runs out, then it fences itself
        pass
    time.sleep(LEASE + 2)
    return "unverified"


def recover(run, rt, meta):
    """Make the container run on exactly one host after a failure; return where it runs.

    The source was only frozen (``_migrate_window``): once the destination is fenced,
    thawing it is the recovery. Only when its processes are gone (killed from outside)
    is it restored from the local images; a failure of that is kept in ``run.errors``."""
    close_receiver(run)
    run.fence = fence(run)
    run.step("fenced")
    if run.lazy_dump is not None and run.lazy_dump.poll() is None:  # its page server waits
        end_page_server(run.lazy_port, run.lazy_dump)
    if run.fence == "committed":  # the commit went through, its answer did not come back
        return run.dest
    status = _checkpoint.recover_running(rt, run.name, run.spec.get("cgroups_path"))
    if status == "running":
        # up (also when taking them down failed half-way): its addresses published here again
        _restore.links_up(run.spec.get("network"), run.links)
        return "source"
    run.errors.append(dict(where="source", step="thaw",
                           msg="the source's processes are gone (status %s)" % status))
    if run.images and os.path.exists(os.path.join(run.images, "inventory.img")) and run.mode != "lazy":
        meta = dict(meta, options=dict(meta.get("options") or {}),
                    cgroup_tree=(run.before_dump or {}).get("cgroup_tree"))
        try:
            _restore.restore_images(run.layout, run.name, run.images, meta, run.runtime_path,
                                    run.criu_path, created=False)
        except CtrhostError as err:
            run.errors.append(dict(where="source", step="fallback restore", msg=err.msg,
                                   log=err.details.get("log")))
        else:
            _restore.links_up(run.spec.get("network"))
            return "source (restored from the local images)"
    return "nowhere: container %s is stopped; its images are in %s" % (run.name, run.images)


def keep_failure(run, where):
    """After a failed migration: the dump log kept (``last-migrate-failure.log``), the
    images removed unless nothing runs (then they are the container); returns the paths."""
    out = {}
    if not run.images or not os.path.isdir(run.images):
        return out
    log = os.path.join(run.images, "dump.log")
    if os.path.exists(log):
        out["dump_log"] = run.layout.checkpoint_dir(run.name, "last-migrate-failure.log")
        os.makedirs(os.path.dirname(out["dump_log"]), mode=0o700, exist_ok=True)
        shutil.copy2(log, out["dump_log"])
    if where.startswith("nowhere"):
        out["images"] = _keep_on_disk(run)
    else:
        _dumpwindow.remove(run.images)
    return out


def _keep_on_disk(run):
    """Images that are the container's only state, moved off the tmpfs stage (which a
    reboot empties) under its checkpoints; their path."""
    if not _dumpwindow.staged(run.images):
        return run.images
    target = run.layout.checkpoint_dir(run.name, os.path.basename(run.images))
    try:
        _dumpwindow.move_tree(run.images, target)  # removes the stage only once copied
    except OSError:
        return run.images
    _dumpwindow.remove(run.images)
    run.images = target
    return target


def remove_source(run):
    """After the commit: kill the (still frozen) source, then remove it (the container
    lifecycle's ``absent``, under the lock the migration holds). Its processes get
    SIGKILL while frozen and die at the thaw, without running another instruction."""
    with contextlib.suppress(CtrhostError, OSError):
        for pid in Cgroup(run.spec["cgroups_path"]).procs():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)  # pending until the thaw: they never run again
    _container.ensure(dict(root=run.layout.root, run_dir=run.layout.run_dir, name=run.name,
                           state="absent", runtime_path=run.runtime_path), locked=True)
    _dumpwindow.remove(run.images)


def close_receiver(run):
    """Stop a transfer receiver that is still there (before the agent fences)."""
    if run.receiver is not None:
        run.receiver.close()
        run.receiver = None
    if run.pages is not None:
        run.pages.close()
        run.pages = None
