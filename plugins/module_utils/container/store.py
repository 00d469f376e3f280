# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The per-container ``spec.json`` store and per-container locks."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.atomic import atomic_write_json, read_json
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ConflictError

SPEC_FILE = "spec.json"
DEFAULT_LOCK_TIMEOUT = 60


def private_dir(path, group=None):
    """Make ``path`` (and its parents) and keep it root's only: 0700. ``group`` (the
    host gid of an unprivileged container's root): 0710 with that group, so that the
    container's root may pass through to its rootfs (the runtime mounts it from
    inside the user namespace) but read nothing in it."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    if group is None:
        os.chmod(path, 0o700)
        return
    os.chown(path, 0, group)
    os.chmod(path, 0o710)


class ContainerStore:
    """Declared specs under ``<root>/containers/<name>/spec.json``."""

    def __init__(self, layout):
        self.layout = layout

    def spec_path(self, name):
        return self.layout.container_file(name, SPEC_FILE)

    def exists(self, name):
        return os.path.isfile(self.spec_path(name))

    def load(self, name):
        """The stored spec of ``name`` or None."""
        return read_json(self.spec_path(name))

    def save(self, name, spec):
        """spec.json (0600, it holds ``secret_env``) in the container's directory (0700)."""
        private_dir(self.layout.container_dir(name), ((spec or {}).get("idmap") or {}).get("gid"))
        atomic_write_json(self.spec_path(name), spec, mode=0o600)

    def names(self):
        """Names of every container with a spec, sorted."""
        try:
            entries = sorted(os.listdir(self.layout.containers_dir))
        except FileNotFoundError:
            return []
        return [n for n in entries if os.path.isfile(self.spec_path(n))]

    def lock_path(self, name):
        return os.path.join(self.layout.locks_dir, name + ".lock")

    def holder(self, name):
        """The note of the task that holds (or last held) the lock of ``name``, or None."""
        try:
            with open(self.lock_path(name), "rb") as handle:
                return parse_note(handle.read())
        except OSError:
            return None

    @contextlib.contextmanager
    def lock(self, name, timeout=DEFAULT_LOCK_TIMEOUT, remove=False, task=None):
        """Hold the exclusive lock of ``name``; ConflictError after ``timeout`` s, naming
        the holder. Yields a ``Held``.

        ``task`` says what the holder does (e.g. ``container_migrate to lab2``): it is
        written into the lock file with the holder's pid and start time, so that a task
        that waits, or gives up waiting, is told who holds the lock. ``Held.previous`` is
        the note the last holder left (``Held.note`` adds to one's own), ``Held.waited``
        whether this task had to wait for it.

        ``remove`` (a bool, or a callable asked on release) unlinks the lock file on
        release (used when the container is removed). Waiters re-check the inode after
        locking, so unlinking while holding the lock is safe; a waiter keeps the note of
        the file it waited on.
        """
        path = self.lock_path(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        deadline = time.monotonic() + timeout
        previous, waited = None, False
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            got, busy = _flock(fd, deadline)
            waited = waited or busy
            if got:
                previous = _read_note(fd) or previous
                try:
                    same = os.fstat(fd).st_ino == os.stat(path).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)  # the file was removed while we waited: take the new one
                continue
            note = _read_note(fd)
            os.close(fd)
            raise ConflictError(
                "name: container %s is busy: %s holds its lock (%s) for more than %ss"
                % (name, describe(note) if note else "another task", path, timeout),
                field="name", lock=path, holder=note)
        held = Held(fd, path, previous, waited, dict(
            pid=os.getpid(), task=task or "a task", since=_now()))
        try:
            held.note()
            yield held
        finally:
            if remove() if callable(remove) else remove:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class Held:
    """A lock held: its ``path``, the ``previous`` holder's note, whether this task
    ``waited``, and this holder's own note (``mine``)."""

    def __init__(self, fd, path, previous, waited, mine):
        self.fd, self.path, self.previous, self.waited, self.mine = fd, path, previous, waited, mine

    def note(self, **fields):
        """Add ``fields`` to this holder's note in the lock file (e.g. where a container went)."""
        self.mine.update(fields)
        data = (json.dumps(self.mine, sort_keys=True) + "\n").encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)


def describe(note):
    """A holder's note in words: ``container_migrate to lab2 (pid 123, since ...)``."""
    return "%s (pid %s, since %s)" % (note.get("task") or "a task", note.get("pid", "?"),
                                      note.get("since") or "?")


def parse_note(data):
    """A lock file's content as a dict (a bare pid from older writers too), or None."""
    text = data.decode("utf-8", "replace").strip()
    if not text:
        return None
    with contextlib.suppress(ValueError):
        note = json.loads(text)
        if isinstance(note, dict):
            return note
        if isinstance(note, int):
            return dict(pid=note)
    return None


def _read_note(fd):
    with contextlib.suppress(OSError):
        return parse_note(os.pread(fd, 4096, 0))
    return None


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _flock(fd, deadline):
    """(locked, whether it had to wait)."""
    delay, busy = 0.01, False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True, busy
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        busy = True
        if time.monotonic() >= deadline:
            return False, busy
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
