# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One wrapper to run external tools; failures always carry cmd, rc, stdout, stderr."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import (
    CommandError,
    MissingToolError,
)

# Tools live in sbin on Debian; a non-login SSH session may not have it on PATH.
EXTRA_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def search_path():
    parts = os.environ.get("PATH", "").split(os.pathsep)
    for extra in EXTRA_PATH:
        if extra not in parts:
            parts.append(extra)
    return os.pathsep.join(p for p in parts if p)


def which(name):
    """Absolute path of ``name`` (an absolute path is checked as is), or None."""
    if os.path.isabs(name):
        return name if os.access(name, os.X_OK) else None
    return shutil.which(name, path=search_path())


def require(name, purpose=None):
    path = which(name)
    if not path:
        raise MissingToolError(
            "%s not found on this host%s" % (name, " (needed for %s)" % purpose if purpose else ""),
            tool=name,
        )
    return path


class Result:
    __slots__ = ("cmd", "rc", "stdout", "stderr", "duration")

    def __init__(self, cmd, rc, stdout, stderr, duration):
        self.cmd = cmd
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.duration = duration

    def as_dict(self):
        return dict(cmd=self.cmd, rc=self.rc, stdout=self.stdout, stderr=self.stderr)


class Recorder:
    """Collects the commands a task ran (or would run in check mode)."""

    def __init__(self):
        self.commands = []

    def add(self, cmd):
        self.commands.append(" ".join(str(c) for c in cmd))


def run(cmd, check=True, input=None, timeout=None, env=None, cwd=None, msg=None,
        recorder=None, binary=False):
    """Run ``cmd`` (a list). Raise CommandError when ``check`` and rc != 0."""
    cmd = [str(c) for c in cmd]
    if recorder is not None:
        recorder.add(cmd)
    full_env = dict(os.environ)
    full_env["PATH"] = search_path()
    full_env.setdefault("LC_ALL", "C")
    if env:
        full_env.update(env)
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd,
            input=input if (binary or input is None) else input.encode(),
            capture_output=True,
            timeout=timeout,
            env=full_env,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError:
        raise MissingToolError("%s not found on this host" % cmd[0], tool=cmd[0], cmd=cmd)
    except subprocess.TimeoutExpired as exc:
        raise CommandError(
            "%s timed out after %ss" % (msg or cmd[0], timeout), cmd, -1,
            _text(exc.stdout), _text(exc.stderr),
        )
    duration = time.monotonic() - start
    stdout = proc.stdout if binary else _text(proc.stdout)
    stderr = _text(proc.stderr)
    if check and proc.returncode != 0:
        detail = stderr.strip().splitlines()[-1:] or stdout.strip().splitlines()[-1:] if not binary else []
        raise CommandError(
            "%s failed (rc=%d)%s" % (msg or " ".join(cmd[:2]), proc.returncode,
                                     ": " + detail[0] if detail else ""),
            cmd, proc.returncode, "" if binary else stdout, stderr,
        )
    return Result(cmd, proc.returncode, stdout, stderr, duration)


def close_process(proc):
    """Kill ``proc`` (a ``subprocess.Popen``) if it still runs, reap it, close its pipes."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError, ValueError):
                pipe.close()


def _text(data):
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data
