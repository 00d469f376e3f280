# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wrapper around the OCI runtime CLI (runc by default, crun selectable).

Every call goes through ``_cli.run``. Mutating calls honour ``dry_run``: the
command is recorded (for the ``commands`` result) and not executed, so check
mode reports what would run. Read-only calls (state, list, ps) always run.
"""

from __future__ import annotations

import json
import os

from ansible_collections.ctrhost.fleet.plugins.module_utils import _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils._errors import (
    CommandError,
    ConflictError,
    MissingToolError,
    NotFoundError,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils._paths import RUN_DIR

RUNTIMES = ("runc", "crun")

# Fragments of the messages runtimes print when they refuse the host's cgroup
# layout (crun 1.8 on a cgroup v1 / hybrid host).
_CGROUP_REFUSALS = ("cgroupv1", "cgroup v1", "hybrid", "cgroups v1", "unified mode")
_NOT_FOUND = ("does not exist", "not found", "container not exist", "no such file")

# A detached container keeps the stdio it inherits from the runtime open for its
# whole life; a pipe would make the caller wait forever. The runtime's stdio is
# therefore sent to the container's log file, read back when the runtime fails.
_DETACH_SH = 'log="$1"; shift; exec "$@" </dev/null >>"$log" 2>&1'


def default_state_root(name, run_dir=RUN_DIR):
    return os.path.join(run_dir, "runtime", name)


class Runtime:
    """One OCI runtime binary with its own state root."""

    def __init__(self, name="runc", path=None, state_root=None, recorder=None, dry_run=False):
        if name not in RUNTIMES:
            raise MissingToolError(
                "runtime: expected one of %s, got %r" % (", ".join(RUNTIMES), name), tool=name)
        self.name = name
        self.path = path
        self.state_root = state_root or default_state_root(name)
        self.recorder = recorder
        self.dry_run = dry_run
        self._binary = None
        self._seccomp = None

    # -- plumbing ---------------------------------------------------------
    @property
    def binary(self):
        if self._binary is None:
            found = _cli.which(self.path or self.name)
            if not found:
                raise MissingToolError(
                    "runtime: %s not found on this host (%s); install it or set runtime_path"
                    % (self.name, self.path or "searched PATH and sbin directories"),
                    tool=self.name)
            self._binary = found
        return self._binary

    def base_cmd(self):
        """``[binary, --root, state_root]``: prefix for any runtime sub-command."""
        return [self.binary, "--root", self.state_root]

    def record(self, cmd):
        if self.recorder is not None:
            self.recorder.add(cmd)

    def _run(self, args, mutating=True, check=True, input=None, timeout=120, msg=None):
        cmd = self.base_cmd() + list(args)
        if mutating and self.dry_run:
            self.record(cmd)
            return None
        try:
            return _cli.run(cmd, check=check, input=input, timeout=timeout, msg=msg,
                            recorder=self.recorder if mutating else None)
        except CommandError as exc:
            raise self._explain(exc, args)

    def _explain(self, exc, args):
        text = (exc.stderr + "\n" + exc.stdout).lower()
        if self.name == "crun" and any(f in text for f in _CGROUP_REFUSALS):
            return MissingToolError(
                "runtime: crun refused this host's cgroup layout (cgroup v1 or hybrid); "
                "use runtime=runc here, crun needs a pure cgroup v2 host. %s"
                % exc.stderr.strip()[-300:], tool="crun", cmd=exc.cmd, rc=exc.rc,
                stderr=exc.stderr)
        if any(f in text for f in _NOT_FOUND) and len(args) > 1:
            return NotFoundError("%s: container %s not found in %s (%s)"
                                 % (self.name, args[-1], self.state_root, exc.stderr.strip()),
                                 cmd=exc.cmd, rc=exc.rc, stderr=exc.stderr)
        return exc

    def spawn(self, args, log_path, timeout=120, msg=None):
        """Run a runtime command that leaves a container process behind
        (create, run -d, restore -d) with stdio sent to ``log_path``."""
        cmd = self.base_cmd() + list(args)
        self.record(cmd)
        if self.dry_run:
            return None
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        try:
            return _cli.run(["/bin/sh", "-c", _DETACH_SH, "sh", log_path] + cmd,
                            timeout=timeout, msg=msg or "%s %s" % (self.name, args[0]))
        except CommandError as exc:
            with open(log_path, "rb") as handle:
                handle.seek(offset)
                tail = handle.read().decode("utf-8", "replace")
            exc = CommandError(exc.msg.split(" failed")[0] + " failed: " + _last_line(tail),
                               cmd, exc.rc, "", tail)
            raise self._explain(exc, args)

    # -- read -------------------------------------------------------------
    def has_seccomp(self):
        """Whether the runtime was built with seccomp (runc prints its libseccomp
        version, crun a +SECCOMP flag)."""
        if self._seccomp is None:
            result = _cli.run([self.binary, "--version"], check=False, timeout=15)
            text = result.stdout + result.stderr
            self._seccomp = "libseccomp" in text or "+SECCOMP" in text
        return self._seccomp

    def state(self, cid):
        """The runtime's state dict for ``cid``, or None when it does not know it."""
        if not os.path.isdir(os.path.join(self.state_root, cid)):
            return None
        result = _cli.run(self.base_cmd() + ["state", cid], check=False, timeout=30)
        if result.rc != 0:
            return None
        return json.loads(result.stdout)

    def list(self):
        if not os.path.isdir(self.state_root):
            return []
        result = self._run(["list", "--format", "json"], mutating=False, timeout=30)
        return json.loads(result.stdout or "null") or []

    def ps(self, cid):
        """Host pids of every process in the container."""
        result = self._run(["ps", "--format", "json", cid], mutating=False, timeout=30)
        return json.loads(result.stdout or "null") or []

    # -- lifecycle --------------------------------------------------------
    def create(self, cid, bundle, log_path, pid_file=None):
        args = ["create", "--bundle", bundle]
        if pid_file:
            args += ["--pid-file", pid_file]
        return self.spawn(args + [cid], log_path)

    def run(self, cid, bundle, log_path, detached=True):
        args = ["run", "--bundle", bundle] + (["--detach"] if detached else []) + [cid]
        if detached:
            return self.spawn(args, log_path)
        return self._run(args, timeout=None)

    def start(self, cid):
        return self._run(["start", cid])

    def kill(self, cid, signal="TERM", all_processes=False):
        args = ["kill"] + (["--all"] if all_processes else []) + [cid, signal]
        return self._run(args, timeout=30)

    def delete(self, cid, force=False):
        return self._run(["delete"] + (["--force"] if force else []) + [cid], timeout=60)

    def pause(self, cid):
        return self._run(["pause", cid], timeout=60)

    def resume(self, cid):
        return self._run(["resume", cid], timeout=60)

    def update(self, cid, resources):
        """Apply OCI ``linux.resources`` live (``update --resources -``)."""
        return self._run(["update", "--resources", "-", cid], input=json.dumps(resources),
                         timeout=60, msg="%s update %s" % (self.name, cid))

    def exec(self, cid, args, env=None, cwd=None, input=None, timeout=120, check=True,
             detach=False):
        """Run ``args`` inside the container and wait for it (unless ``detach``)."""
        cmd = ["exec"] + (["--detach"] if detach else [])
        for key, value in sorted((env or {}).items()):
            cmd += ["--env", "%s=%s" % (key, value)]
        if cwd:
            cmd += ["--cwd", cwd]
        cmd += [cid] + list(args)
        if self.dry_run:
            self.record(self.base_cmd() + cmd)
            return None
        return self._run(cmd, mutating=False, check=check, input=input, timeout=timeout)

    def require_state(self, cid, *allowed):
        st = self.state(cid)
        status = st["status"] if st else "absent"
        if allowed and status not in allowed:
            raise ConflictError("%s: container %s is %s, expected %s"
                                % (self.name, cid, status, " or ".join(allowed)), status=status)
        return st


def _last_line(text):
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "no output"
    line = lines[-1]
    try:  # runc --log-format json lines
        return json.loads(line).get("msg", line)
    except ValueError:
        return line
