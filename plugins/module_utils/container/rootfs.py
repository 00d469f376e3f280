# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The overlayfs rootfs of a container.

lower = ``templates/<template>/rootfs`` (shared, never copied, never written),
upper/work = ``containers/<name>/upper`` and ``work``, mount point =
``containers/<name>/rootfs``. Mounting is idempotent; the upper directory
survives an unmount (stop, host reboot), so a remount shows the same files.
Mount and unmount are the system calls (``_syscall``); the ``commands`` result
shows them as the equivalent ``mount``/``umount`` command lines.

An unprivileged container (``idmap``) has the template's tree shifted into its
id range as lower layer (``_idmap.ensure_shifted``: made once per range and host,
shared by every container of that range), and its upper directory owned by the
range's root, so that ``/`` inside belongs to root inside.
"""

from __future__ import annotations

import os
import shutil

from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import idmap as _idmap
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import procfs as _procfs
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import syscall as _syscall
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import (
    CommandError,
    ConflictError,
    NotFoundError,
)


def is_mounted(path, table=None):
    path = os.path.realpath(path)
    return any(m["mount_point"] == path for m in _procfs.mountinfo(table))


class Overlay:
    """The overlay rootfs of one container."""

    def __init__(self, layout, name, template, recorder=None, dry_run=False, idmap=None):
        self.layout = layout
        self.name = name
        self.template = template
        self.recorder = recorder
        self.dry_run = dry_run
        self.idmap = idmap

    @property
    def template_rootfs(self):
        return self.layout.template_rootfs(self.template)

    @property
    def lower(self):
        if self.idmap:
            return _idmap.shifted_rootfs(self.template_rootfs, self.idmap)
        return self.template_rootfs

    @property
    def upper(self):
        return self.layout.container_file(self.name, "upper")

    @property
    def work(self):
        return self.layout.container_file(self.name, "work")

    @property
    def rootfs(self):
        return self.layout.container_file(self.name, "rootfs")

    def is_mounted(self):
        return is_mounted(self.rootfs)

    def mount_options(self):
        return "lowerdir=%s,upperdir=%s,workdir=%s" % (self.lower, self.upper, self.work)

    def mount_command(self):
        return ["mount", "-t", "overlay", "overlay", "-o", self.mount_options(), self.rootfs]

    def _record(self, cmd):
        if self.recorder is not None:
            self.recorder.add(cmd)

    def mount(self):
        """Mount the overlay unless it already is; return True when it mounted."""
        if self.is_mounted():
            return False
        if not os.path.isdir(self.template_rootfs):
            raise NotFoundError("template: rootfs %s of template %s is missing"
                                % (self.template_rootfs, self.template), field="template")
        if self.idmap and not self.dry_run:
            _idmap.ensure_shifted(self.template_rootfs, self.idmap, self.recorder)
        cmd = self.mount_command()
        self._record(cmd)
        if self.dry_run:
            return True
        for path in (self.upper, self.work, self.rootfs):
            os.makedirs(path, mode=0o755, exist_ok=True)
        if self.idmap:
            self.own_upper()
        try:
            _syscall.mount("overlay", self.rootfs, "overlay", 0, self.mount_options())
        except OSError as exc:
            raise CommandError("mount overlay rootfs of %s failed: %s" % (self.name, exc.strerror),
                               cmd, exc.errno, "", exc.strerror) from None
        return True

    def own_upper(self):
        """The upper directory (``/`` inside) owned and moded as the shifted lower's root."""
        top, upper = os.stat(self.lower), os.stat(self.upper)
        if (upper.st_uid, upper.st_gid) != (top.st_uid, top.st_gid):
            os.chown(self.upper, top.st_uid, top.st_gid)
        if upper.st_mode & 0o7777 != top.st_mode & 0o7777:
            os.chmod(self.upper, top.st_mode & 0o7777)

    def umount(self):
        """Unmount if mounted (lazily when busy); return True when it unmounted."""
        if not self.is_mounted():
            return False
        self._record(["umount", self.rootfs])
        if self.dry_run:
            return True
        try:
            _syscall.umount(self.rootfs)
        except OSError as exc:
            if self.is_mounted():
                raise ConflictError("rootfs: cannot unmount %s: %s" % (self.rootfs, exc.strerror),
                                    field="rootfs") from None
        return True

    def remove(self):
        """Unmount and delete upper, work and the mount point."""
        self.umount()
        if self.dry_run:
            return
        if self.is_mounted():  # never delete through a live mount
            raise ConflictError("rootfs: %s is still mounted" % self.rootfs, field="rootfs")
        for path in (self.rootfs, self.work, self.upper):
            if os.path.isdir(path):
                shutil.rmtree(path)
        self.drop_own_lower()

    def drop_own_lower(self):
        """The template's tree shifted for this container alone (an isolated range), deleted."""
        if (self.idmap or {}).get("isolated") and not self.dry_run and os.path.isdir(self.lower):
            shutil.rmtree(self.lower)

    def reset(self):
        """Discard the container's changes (upper/work), e.g. when the template changes."""
        self.umount()
        if self.dry_run:
            return
        for path in (self.work, self.upper):
            if os.path.isdir(path):
                shutil.rmtree(path)
