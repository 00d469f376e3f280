# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The frozen window's transfer: a tar stream into a receiver started before the freeze.

``Receiver`` opens the SSH channel and starts ``tar -x`` on the destination while
the container still runs; inside the frozen window this process only writes tar
headers and ``sendfile``s the files into that channel (no SSH session, no
process start). The source's images stay where CRIU wrote them until the
commit, so a failed transfer leaves a full local copy to resume from.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import select
import stat
import subprocess
import tarfile

from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CommandError, MissingToolError

BLOCK = 512
# Overlay's inode-number hints, meaningless on another host's filesystem (a copy-up
# there records its own); any other xattr (opaque, redirect, security.*) makes the
# delta go by rsync -X.
HINT_XATTRS = frozenset(("trusted.overlay.origin", "trusted.overlay.impure"))


class Receiver:
    """``tar -x`` under ``base`` on the destination, fed over the SSH master."""

    def __init__(self, link, base):
        if not _cli.which("tar"):
            raise MissingToolError("tar: not found on this host (needed for migration)", tool="tar")
        self.link, self.base, self.sent = link, base, 0
        remote = "cd %s && echo ready && exec tar --numeric-owner -xpf -" % _quote(base)
        self.proc = subprocess.Popen(link.ssh_cmd(link.dest, remote), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=dict(os.environ, PATH=_cli.search_path(), LC_ALL="C"))
        self.fd = self.proc.stdin.fileno()
        self._info = tarfile.TarFile(fileobj=io.BytesIO(), mode="w")  # for gettarinfo only

    def wait_ready(self, timeout=30):
        """Block until the destination's tar runs (its session is set up): call before
        the freeze, so that none of that happens inside the frozen window."""
        ready, _w, _x = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            err = self.proc.stderr.read().decode("utf-8", "replace").strip()
            self.close()
            raise CommandError("tar receiver on %s did not start within %ss: %s"
                               % (self.link.dest, timeout, err or "no answer"), self.proc.args, -1,
                               stderr=err)

    def arcname(self, dest_path):
        """``dest_path`` (absolute, on the destination) as a member name under ``base``."""
        rel = posixpath.relpath(dest_path, self.base)
        if rel.startswith(".."):
            raise ValueError("%s is not under %s" % (dest_path, self.base))
        return rel

    def add(self, path, dest_path):
        """Send file, directory, symlink or device ``path`` as ``dest_path`` (no recursion)."""
        info = self._info.gettarinfo(path, self.arcname(dest_path))
        self._write(info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape"))
        if info.isreg() and info.size:
            with open(path, "rb") as handle:
                self._sendfile(handle.fileno(), info.size, path)
            pad = -info.size % BLOCK
            if pad:
                self._write(b"\0" * pad)

    def add_dir_files(self, src, dest_dir, skip=()):
        """Every regular file and symlink directly in ``src`` (CRIU's flat image
        directory; its ``parent`` link names the previous pre-dump, relatively) but
        those in ``skip`` (sent already: ``_migrate_pages``)."""
        for leaf in sorted(os.listdir(src)):
            if leaf in skip:
                continue
            full = os.path.join(src, leaf)
            mode = os.lstat(full).st_mode
            if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
                self.add(full, posixpath.join(dest_dir, leaf))

    def finish(self, timeout):
        """End the archive, wait for the destination's tar; return the bytes sent."""
        self._write(b"\0" * (2 * BLOCK))
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        self.proc.stdin = None  # communicate() only reads stderr now
        try:
            _out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise CommandError("tar stream to %s timed out after %ss" % (self.link.dest, timeout),
                               self.proc.args, -1)
        if self.proc.returncode != 0:
            err = err.decode("utf-8", "replace").strip()
            raise CommandError("tar stream to %s failed (rc=%s): %s"
                               % (self.link.dest, self.proc.returncode,
                                  (err.splitlines() or ["no output"])[-1]),
                               self.proc.args, self.proc.returncode, stderr=err)
        return self.sent

    def close(self):
        """Stop the receiver (after a failure or when it was not used)."""
        _cli.close_process(self.proc)

    def _write(self, data):
        view = memoryview(data)
        while view:
            view = view[self._io(os.write, self.fd, view):]

    def _sendfile(self, src_fd, size, path):
        offset = 0
        while offset < size:
            n = self._io(os.sendfile, self.fd, src_fd, offset, min(size - offset, 1 << 24))
            if n == 0:
                raise CommandError("tar stream to %s: %s shrank while sent" % (self.link.dest, path),
                                   self.proc.args, -1)
            offset += n
        self.sent += size

    def _io(self, func, *args):
        try:
            n = func(*args)
        except OSError as exc:
            self.proc.poll()
            raise CommandError("tar stream to %s: connection lost (%s)" % (self.link.dest, exc),
                               self.proc.args, -1) from exc
        if func is os.write:
            self.sent += n
        return n


def delta(upper, before, after):
    """The rootfs entries changed since the pre-sync (sorted, parents first), or None when
    the tar stream cannot carry the delta exactly (something deleted, xattrs such as
    overlay's opaque marker, hard links): then rsync does (after the stream)."""
    if any(path not in after for path in before):
        return None
    out = []
    for rel in sorted(path for path, state in after.items() if before.get(path) != state):
        full = os.path.join(upper, rel)
        try:
            st = os.lstat(full)
            if set(os.listxattr(full, follow_symlinks=False)) - HINT_XATTRS:
                return None
        except OSError:
            return None
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            return None
        out.append(rel)
    return out


def _quote(text):
    import shlex
    return shlex.quote(text)
