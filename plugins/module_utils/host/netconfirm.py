# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A network change confirmed or rolled back by itself (a "commit confirmed").

Moving the host's addresses to a bridge (the fleet network's mode ``bridged``) can cut the
connection the controller manages the host through. Before anything changes, ``arm`` records
the previous state (``net/bridged.snapshot`` and the persisted declaration) in
``<root>/network-pending.json`` and starts a watchdog, a process of its own session that
survives the connection (double fork, ``setsid``, no descriptor of the connection kept; it
stays in the network namespace it was started in). Unless ``confirm`` removes the record
before its deadline, the watchdog puts the previous state back (``net/bridged.restore``, and
the previous ``host-network.json``) and removes the record.

``confirm`` is called by the next ``host_network`` run of the same bridge, which the controller
makes over a new connection (the ``host`` role resets its connection and waits for the host
first): that the run reaches the host is the proof the host still answers. One lock
(``network-pending.lock``) orders a confirmation and the watchdog's rollback, so exactly one
of them wins. A boot finding a record (the host went down before the confirmation) takes
the previous declaration back before it applies the network.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import time

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.atomic import atomic_write, json_text
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import bridged as _bridged
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import links as _netlink

RECORD = "network-pending.json"
LOCK = "network-pending.lock"
LAST = "network-rollback.json"  # what the last rollback did: when, and any step that failed
POLL = 0.5


def record_path(root):
    return os.path.join(Layout(root).root, RECORD)


@contextlib.contextmanager
def _locked(root):
    path = os.path.join(Layout(root).root, LOCK)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def pending(root):
    """The armed record, or None."""
    try:
        with open(record_path(root)) as handle:
            return json.load(handle)
    except (FileNotFoundError, ValueError):
        return None


def arm(root, snap, timeout, network_file, previous_text):
    """Record the previous state and start the watchdog; return the record (``token``,
    ``deadline`` as a Unix time, ``pid`` of the watchdog)."""
    record = dict(token=secrets.token_hex(8), deadline=time.time() + timeout, timeout=timeout,
                  snapshot=snap, network_file=network_file, previous=previous_text, pid=None)
    atomic_write(record_path(root), json_text(record), parents=True)
    record["pid"] = _spawn(root, record["token"])
    with _locked(root):  # the watchdog's pid for an operator (it reads only the token)
        if (pending(root) or {}).get("token") == record["token"]:
            atomic_write(record_path(root), json_text(record), parents=True)
    return record


def _spawn(root, token):
    """The watchdog in a process of its own session (double fork); the pid of it."""
    read_end, write_end = os.pipe()
    first = os.fork()
    if first == 0:  # the first child: a new session, then the watchdog, then gone
        try:
            os.close(read_end)
            os.setsid()
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            second = os.fork()
            if second == 0:
                os.write(write_end, b"%d" % os.getpid())
                os.close(write_end)
                _detach()
                try:
                    watch(root, token)
                finally:
                    os._exit(0)
            os._exit(0)
        except BaseException:
            os._exit(1)
    os.close(write_end)
    os.waitpid(first, 0)
    with os.fdopen(read_end) as handle:
        text = handle.read()
    return int(text) if text.isdigit() else None


def _detach():
    """No descriptor of the caller's (the connection's stdout keeps a session open)."""
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, 65536)


def watch(root, token, clock=time.time, sleep=time.sleep):
    """Wait for the confirmation of record ``token``; at its deadline roll back. Returns
    ``"confirmed"`` or ``"rolled back"``."""
    while True:
        record = pending(root)
        if record is None or record.get("token") != token:
            return "confirmed"
        if clock() >= record["deadline"]:
            break
        sleep(POLL)
    with _locked(root):
        record = pending(root)
        if record is None or record.get("token") != token:
            return "confirmed"
        rollback(root, record)
    return "rolled back"


def rollback(root, record):
    """Put the previous network and declaration back, then drop the record."""
    ipr = _netlink.ipr()
    try:
        errors = _bridged.restore(ipr, record["snapshot"])
    finally:
        ipr.close()
    _previous_declaration(record)
    atomic_write(os.path.join(Layout(root).root, LAST), json_text(dict(
        token=record["token"], time=time.time(), bridge=record["snapshot"]["bridge"], errors=errors)), mode=0o644)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record_path(root))


def _previous_declaration(record):
    if record.get("network_file"):
        if record.get("previous") is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(record["network_file"])
        else:
            atomic_write(record["network_file"], record["previous"], mode=0o644)


def confirm(root, bridge, check_mode=False):
    """The pending change of ``bridge`` confirmed (its rollback called off); the record or None."""
    with _locked(root):
        record = pending(root)
        if record is None or record["snapshot"].get("bridge") != bridge:
            return None
        if not check_mode:
            os.unlink(record_path(root))
    return record


def disarm_and_restore(root, record):
    """A failure half-way: the previous state back now, the watchdog called off."""
    with _locked(root):
        if (pending(root) or {}).get("token") == record["token"]:
            rollback(root, record)


def at_boot(root):
    """A record found at boot: the change was never confirmed; its previous declaration is
    what the boot applies. True when there was one."""
    with _locked(root):
        record = pending(root)
        if record is None:
            return False
        _previous_declaration(record)
        os.unlink(record_path(root))
    return True
