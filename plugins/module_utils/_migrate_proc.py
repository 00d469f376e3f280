# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Process helpers of the migration agent: identity (pid, starttime), kill a tree."""

from __future__ import annotations

import contextlib
import os
import signal
import time


def identity(pid):
    """(pid, starttime) of a live process, or None."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else (pid, int(fields[19]))


def alive(ident):
    return bool(ident) and identity(int(ident[0])) == (int(ident[0]), int(ident[1]))


def kill_tree(pid, include_self=True):
    """SIGKILL the descendants of ``pid`` (and ``pid``), children first found."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open("/proc/%s/stat" % entry) as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
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
