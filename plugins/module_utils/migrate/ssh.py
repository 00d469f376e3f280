# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The source's SSH link to a migration destination.

One ControlMaster connection (host-to-host key, ``<root>/ssh/config`` when
present) carries everything: the agent session (``_migrate_agent``), rsync,
and for lazy migration the page-server port forwarded over SSH (``-R`` on
the destination's loopback), so every byte between the hosts is
authenticated and encrypted.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import threading
import time

from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.ship import payload
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CommandError, MissingToolError

CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com"
# The agent fences itself when it heard nothing for LEASE seconds; the source pings
# it every HEARTBEAT seconds while the session lives.
LEASE = 8.0
HEARTBEAT = 1.0
# What reaching a busy or rebooting destination can fail with before anything was sent:
# tried again (Link.connect). Authentication, host keys or a missing Python are not.
TRANSIENT = ("timed out", "connection reset", "connection refused", "connection closed",
             "banner exchange", "kex_exchange_identification", "broken pipe", "no route to host",
             "network is unreachable", "connection lost", "no connection after", "no answer to hello")
CONNECT_TIMEOUT = 90


class Link:
    """SSH ControlMaster to ``dest`` plus the agent session on it."""

    def __init__(self, dest, root, ssh_config=None, identity=None, port=None, user=None,
                 python="python3", connect_timeout=10):
        self.dest = dest
        self.python = python
        self.tmp = tempfile.mkdtemp(prefix="ctrhost-ssh-")
        self.control = os.path.join(self.tmp, "cm")
        opts = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=%d" % connect_timeout,
                "-o", "ServerAliveInterval=2", "-o", "ServerAliveCountMax=3",
                "-o", "ControlPath=" + self.control]
        ssh_config = ssh_config or _default(root, "config")
        identity = identity or _default(root, "id_ed25519")
        if ssh_config:
            opts = ["-F", ssh_config] + opts
        if identity:
            opts += ["-i", identity, "-o", "IdentitiesOnly=yes"]
        if port:
            opts += ["-p", str(port)]
        if user:
            opts += ["-l", user]
        self.opts = opts
        self.ssh = _cli.which("ssh")
        if not self.ssh:
            raise MissingToolError("ssh: not found on this host (needed for migration)", tool="ssh")
        self.master = None
        self.agent = None
        self.agent_id = None  # [pid, starttime] of the agent on the destination
        self.write_lock = threading.Lock()
        self.beat = None

    # -- connection -------------------------------------------------------------
    def ssh_cmd(self, *extra):
        return [self.ssh] + self.opts + list(extra)

    def open(self, timeout=20):
        # AES-GCM is the fastest cipher where the CPU has AES instructions (measured
        # ~1.4x chacha20 here); the server's preference list still decides.
        self.master = subprocess.Popen(
            self.ssh_cmd("-o", "ControlMaster=yes", "-c", CIPHERS, "-N", self.dest),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.master.poll() is not None:
                raise CommandError("ssh to %s failed: %s" % (self.dest, self.master.stderr.read()
                                                             .decode("utf-8", "replace").strip()),
                                   self.ssh_cmd(self.dest), self.master.returncode)
            if os.path.exists(self.control) and self.check():
                return self
            time.sleep(0.02)
        self.close()
        raise CommandError("ssh to %s: no connection after %ss" % (self.dest, timeout),
                           self.ssh_cmd(self.dest), -1)

    def connect(self, timeout=CONNECT_TIMEOUT):
        """Open the master connection and start the agent; return the agent's hello.

        Nothing on either host has been touched yet, so a failure to reach the destination
        (time-outs, resets and refusals of a busy or rebooting host, a session cut at its
        start) is tried again until ``timeout`` seconds have passed; any other failure is
        raised at once."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.master is None or self.master.poll() is not None or not self.check():
                    self.reopen(timeout=min(30, max(5, deadline - time.monotonic())))
                return self.start_agent()
            except CommandError as exc:
                text = ("%s %s" % (exc, exc.stderr or "")).lower()
                if time.monotonic() >= deadline or not any(t in text for t in TRANSIENT):
                    raise
                self.drop_agent()
                time.sleep(1)

    def reopen(self, timeout=20):
        """A new master connection after the old one died."""
        if self.master is not None and self.master.poll() is None:
            self.master.kill()
            self.master.wait()
        with contextlib.suppress(OSError):
            os.unlink(self.control)
        return self.open(timeout)

    def check(self):
        return subprocess.run(self.ssh_cmd("-O", "check", self.dest), capture_output=True,
                              check=False).returncode == 0

    def forward_remote(self, remote_port, local_port):
        """Destination's 127.0.0.1:remote_port -> this host's 127.0.0.1:local_port."""
        _cli.run(self.ssh_cmd("-O", "forward", "-R", "127.0.0.1:%d:127.0.0.1:%d"
                              % (remote_port, local_port), self.dest), timeout=20,
                 msg="ssh port forward for the page server")

    def rsync_cmd(self, whole_file=False):
        return ["rsync", "-aHAX", "--numeric-ids", "--delete", "--inplace", "--stats"] + \
            (["--whole-file"] if whole_file else []) + \
            ["-e", " ".join(_quote(c) for c in self.ssh_cmd())]

    def rsync(self, src, dst_path, timeout=3600, whole_file=False, vanished_ok=False):
        """Copy directory ``src``'s content to ``dest:dst_path``; return bytes sent.

        ``vanished_ok``: the tree is still in use (the copy before the freeze), so files
        that vanish while rsync reads (its exit code 24) are expected; the copy in the
        frozen window sends what changed since."""
        if not _cli.which("rsync"):
            raise MissingToolError("rsync: not found on this host (needed for migration)",
                                   tool="rsync")
        cmd = self.rsync_cmd(whole_file) + [src.rstrip("/") + "/",
                                            "%s:%s/" % (self.dest, dst_path.rstrip("/"))]
        result = _cli.run(cmd, timeout=timeout, msg="rsync to %s" % self.dest, check=not vanished_ok)
        if vanished_ok and result.rc not in (0, 24):
            raise CommandError("rsync to %s failed (rc=%d): %s" % (self.dest, result.rc, result.stderr.strip()),
                               cmd, result.rc, result.stdout, result.stderr)
        return _sent_bytes(result.stdout)

    # -- agent ------------------------------------------------------------------
    def start_agent(self):
        from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.agent import BOOTSTRAP
        data = payload()
        self.agent = subprocess.Popen(
            self.ssh_cmd(self.dest, _quote(self.python), "-c", _quote(BOOTSTRAP), str(len(data))),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            self.agent.stdin.write(data)
            self.agent.stdin.flush()
        except OSError as exc:  # the session ended at once (SSH cut, no python there)
            self.agent.wait()
            raise CommandError("migration agent on %s: connection lost at its start (%s)"
                               % (self.dest, exc), ["start_agent"], -1, stderr=self._stderr())
        hello = self._read(30)
        self.agent_id = hello.get("agent")
        stop = threading.Event()
        self.beat = (threading.Thread(target=self._heartbeat, args=(self.agent, stop),
                                      daemon=True), stop)
        self.beat[0].start()
        return hello

    def _heartbeat(self, agent, stop):
        while not stop.wait(HEARTBEAT):
            try:
                with self.write_lock:
                    agent.stdin.write(b'{"op": "ping"}\n')
                    agent.stdin.flush()
            except (OSError, ValueError):
                return

    def _stop_heartbeat(self):
        if self.beat is not None:
            self.beat[1].set()
            self.beat[0].join(timeout=5)
            self.beat = None

    def drop_agent(self):
        """End the agent session at once (no ``bye``): the agent sees its stdin close
        and fences whatever it staged or restored and did not commit."""
        self._stop_heartbeat()
        if self.agent is None:
            return
        with contextlib.suppress(Exception):
            self.agent.stdin.close()
        if self.agent.poll() is None:
            self.agent.kill()
        self.agent.wait()
        self.agent = None

    def call(self, op, timeout=600, **req):
        """One request to the agent; CommandError when the session is gone or times out."""
        if self.agent is None or self.agent.poll() is not None:
            raise CommandError("migration agent on %s is gone" % self.dest, [op], -1,
                               stderr=self._stderr())
        try:
            with self.write_lock:
                self.agent.stdin.write((json.dumps(dict(req, op=op), default=str) + "\n")
                                       .encode())
                self.agent.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise CommandError("migration agent on %s: connection lost (%s)" % (self.dest, exc),
                               [op], -1, stderr=self._stderr())
        return self._read(timeout, op)

    def _read(self, timeout, op="hello"):
        out = self.agent.stdout
        ready, _w, _x = select.select([out], [], [], timeout)
        if not ready:
            raise CommandError("migration agent on %s: no answer to %s within %ss"
                               % (self.dest, op, timeout), [op], -1, stderr=self._stderr())
        line = out.readline()
        if not line:
            raise CommandError("migration agent on %s: connection lost during %s"
                               % (self.dest, op), [op], -1, stderr=self._stderr())
        return json.loads(line)

    def _stderr(self):
        if self.agent is None or self.agent.poll() is None:
            return ""
        with contextlib.suppress(Exception):
            return self.agent.stderr.read().decode("utf-8", "replace")[-2000:]
        return ""

    def close(self):
        self._stop_heartbeat()
        if self.agent is not None:
            with contextlib.suppress(Exception):
                if self.agent.poll() is None:
                    self.agent.stdin.write(b'{"op": "bye"}\n')
                    self.agent.stdin.close()
                    self.agent.wait(timeout=30)
            if self.agent.poll() is None:
                self.agent.kill()
                self.agent.wait()
        if self.master is not None:
            subprocess.run(self.ssh_cmd("-O", "exit", self.dest), capture_output=True, check=False)
            with contextlib.suppress(Exception):
                self.master.wait(timeout=5)
            if self.master.poll() is None:
                self.master.kill()
                self.master.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _default(root, leaf):
    path = os.path.join(root, "ssh", leaf)
    return path if os.path.exists(path) else None


def _quote(text):
    import shlex
    return shlex.quote(text)


def _sent_bytes(stats):
    for line in (stats or "").splitlines():
        if line.startswith("Total bytes sent:"):
            return int(line.split(":")[1].strip().replace(",", "").split()[0])
    return 0
