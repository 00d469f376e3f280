# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A checkpoint's frozen window made short: the container frozen before CRIU starts,
and its images written to a staging directory on tmpfs when they fit there.

Freezing. CRIU looks at a freezer it asked to freeze only every 100 ms (its seize.c):
even an idle container is still FREEZING at the first look, so every dump paid 100 ms.
``freeze_first`` freezes the cgroup and polls every millisecond (1-5 ms); CRIU then
finds it FROZEN, seizes the tasks at once, and puts the freezer back as it found it
when it leaves them running (``thaw_after``); when it kills them it leaves it thawed.

Images. CRIU writes memory pages by splicing its page pipes into the image file. Into
ext4 that runs at 450-650 MB/s (block allocation and journaling per splice), into tmpfs
at about 1.2 GB/s, and a plain copy from tmpfs to ext4 at 1.5-2.5 GB/s. So the images
are written to ``<run_dir>/images/<name>/<leaf>`` while the container is frozen and
moved to disk after (``unstage``); a migration streams them from there. The stage is
used when the run directory is a tmpfs with room for the images plus ``MARGIN`` and the
host keeps ``RESERVE`` of memory available besides (tmpfs pages are memory); the
images are bounded by the container's memory use, read from its cgroup. A container
that is to stop at its checkpoint is dumped leaving it frozen, and killed only once its
images are on disk (``stop_frozen``): a failed move thaws it, so a failed checkpoint
still leaves it running.

* ``freeze_first(rt, cgroups_path, state)`` / ``thaw_after(rt, name, group)``.
* ``plan(layout, name, leaf, need, allowed)``: (staging directory or None, why not).
* ``expected_bytes(cgroups_path)``: what the dump's pages may take (memory cgroup use).
* ``unstage(src, dst)``: the files of ``src`` into ``dst``, ``src`` removed.
* ``stop_frozen(rt, name, group)``: kill a frozen container and delete it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time

from ansible_collections.ctrhost.fleet.plugins.module_utils.criu.pagefiles import PageFollower, is_page_image

from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import procfs as _procfs
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import sysinfo as _sysinfo
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CtrhostError

STAGE_DIR = "images"
STAGE_MIN = 32 * 1024 * 1024  # smaller images: the move and stop after cost more than they save
MARGIN = 64 * 1024 * 1024  # beyond the memory use: non-memory images, rounding
RESERVE = 512 * 1024 * 1024  # memory the host keeps available while the stage holds images
TMPFS = ("tmpfs",)
FREEZE_TIMEOUT = 2.0  # seconds freeze_first waits for the freezer before leaving it to CRIU
STOP_TIMEOUT = 30.0  # seconds stop_frozen waits for the killed processes before the runtime's delete
_LOCK = threading.Lock()
_RESERVED = {}  # staging directory -> bytes its dump may write (until it is removed)
NOT_ALLOWED = ("a container that stops at its checkpoint is staged only when it was frozen "
               "first and holds no established TCP connection (tcp_established)")


def expected_bytes(cgroups_path):
    """Bytes of memory the container's cgroup charges (page cache included: an upper
    bound of the pages a dump writes); None when unknown."""
    from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.cgroups import Cgroup
    try:
        return Cgroup(cgroups_path).usage().get("memory_current")
    except (CtrhostError, OSError):
        return None


def verdict(run_dir, need, table=None, meminfo=None, reserved=0):
    """(True, None) when images of ``need`` bytes fit on ``run_dir``'s tmpfs besides the
    ``reserved`` bytes other dumps of this process are about to write there, else
    (False, why)."""
    if need is None:
        return False, "the container's memory use is unknown"
    fstype = _procfs.fs_type(run_dir, table)
    if fstype not in TMPFS:
        return False, "%s is on %s, not tmpfs" % (run_dir, fstype or "an unknown file system")
    try:
        st = os.statvfs(run_dir)
        available = (meminfo or _sysinfo.meminfo())["available"]
    except (OSError, CtrhostError) as exc:
        return False, str(exc)
    free = st.f_bavail * st.f_frsize - reserved
    available -= reserved
    if free < need + MARGIN:
        return False, "%s has %d bytes free, the images may take %d" % (run_dir, free, need + MARGIN)
    if available < need + MARGIN + RESERVE:
        return False, "the host has %d bytes of memory available, staging needs %d" \
            % (available, need + MARGIN + RESERVE)
    return True, None


