# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A minimal template built from the container host's own static busybox (the ``busybox``
source of the ``template`` module): a tree of the usual directories, ``/bin/busybox``
and one symbolic link per applet, ``/etc/passwd``, ``/etc/group`` and ``/etc/hostname``.

Its identity (template.json's ``sha256``) is the sha256 of the binary together with the
recipe's version, so hosts with the same busybox build the same template, and a new
busybox (or recipe) is a new content. The binary must be static: the tree holds no
library (Debian: ``busybox-static``; the ``host`` role installs it when asked).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct

from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError

RECIPE = 1  # raise when the tree below changes: every busybox template is rebuilt then
DEFAULT_PATH = "/bin/busybox"
DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "root", "tmp", "run", "var/tmp")
FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hostname": "busybox\n",
}
PT_INTERP = 3


def is_static(path):
    """Whether the ELF file at ``path`` has no program interpreter (no dynamic loader)."""
    with open(path, "rb") as handle:
        head = handle.read(64)
        if head[:4] != b"\x7fELF":
            return False
        wide, order = head[4] == 2, "<" if head[5] == 1 else ">"
        if wide:
            phoff, = struct.unpack_from(order + "Q", head, 32)
            phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
        else:
            phoff, = struct.unpack_from(order + "I", head, 28)
            phentsize, phnum = struct.unpack_from(order + "HH", head, 42)
        handle.seek(phoff)
        table = handle.read(phentsize * phnum)
    return all(struct.unpack_from(order + "I", table, i * phentsize)[0] != PT_INTERP for i in range(phnum))


def normalize(value):
    """The ``busybox`` option (a dict, possibly empty) -> the source template.json records."""
    value = value if isinstance(value, dict) else {}
    unknown = sorted(set(value) - {"path"})
    if unknown:
        raise ValidationError("busybox", "unknown keys %s (expected path)" % ", ".join(unknown))
    path = value.get("path") or DEFAULT_PATH
    if not os.path.isabs(path):
        raise ValidationError("busybox.path", "expected an absolute path, got %r" % path)
    return dict(type="busybox", path=path)


def _binary(source):
    path = source["path"]
    if not os.path.isfile(path):
        raise ValidationError("busybox.path", "%s does not exist on this host (Debian: install busybox-static; "
                                              "the host role does with ctrhost_template_tools)" % path)
    if not is_static(path):
        raise ValidationError("busybox.path", "%s is dynamically linked; a static busybox is needed (Debian: "
                                              "busybox-static)" % path)
    return path


def identity(source):
    """template.json's sha256: the binary's sha256 and the recipe, as one digest."""
    digest = hashlib.sha256()
    with open(_binary(source), "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    manifest = json.dumps(dict(busybox=digest.hexdigest(), recipe=RECIPE), sort_keys=True)
    return hashlib.sha256(manifest.encode()).hexdigest(), digest.hexdigest()


def build(source, work, rootfs, recorder, sha256):
    """The tree into ``rootfs``; returns the metadata it adds."""
    binary = _binary(source)
    wanted, binary_sha256 = identity(source)
    if sha256 and sha256 != wanted:
        raise ValidationError("busybox.path", "%s changed while the template was built" % binary)
    for folder in DIRS:
        os.makedirs(os.path.join(rootfs, folder), mode=0o755, exist_ok=True)
    target = os.path.join(rootfs, "bin", "busybox")
    shutil.copyfile(binary, target)
    os.chmod(target, 0o755)
    listed = _cli.run([target, "--list-full"], recorder=recorder, timeout=60, msg="busybox --list-full")
    applets = 0
    for applet in sorted(set(listed.stdout.split())):
        if "/" not in applet or applet == "bin/busybox" or ".." in applet.split("/"):
            continue
        link = os.path.join(rootfs, applet)
        os.makedirs(os.path.dirname(link), mode=0o755, exist_ok=True)
        if not os.path.lexists(link):
            os.symlink("/bin/busybox", link)
            applets += 1
    for leaf, text in FILES.items():
        with open(os.path.join(rootfs, leaf), "w") as handle:
            handle.write(text)
        os.chmod(os.path.join(rootfs, leaf), 0o644)
    os.chmod(os.path.join(rootfs, "root"), 0o700)
    for leaf in ("tmp", "var/tmp"):
        os.chmod(os.path.join(rootfs, leaf), 0o1777)
    version = (listed.stderr or "").strip().splitlines()[:1]
    return dict(sha256=wanted, busybox=dict(path=binary, sha256=binary_sha256, applets=applets,
                                            recipe=RECIPE, version=version[0] if version else None))
