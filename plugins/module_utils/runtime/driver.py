# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wrapper around the OCI runtime CLI (runc by default, crun selectable).

Every call goes through ``_cli.run``. Mutating calls honour ``dry_run``: the
command is recorded (for the ``commands`` result) and not executed, so check
mode reports what would run. Read-only calls (state, list, ps) always run.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import console as _console
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import probecache as _probecache
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import probe as _probe
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import timens as _timens
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime.probe import RUNTIMES
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import (
    CommandError,
    ConflictError,
    MissingToolError,
    NotFoundError,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import RUN_DIR, Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime.detached import DetachedStart


# Fragments of the messages runtimes print when they refuse the host's cgroup
# layout (crun 1.8 on a cgroup v1 / hybrid host).
_CGROUP_REFUSALS = ("cgroupv1", "cgroup v1", "hybrid", "cgroups v1", "unified mode")
_NOT_FOUND = ("does not exist", "not found", "container not exist", "no such file")

PIDS_SUFFIX = ".pids"


def default_state_root(name, run_dir=RUN_DIR):
    return os.path.join(run_dir, "runtime", name)


def runtime_for(layout, name=None, path=None, recorder=None, dry_run=False):
    """The one way to build a ``Runtime``: runtime ``name`` (runc when None) at ``path``
    (PATH and sbin searched when None), its state under ``layout``'s run directory
    (``<run_dir>/runtime/<name>``), its probes cached in ``<run_dir>/cache``."""
    name = name or "runc"
    return Runtime(name, path=path, state_root=os.path.join(layout.runtime_root, name),
                   recorder=recorder, dry_run=dry_run,
                   cache_dir=_probecache.cache_dir_of(layout.run_dir))


class Runtime(DetachedStart):
    """One OCI runtime binary with its own state root (detached starts and their console
    loggers: ``_runtime_console.DetachedStart``)."""

    def __init__(self, name="runc", path=None, state_root=None, recorder=None, dry_run=False,
                 cache_dir=None):
        if name not in RUNTIMES:
            raise MissingToolError(
                "runtime: expected one of %s, got %r" % (", ".join(RUNTIMES), name), tool=name)
        self.name = name
        self.path = path
        self.state_root = state_root or default_state_root(name)
        self.recorder = recorder
        self.dry_run = dry_run
        self._binary = None
        self.cache_dir = cache_dir or os.path.join(RUN_DIR, "cache")

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

    def command(self, args):
        """The argv of runtime sub-command ``args``; ``run``/``create`` start in a new time
        namespace (see ``_timens``)."""
        own = Layout.timens_path(args[-1]) if args[0] in _timens.BIRTH_VERBS else None
        return _timens.birth_argv(args[0], self.cache_dir, own=own) + self.base_cmd() + list(args)

    def _run(self, args, mutating=True, check=True, input=None, timeout=120, msg=None, base=None):
        cmd = base + list(args) if base else self.command(args)
        if mutating and self.dry_run:
            self.record(cmd)
            return None
        try:
            return _cli.run(cmd, check=check, input=input, timeout=timeout, msg=msg,
                            recorder=self.recorder if mutating else None)
        except CommandError as exc:
            raise self.explain(exc, args)

    def explain(self, exc, args):
        """``exc`` of runtime command ``args`` turned into what it means (crun refusing the
        cgroup layout, an unknown container), or ``exc`` itself."""
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

    # -- read -------------------------------------------------------------
    def version_text(self):
        """``<runtime> --version`` output, run once per binary (cached in this process
        and on disk under the cache dir, keyed by the binary's path, mtime, size, inode)."""
        return probe_version(self.binary, self.cache_dir)

    def info(self):
        """{path, version, commit, spec, build_features, error} as ``probe.runtime_info``."""
        text = self.version_text()
        info = _probe.parse_runtime_version(text)
        info.update(path=self.binary,
                    error=None if info["version"] else "no version in %r" % text[:200])
        return info

    def check_usable(self):
        """Fail (MissingToolError naming ``runtime``) when the runtime is missing or
        refuses this host; before anything is written."""
        from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import sysinfo as _sysinfo

        self.binary  # noqa: B018 - raises MissingToolError naming the runtime
        usable, reason = _probe.runtime_usable(self.name, self.info(), _sysinfo.cgroup_layout())
        if not usable:
            raise MissingToolError("runtime: %s cannot run containers on this host: %s"
                                   % (self.name, reason), field="runtime", tool=self.name)

    def wait_stopped(self, cid, timeout):
        """True once ``cid`` is stopped or gone, False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.state(cid)
            if st is None or st["status"] == "stopped":
                return True
            time.sleep(0.05)
        return False

    def has_seccomp(self):
        """Whether the runtime was built with seccomp (runc prints its libseccomp
        version, crun a +SECCOMP flag)."""
        text = self.version_text()
        return "libseccomp" in text or "+SECCOMP" in text

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
    def create(self, cid, bundle, log_path, pid_file=None, terminal=False):
        args = ["create", "--bundle", bundle]
        if pid_file:
            args += ["--pid-file", pid_file]
        return self.spawn(args + [cid], log_path, terminal=terminal)

    def run(self, cid, bundle, log_path, detached=True, pid_file=None, terminal=False):
        args = ["run", "--bundle", bundle] + (["--detach"] if detached else [])
        if pid_file:
            args += ["--pid-file", pid_file]
            if not self.dry_run:
                os.makedirs(os.path.dirname(pid_file), mode=0o700, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(pid_file)
        args.append(cid)
        if detached:
            return self.spawn(args, log_path, terminal=terminal)
        return self._run(args, timeout=None)

    def pid_file(self, cid):
        """Where ``run``/``create`` callers may ask the runtime to write the init pid."""
        return os.path.join(self.state_root.rstrip("/") + PIDS_SUFFIX, cid)

    def read_pid(self, cid):
        """The pid the runtime wrote to ``pid_file(cid)`` if that process lives, else None."""
        try:
            with open(self.pid_file(cid)) as handle:
                pid = int(handle.read().strip())
        except (OSError, ValueError):
            return None
        return pid if _console.start_time(pid) is not None else None

    def start(self, cid):
        return self._run(["start", cid])

    def kill(self, cid, signal="TERM", all_processes=False):
        args = ["kill"] + (["--all"] if all_processes else []) + [cid, signal]
        return self._run(args, timeout=30)

    def delete(self, cid, force=False):
        """Delete the container and kill its console logger."""
        result = self._run(["delete"] + (["--force"] if force else []) + [cid], timeout=60)
        self.forget(cid)
        return result

    def forget(self, cid):
        """Kill ``cid``'s console logger and drop its logger and pid files (also when the
        runtime no longer knows ``cid``, e.g. after a checkpoint without leave_running)."""
        if not self.dry_run:
            self.stop_logger(cid)
            with contextlib.suppress(OSError):
                os.unlink(self.pid_file(cid))

    def pause(self, cid, attempts=3):
        """Freeze ``cid``. A cgroup v1 freezer can stay FREEZING under load (runc then says
        "unable to freeze" and thaws it back), which several migrations at once make
        likelier: tried again, ``attempts`` times in all."""
        for attempt in range(attempts):
            try:
                return self._run(["pause", cid], timeout=60)
            except CommandError as exc:
                if attempt + 1 >= attempts or "unable to freeze" not in (exc.stderr or "") + (exc.stdout or ""):
                    raise
                time.sleep(0.05)

    def resume(self, cid):
        return self._run(["resume", cid], timeout=60)

    def update(self, cid, resources):
        """Apply OCI ``linux.resources`` live (``update --resources -``)."""
        return self._run(["update", "--resources", "-", cid], input=json.dumps(resources),
                         timeout=60, msg="%s update %s" % (self.name, cid))

    def exec(self, cid, args, env=None, cwd=None, input=None, timeout=120, check=True,
             detach=False):
        """Run ``args`` in the container, time namespace too; wait unless ``detach``."""
        cmd = ["exec"] + (["--detach"] if detach else [])
        for key, value in sorted((env or {}).items()):
            cmd += ["--env", "%s=%s" % (key, value)]
        if cwd:
            cmd += ["--cwd", cwd]
        cmd += [cid] + list(args)
        if self.dry_run:
            self.record(self.base_cmd() + cmd)
            return None
        return self._run(cmd, mutating=False, check=check, input=input, timeout=timeout,
                         base=_timens.exec_argv(self.name, self.base_cmd(), cid))

    def require_state(self, cid, *allowed):
        st = self.state(cid)
        status = st["status"] if st else "absent"
        if allowed and status not in allowed:
            raise ConflictError("%s: container %s is %s, expected %s"
                                % (self.name, cid, status, " or ".join(allowed)), status=status)
        return st


def probe_version(binary, cache_dir=None):
    """``binary --version`` output, cached per process and on disk (``_probecache``);
    only a successful probe is kept."""
    def probe():
        result = _cli.run([binary, "--version"], check=False, timeout=15)
        return dict(text=result.stdout + result.stderr, ok=result.rc == 0)

    value = _probecache.cached(cache_dir or _probecache.cache_dir_of(RUN_DIR),
                               "version-%s" % _probecache.leaf(binary), _probecache.probe_key(binary),
                               probe, keep=lambda v: v["ok"])
    return value["text"]
