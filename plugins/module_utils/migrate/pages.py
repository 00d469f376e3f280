# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The frozen window's page images streamed to the destination while CRIU writes them.

A cold dump spends most of its time writing the memory pages (``pages-N.img``), and
the stream to the destination used to start only once it ended. ``PageStream`` opens a
second channel over the SSH master before the freeze (a small receiver, ``RECEIVER``,
run by the destination's Python, writing under the incoming images directory) and,
from the start of the dump, a thread sends what CRIU appended to each page image since
the last look: CRIU appends to them (splice at the file position) and a file's size
grows only once its bytes are in, so what lies below the size seen is final. After the
dump ``finish`` sends the last bytes and checks the receiver's count; the other images
then go with the rootfs delta through the tar stream (``_migrate_stream``).

Frames: ``<name> <size>\\n`` then ``size`` bytes appended to ``name`` (a page image
name, nothing else); ``END 0\\n`` ends; the receiver answers ``done <bytes>``. The
local images stay where CRIU wrote them: a failure anywhere leaves the source intact.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import subprocess
import threading

from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CommandError
from ansible_collections.ctrhost.fleet.plugins.module_utils.criu.pagefiles import PageFollower

F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20

RECEIVER = r"""
import os, re, sys
base, inp = sys.argv[1], sys.stdin.buffer
files, total = {}, 0
buf = bytearray(1 << 22)
view = memoryview(buf)
sys.stdout.write("ready\n"); sys.stdout.flush()
while True:
    line = inp.readline().split()
    if len(line) != 2:
        sys.exit(3)
    name, left = line[0].decode(), int(line[1])
    if name == "END":
        break
    if not re.match(r"^pages-[0-9]+[.]img$", name):
        sys.exit(4)
    if name not in files:
        files[name] = os.open(os.path.join(base, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    while left:
        n = inp.readinto(view[:min(left, len(buf))])
        if not n:
            sys.exit(3)
        done = 0
        while done < n:
            done += os.write(files[name], view[done:n])
        left -= n
        total += n
for fd in files.values():
    os.close(fd)
sys.stdout.write("done %d\n" % total); sys.stdout.flush()
"""


class PageStream(PageFollower):
    """The page images of a local image directory, streamed into ``remote_dir`` on the
    destination while they are written."""

    ERRORS = (OSError, CommandError)

    def __init__(self, link, remote_dir, interval=0.005):
        super().__init__(None, interval)
        self.link = link
        remote = "exec %s -c %s %s" % (_quote(link.python), _quote(RECEIVER), _quote(remote_dir))
        self.proc = subprocess.Popen(link.ssh_cmd(link.dest, remote), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=dict(os.environ, PATH=_cli.search_path(), LC_ALL="C"))
        self.fd = self.proc.stdin.fileno()
        grow_pipe(self.fd)

    def wait_ready(self, timeout=30):
        """Block until the receiver runs (before the freeze); CommandError otherwise."""
        ready, _w, _x = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            raise self._failed("page receiver on %s did not start within %ss" % (self.link.dest, timeout))

    def ship(self, leaf, fdin, start, size):
        self._write(b"%s %d\n" % (leaf.encode(), size - start))
        while start < size:
            n = self._io(os.sendfile, self.fd, fdin, start, size - start)
            if not n:
                raise CommandError("page stream to %s: %s shrank while sent"
                                   % (self.link.dest, leaf), self.proc.args, -1)
            start += n
        return start

    def finish(self, timeout):
        """After the dump: the last bytes, the end mark, the receiver's count checked.
        Returns {page image: bytes}."""
        self.stop()
        if self.error is not None:
            raise self._failed("page stream to %s failed: %s" % (self.link.dest, self.error))
        self.step()
        self._write(b"END 0\n")
        self.proc.stdin.close()
        self.proc.stdin = None
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise self._failed("page stream to %s timed out after %ss" % (self.link.dest, timeout))
        total = sum(self.done.values())
        if self.proc.returncode != 0 or out.split()[-1:] != [str(total).encode()]:
            raise CommandError("page stream to %s: the receiver wrote %s of %d bytes (rc=%s): %s"
                               % (self.link.dest, out.decode("utf-8", "replace").strip() or "none",
                                  total, self.proc.returncode,
                                  err.decode("utf-8", "replace").strip()[-300:]),
                               self.proc.args, self.proc.returncode or -1)
        return dict(self.done)

    def close(self):
        """Stop the thread and the receiver (after a failure, or when not used)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            if self.proc.poll() is None:
                self.proc.kill()  # a send blocked on a full pipe returns (EPIPE)
            self._thread.join()
        _cli.close_process(self.proc)

    def _failed(self, msg):
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.kill()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self.proc.wait()
        try:
            err = (self.proc.stderr.read() or b"").decode("utf-8", "replace").strip()
        except (OSError, ValueError, AttributeError):
            err = ""
        self.close()
        return CommandError(msg + (": " + err[-300:] if err else ""), self.proc.args, -1,
                            stderr=err)

    def _write(self, data):
        view = memoryview(data)
        while view:
            view = view[self._io(os.write, self.fd, view):]

    def _io(self, func, *args):
        try:
            return func(*args)
        except OSError as exc:
            raise CommandError("page stream to %s: connection lost (%s)" % (self.link.dest, exc),
                               self.proc.args, -1) from exc


def grow_pipe(fd, size=PIPE_SIZE):
    """Give the pipe into ssh ``size`` bytes (fewer, larger writes and reads than the
    default 64 KiB); left as it is when the kernel refuses (``fs.pipe-max-size``)."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, size)


def _quote(text):
    import shlex
    return shlex.quote(text)
