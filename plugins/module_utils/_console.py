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

A logger is identified by (pid, start time), so a recycled pid is never killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time

from ansible_collections.ctrhost.fleet.plugins.module_utils import _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils._errors import (
    CommandError,
    MissingToolError,
)

# Popen objects of loggers this process started (reaped once they end, so that a
# long-lived caller collects no zombies and Python never warns about them).
_LOGGER_PROCS = []


def start_logger(rfd, log_path, env):
    """Start the detached logger reading ``rfd``; return its (pid, starttime)."""
    cat = _cli.which("cat")
    if not cat:
        raise MissingToolError("cat not found on this host (it drains the console pipe)",
                               tool="cat")
    fd = os.open(os.path.abspath(log_path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                 0o600)
    try:
        proc = subprocess.Popen([cat], stdin=rfd, stdout=fd, stderr=subprocess.DEVNULL,
                                close_fds=True, start_new_session=True, cwd="/", env=env)
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
    try:
        with open("/proc/%d/stat" % pid) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def wait_gone(logger, timeout):
    deadline = time.monotonic() + timeout
    while start_time(logger[0]) == logger[1] and time.monotonic() < deadline:
        time.sleep(0.005)


def kill_logger(logger):
    if start_time(logger[0]) == logger[1]:
        with contextlib.suppress(OSError):
            os.kill(logger[0], signal.SIGKILL)
