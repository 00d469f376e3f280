# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What dead migration agents leave behind, and its clean-up: an incoming staging whose
agent is gone (``clean_stale``), and the directories the agent's bootstrap unpacked the
library into (``agent_dir``, ``mark_agent_dir``, ``clean_agent_dirs``), which a killed
agent cannot remove itself."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import restore as _restore
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.store import ContainerStore
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.process import alive


def clean_stale(layout, name, runtime_path, problems):
    """Remove an incoming staging of ``name`` whose agent is gone; a live one is a
    migration in progress (a problem, None). Returns whether something was removed."""
    spec = ContainerStore(layout).load(name) or {}
    marker = spec.get("incoming")
    if not marker:
        return False
    if alive(marker.get("agent")):
        problems.append("an incoming migration of %s from %s is in progress here since %s "
                        "(agent pid %s)" % (name, marker.get("from"), marker.get("since"),
                                            (marker.get("agent") or ["?"])[0]))
        return None
    _restore.remove_incoming(layout, name, spec, runtime_path)
    return True


AGENT_PREFIX = "ctrhost-agent-"
OWNER = "owner.json"


def agent_dir(module_file):
    """The temporary directory the bootstrap unpacked this agent into, or None: the
    parent of the ``ansible_collections`` component of its path, at any depth."""
    parts = os.path.abspath(module_file).split(os.sep)
    if "ansible_collections" not in parts:
        return None
    index = len(parts) - 1 - parts[::-1].index("ansible_collections")
    path = os.sep.join(parts[:index]) or os.sep
    if os.path.basename(path).startswith(AGENT_PREFIX) and \
            os.path.dirname(path) == os.path.abspath(tempfile.gettempdir()):
        return path
    return None


def mark_agent_dir(path, ident):
    """Record the agent owning ``path`` ([pid, starttime, pid namespace]) for
    ``clean_agent_dirs``."""
    with open(os.path.join(path, OWNER), "w") as handle:
        json.dump(list(ident) + [_pid_ns()], handle)


def _pid_ns():
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def clean_agent_dirs():
    """Remove the unpacked agents of agents that are gone (a killed agent cannot remove
    its own); a directory without an owner record, or whose owner's pids are of another
    pid namespace, is left alone. Returns how many."""
    tmp, removed, here = tempfile.gettempdir(), 0, _pid_ns()
    for leaf in os.listdir(tmp):
        if not leaf.startswith(AGENT_PREFIX):
            continue
        path = os.path.join(tmp, leaf)
        try:
            with open(os.path.join(path, OWNER)) as handle:
                owner = json.load(handle)
        except (OSError, ValueError):
            continue
        if not isinstance(owner, list) or len(owner) != 3 or owner[2] != here or here is None:
            continue
        if not alive(owner[:2]):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed
