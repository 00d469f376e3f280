# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Process helpers of the migration agent: identity (pid, starttime), kill a tree."""

from __future__ import annotations

import contextlib
import os
import signal
import time

from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.procfs import proc_stat


def identity(pid):
    """(pid, starttime) of a live process, or None."""
    st = proc_stat(pid)
    return None if st is None or st.state in ("Z", "X") else (pid, st.starttime)


def alive(ident):
    return bool(ident) and identity(int(ident[0])) == (int(ident[0]), int(ident[1]))


def kill_tree(pid, include_self=True):
    """SIGKILL the descendants of ``pid`` (and ``pid``), children first found."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(entry)
            if st is not None:
                children.setdefault(st.ppid, []).append(st.pid)
    todo, victims = [pid], []
    while todo:
        for child in children.get(todo.pop(), []):
            victims.append(child)
            todo.append(child)
    if include_self:
        victims.append(pid)
    for victim in victims:
        with contextlib.suppress(OSError):
            os.kill(victim, signal.SIGKILL)


def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)
