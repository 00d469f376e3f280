# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runtime commands that leave a container process behind (create, run -d, restore -d),
with the container's stdout/stderr (or its pseudo-terminal) drained into a log file by a
detached logger (see ``_console``): the part of ``_runtime.Runtime`` that starts them and
keeps track of those loggers (``<state_root>.loggers/<id>``: pid and start time).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time

from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import console as _console
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.atomic import atomic_write
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CommandError, MissingToolError

# The console of a detached container: see _console.
LOGGERS_SUFFIX = ".loggers"
CONSOLES_SUFFIX = ".consoles"


class DetachedStart:
    """Mixed into ``Runtime``: uses its ``command``, ``record``, ``dry_run``, ``name``,
    ``state_root`` and ``explain``."""

    def spawn(self, args, log_path, timeout=120, msg=None, terminal=False):
        """Run a runtime command that leaves a container process behind
        (create, run -d, restore -d) with its stdout/stderr on a pipe drained into
        ``log_path`` by a detached logger. Returns a ``_cli.Result``.

        ``terminal`` (config.json's ``process.terminal``): the container's console
        is a pseudo-terminal; the runtime sends its master through
        ``--console-socket`` and the logger drains the master instead."""
        _console.reap_loggers()
        cmd = self.command(args)
        if self.dry_run:
            self.record(cmd)
            return None
        cid = args[-1]
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        env = dict(os.environ, PATH=_cli.search_path())
        if terminal:
            return self._spawn_terminal(args, log_path, offset, env, timeout, msg)
        self.record(cmd)
        rfd, wfd = os.pipe()
        try:
            logger = _console.start_logger(rfd, log_path, env)
            os.close(rfd)
            rfd = None
            start = time.monotonic()
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=wfd, stderr=wfd,
                                        close_fds=True, env=env, cwd="/")
            except FileNotFoundError:
                raise MissingToolError("%s not found on this host" % cmd[0], tool=self.name)
            os.close(wfd)
            wfd = None
            rc = _console.wait_process(proc, timeout)
            duration = time.monotonic() - start
        finally:
            for fd in (rfd, wfd):
                if fd is not None:
                    os.close(fd)
        if rc == 0:
            self._save_logger(cid, logger)
            return _cli.Result(cmd, 0, "", "", duration)
        _console.wait_gone(logger, 2.0)  # nothing writes any more: the log holds the last words
        _console.kill_logger(logger)
        raise self._spawn_failed(args, cmd, rc, _console.log_tail(log_path, offset), timeout, msg)

    def _spawn_terminal(self, args, log_path, offset, env, timeout, msg):
        cid = args[-1]
        with _console.ConsoleSocket(self.state_root.rstrip("/") + CONSOLES_SUFFIX, cid) as sock:
            at = next(i for i, a in enumerate(args) if a in ("run", "create", "restore")) + 1
            cmd = self.command(list(args[:at]) + ["--console-socket", sock.path] + list(args[at:]))
            self.record(cmd)
            start = time.monotonic()
            with open(log_path, "ab") as out:
                try:
                    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=out, close_fds=True, env=env, cwd="/")
                except FileNotFoundError:
                    raise MissingToolError("%s not found on this host" % cmd[0], tool=self.name)
                master = sock.receive(proc, timeout)
                rc = _console.wait_process(proc, timeout)
            duration = time.monotonic() - start
        if rc == 0 and master is not None:
            slave = None
            try:
                slave = _console.open_peer(master)
                logger = _console.start_logger(master, log_path, env, keep=(slave,))
            finally:
                for fd in (master, slave):
                    if fd is not None:
                        os.close(fd)
            self._save_logger(cid, logger)
            return _cli.Result(cmd, 0, "", "", duration)
        if master is not None:
            os.close(master)
        if rc == 0:
            rc = 1
        raise self._spawn_failed(args, cmd, rc, _console.log_tail(log_path, offset)
                                 or "no console received on %s" % sock.path, timeout, msg)

    def _spawn_failed(self, args, cmd, rc, tail, timeout, msg):
        what = msg or "%s %s" % (self.name, args[0])
        why = "timed out after %ss" % timeout if rc == -1 else "failed (rc=%d)" % rc
        exc = CommandError("%s %s: %s" % (what, why, last_line(tail)), cmd, rc, "", tail)
        return self.explain(exc, args)

    # -- container loggers --------------------------------------------------
    def logger_file(self, cid):
        return os.path.join(self.state_root.rstrip("/") + LOGGERS_SUFFIX, cid)

    def _save_logger(self, cid, logger):
        path = self.logger_file(cid)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        old = self.logger(cid)
        if old and old != logger:
            _console.kill_logger(old)
        if logger[1] is None:  # already gone: nothing holds the pipe any more
            return
        atomic_write(path, "%d %d\n" % logger, mode=0o644)

    def logger(self, cid):
        """(pid, starttime) of the live logger of ``cid``'s console, or None."""
        try:
            with open(self.logger_file(cid)) as handle:
                pid, start = (int(x) for x in handle.read().split())
        except (OSError, ValueError):
            return None
        return (pid, start) if _console.start_time(pid) == start else None

    def stop_logger(self, cid):
        """Kill ``cid``'s logger (if alive) and forget it."""
        found = self.logger(cid)
        if found:
            _console.kill_logger(found)
        with contextlib.suppress(OSError):
            os.unlink(self.logger_file(cid))
        return found is not None


def last_line(text):
    """The last non-empty line of a runtime's output (its ``msg`` when runc logs JSON)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "no output"
    line = lines[-1]
    try:  # runc --log-format json lines
        return json.loads(line).get("msg", line)
    except ValueError:
        return line
