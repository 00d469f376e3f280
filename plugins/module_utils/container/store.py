# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The per-container ``spec.json`` store and per-container locks."""

from __future__ import annotations

import contextlib
import errno
import fcntl
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

    @contextlib.contextmanager
    def lock(self, name, timeout=DEFAULT_LOCK_TIMEOUT, remove=False):
        """Hold the exclusive lock of ``name``; ConflictError after ``timeout`` s.

        ``remove`` unlinks the lock file on release (used when the container is
        removed). Waiters re-check the inode after locking, so unlinking while
        holding the lock is safe.
        """
        path = self.lock_path(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        deadline = time.monotonic() + timeout
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            if _flock(fd, deadline):
                try:
                    same = os.fstat(fd).st_ino == os.stat(path).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)  # the file was removed while we waited: take the new one
                continue
            os.close(fd)
            raise ConflictError(
                "name: container %s is busy (another task holds %s for more than %ss)"
                % (name, path, timeout), field="name", lock=path)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, ("%d\n" % os.getpid()).encode())
            yield path
        finally:
            if remove:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _flock(fd, deadline):
    delay = 0.01
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
