# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The console of a detached container: a pipe drained into a log file by a logger.

A detached container keeps the stdio it inherits from the runtime for its whole
life. It gets an anonymous pipe (CRIU can dump and restore a pipe; it cannot dump
a host file outside the container's mounts) drained into the log file by a
detached ``cat`` (the conmon approach), started directly (no shell): in its own
session with cwd ``/`` (it pins no mount of the container), holding nothing of
the caller's stdio, in the caller's cgroup (never the container's). It ends by
itself when the last writer closes the pipe and is killed by ``delete``. On
``restore`` runc hands its own stdio (the new pipe) to the restored processes,
so the log carries on and the container can be checkpointed again.

A system container's console is a pseudo-terminal instead (``ConsoleSocket``):
the runtime creates it inside the container (CRIU dumps the slave side and, on
restore, hands the new master back the same way) and sends the master through
a unix socket; the logger drains the master.

A logger is identified by (pid, start time), so a recycled pid is never killed.
"""

from __future__ import annotations

import contextlib
import os
import array
import fcntl
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import procfs as _procfs
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import (
    CommandError,
    MissingToolError,
)

# Popen objects of loggers this process started (reaped once they end, so that a
# long-lived caller collects no zombies and Python never warns about them).
_LOGGER_PROCS = []
TIOCGPTPEER = 0x5441


def start_logger(rfd, log_path, env, keep=()):
    """Start the detached logger reading ``rfd``; return its (pid, starttime).
    ``keep``: more descriptors the logger holds open (a terminal's slave side)."""
    cat = _cli.which("cat")
    if not cat:
        raise MissingToolError("cat not found on this host (it drains the console pipe)",
                               tool="cat")
    fd = os.open(os.path.abspath(log_path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                 0o600)
    try:
        proc = subprocess.Popen([cat], stdin=rfd, stdout=fd, stderr=subprocess.DEVNULL,
                                close_fds=True, pass_fds=tuple(keep), start_new_session=True,
                                cwd="/", env=env)
    finally:
        os.close(fd)
    _LOGGER_PROCS.append(proc)
    start = start_time(proc.pid)
    if start is None:
        raise CommandError("console logger for %s did not start" % log_path, [cat], proc.poll())
    return proc.pid, start


def wait_process(proc, timeout):
    """The exit status of ``proc``, -1 if it was killed after ``timeout`` seconds.

    A blocking wait with a watchdog: ``Popen.wait(timeout)`` polls with sleeps of up
    to 50 ms, which would add to every create and restore."""
    expired = []

    def kill():
        expired.append(True)
        with contextlib.suppress(OSError):
            proc.kill()

    watchdog = threading.Timer(timeout, kill) if timeout else None
    if watchdog is not None:
        watchdog.daemon = True
        watchdog.start()
    try:
        rc = proc.wait()
    finally:
        if watchdog is not None:
            watchdog.cancel()
    return -1 if expired else rc


def reap_loggers():
    """Collect the loggers of this process that have ended."""
    _LOGGER_PROCS[:] = [proc for proc in _LOGGER_PROCS if proc.poll() is None]


def start_time(pid):
    st = _procfs.proc_stat(pid)
    return None if st is None or st.state == "Z" else st.starttime


def wait_gone(logger, timeout):
    deadline = time.monotonic() + timeout
    while start_time(logger[0]) == logger[1] and time.monotonic() < deadline:
        time.sleep(0.005)


def kill_logger(logger):
    if start_time(logger[0]) == logger[1]:
        with contextlib.suppress(OSError):
            os.kill(logger[0], signal.SIGKILL)


def verify_started(rt, cid, log_path, offset, grace):
    """Fail (CommandError with the console's last lines) when the init of ``cid``
    (runtime ``rt``) exits within ``grace`` seconds of its start."""
    deadline = time.monotonic() + grace
    while True:
        st = rt.state(cid)
        if st is None or st.get("status") == "stopped":
            time.sleep(0.05)  # the logger drains the last output of the console
            tail = log_tail(log_path, offset, 4096).strip().splitlines()[-15:]
            raise CommandError("state: the init of container %s exited right after the start; "
                               "console log %s ends with: %s"
                               % (cid, log_path, " | ".join(tail) or "(nothing)"),
                               [rt.name, "run", cid], 1, "", "\n".join(tail),
                               console_log=log_path, console_tail=tail)
        if time.monotonic() >= deadline:
            return
        time.sleep(0.05)


def log_tail(log_path, offset, size=16384):
    """What the log got since ``offset`` (its last ``size`` bytes), as text."""
    try:
        with open(log_path, "rb") as handle:
            handle.seek(offset)
            return handle.read()[-size:].decode("utf-8", "replace")
    except OSError:
        return ""


def open_peer(master):
    """A descriptor of the slave side of the terminal ``master`` (TIOCGPTPEER: no path
    lookup in the container's /dev/pts). The logger holds it, so that the master never
    reads EIO (and the logger never ends) while init closes and reopens its console."""
    return fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)


class ConsoleSocket:
    """A listening unix socket the runtime sends a terminal's master to
    (``--console-socket``), in a private directory under ``base``."""

    def __init__(self, base, cid):
        os.makedirs(base, mode=0o700, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="%s." % cid[:40], dir=base)
        self.path = os.path.join(self.dir, "sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(1)

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def receive(self, proc, timeout):
        """The master fd the runtime sends, or None when ``proc`` ended without one."""
        deadline = time.monotonic() + (timeout or 120)
        self.sock.settimeout(0.05)
        while time.monotonic() < deadline:
            try:
                conn, _addr = self.sock.accept()
            except TimeoutError:
                if proc.poll() is not None:
                    return None
                continue
            with conn:
                conn.settimeout(max(1.0, deadline - time.monotonic()))
                fds = array.array("i")
                _msg, ancdata, _flags, _addr = conn.recvmsg(4096, socket.CMSG_SPACE(fds.itemsize))
                for level, kind, data in ancdata:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
                for extra in fds[1:]:
                    os.close(extra)
                return fds[0] if fds else None
        return None