def plan(layout, name, leaf, need, allowed=True):
    """A fresh, empty staging directory for the images of ``name``'s dump ``leaf``, or
    None; and why not (None when staged). ``allowed`` False: the caller cannot keep the
    container as it was until the images are moved (see ``_checkpoint._dump``)."""
    if not allowed:
        return None, NOT_ALLOWED
    base = os.path.join(layout.run_dir, STAGE_DIR)
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
    except OSError as exc:
        return None, str(exc)
    if need is not None and need < STAGE_MIN:
        return None, "the images are small (%d bytes at most): written in place" % need
    path = os.path.join(base, name, leaf)
    with _LOCK:  # several moves at once (container_migrate_batch): each counts the others
        ok, why = verdict(base, need, reserved=sum(_RESERVED.values()))
        if not ok:
            return None, why
        _RESERVED[path] = need + MARGIN
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, mode=0o700)
    os.chmod(os.path.join(base, name), 0o700)
    return path, None


def freeze_first(rt, cgroups_path, state):
    """Freeze a running runc container's cgroup; the ``Cgroup`` when this froze it, else
    None (CRIU then freezes it itself; crun is left to do it its own way)."""
    if rt.name != "runc" or (state or {}).get("status") != "running":
        return None
    from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.cgroups import Cgroup
    try:
        group = Cgroup(cgroups_path)
        return group if group.freeze(FREEZE_TIMEOUT) else None
    except (OSError, CtrhostError):
        with contextlib.suppress(OSError, CtrhostError):
            Cgroup(cgroups_path).thaw()
        return None


def thaw_after(rt, name, group):
    """Thaw what ``freeze_first`` froze; through the runtime when the file write fails."""
    try:
        group.thaw()
    except (OSError, CtrhostError):
        rt.resume(name)


def stop_frozen(rt, name, group):
    """Kill the processes of a container still frozen since its dump (the signal waits
    until the thaw: they run no further instruction), thaw, delete it in the runtime:
    what the runtime's checkpoint does without leave_running."""
    for pid in group.procs():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    thaw_after(rt, name, group)
    deadline = time.monotonic() + STOP_TIMEOUT
    while group.procs() and time.monotonic() < deadline:  # cheaper than asking the runtime
        time.sleep(0.002)
    rt.delete(name, force=True)


def unstage(src, dst):
    """The staged images into ``dst``; the stage removed, also when the move fails."""
    try:
        return move_tree(src, dst)
    finally:
        remove(src)


class Follower(PageFollower):
    """Copies the page images (``pages-*.img``) of a stage into ``dst`` while CRIU still
    writes them, so that most of the move to disk overlaps the dump (tmpfs sets a file's
    size only once its bytes are in). ``finish`` (after the dump succeeded) copies the
    rest and every other image; a failed dump just ``stop``s it."""

    def __init__(self, src, dst, interval=0.005):
        super().__init__(src, interval)
        self.dst = dst
        self.start()

    def ship(self, leaf, fdin, start, size):
        fdout = os.open(os.path.join(self.dst, leaf), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if leaf not in self.done:
                os.ftruncate(fdout, 0)
            os.lseek(fdout, start, os.SEEK_SET)  # sendfile writes at the output's position
            while start < size:
                sent = os.sendfile(fdout, fdin, start, size - start)
                if not sent:
                    break
                start += sent
        finally:
            os.close(fdout)
        return start

    def finish(self):
        """After the dump: the pages' last bytes and the other images into ``dst``; the
        stage removed (also when this fails). Returns the bytes of the stage."""
        self.stop()
        try:
            total = 0
            for leaf in sorted(os.listdir(self.src)):
                source = os.path.join(self.src, leaf)
                if leaf in self.done or is_page_image(leaf):
                    self.take(leaf)
                    total += self.done[leaf]
                    continue
                target = os.path.join(self.dst, leaf)
                if os.path.islink(source):
                    os.symlink(os.readlink(source), target)
                else:
                    shutil.copyfile(source, target)
                    os.chmod(target, 0o600)
                    total += os.path.getsize(target)
            return total
        finally:
            remove(self.src)


def move_tree(src, dst):
    """Regular files and symlinks of ``src`` (flat, as CRIU writes them) copied into
    ``dst`` (``sendfile`` underneath), then ``src`` removed. Returns the bytes copied."""
    os.makedirs(dst, mode=0o700, exist_ok=True)
    total = 0
    for leaf in sorted(os.listdir(src)):
        source, target = os.path.join(src, leaf), os.path.join(dst, leaf)
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
        elif os.path.isfile(source):
            shutil.copyfile(source, target)
            os.chmod(target, 0o600)
            total += os.path.getsize(target)
        else:
            move_tree(source, target)
    shutil.rmtree(src)
    return total


def staged(path):
    """Whether ``path`` is a staging directory (``<run_dir>/images/<name>/<leaf>``)."""
    return bool(path) and os.path.basename(os.path.dirname(os.path.dirname(path))) == STAGE_DIR


def remove(path):
    """Drop an image directory (a stage's container directory too when that is empty)."""
    if not path:
        return
    with _LOCK:
        _RESERVED.pop(path, None)
    shutil.rmtree(path, ignore_errors=True)
    if staged(path):
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(path))
