# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``template_info`` and ``checkpoint_info``: what a host keeps, how big and how old it is,
and what uses it.

Read-only. Templates: the recorded ``template.json`` (source, sha256 of the content,
size of the source, created) plus the space the rootfs takes now, its age, the
containers made from it (and which of them were made from an older content of the same
name) and the checkpoints that need it. Checkpoints: the recorded ``checkpoint.json``
plus the space the images take now, their age, whether the container still exists here,
whether the template they need is installed with the same content (restorable here), and
on request a sha256 over the checkpoint's files.
"""

from __future__ import annotations

import datetime
import hashlib
import os

from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint.store import dir_size, list_checkpoints
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.store import ContainerStore
from ansible_collections.ctrhost.fleet.plugins.module_utils.template.lifecycle import list_templates
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.validate import validate_name


def age_seconds(created, now=None):
    """Whole seconds since the ISO time ``created``; None when it cannot be read."""
    if not created:
        return None
    try:
        then = datetime.datetime.fromisoformat(str(created).replace("Z", "+00:00"))
    except ValueError:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=datetime.timezone.utc)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return max(0, int((now - then).total_seconds()))


def tree_sha256(path):
    """sha256 over a directory's regular files and links: sorted relative names, each with
    its content (or link target), so that the same tree gives the same sum anywhere."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for leaf in sorted(files):
            full = os.path.join(root, leaf)
            rel = os.path.relpath(full, path)
            digest.update(rel.encode("utf-8", "surrogateescape") + b"\0")
            if os.path.islink(full):
                digest.update(b"L" + os.readlink(full).encode("utf-8", "surrogateescape") + b"\0")
                continue
            with open(full, "rb") as handle:
                for chunk in iter(lambda h=handle: h.read(1 << 20), b""):
                    digest.update(chunk)
            digest.update(b"\0")
    return digest.hexdigest()


def _wanted(names, field):
    if not names:
        return None
    for i, name in enumerate(names):
        validate_name(name, "%s[%d]" % (field, i) if len(names) > 1 else field)
    return list(dict.fromkeys(names))


def _all_checkpoints(layout, containers=None):
    """Every complete checkpoint of the host (or of ``containers``), oldest first per container."""
    base = layout.checkpoints_dir
    names = containers if containers is not None else (
        sorted(e for e in os.listdir(base) if not e.startswith(".")) if os.path.isdir(base) else [])
    out = []
    for name in names:
        out.extend(list_checkpoints(layout, name))
    return out


def templates(root, names=None, disk_usage=True, now=None):
    """``{templates: [...], missing: [...], count}`` for every (or each named) template."""
    layout = Layout(root)
    wanted = _wanted(names, "name")
    installed = {t["name"]: t for t in list_templates(layout)}
    store = ContainerStore(layout)
    specs = {n: store.load(n) or {} for n in store.names()}
    checkpoints = _all_checkpoints(layout)
    out = []
    for name in wanted if wanted is not None else sorted(installed):
        meta = installed.get(name)
        if meta is None:
            continue
        sha = meta.get("sha256")
        users = [n for n, s in sorted(specs.items()) if s.get("template") == name]
        out.append(dict(
            name=name, sha256=sha, source=meta.get("source"), size=meta.get("size"),
            disk_usage=dir_size(meta["rootfs"]) if disk_usage else None,
            files=meta.get("files"), created=meta.get("created"),
            age_seconds=age_seconds(meta.get("created"), now), path=meta["template_dir"],
            rootfs=meta["rootfs"], users=users,
            users_outdated=[n for n in users if specs[n].get("template_sha256") not in (None, sha)],
            checkpoints=["%s/%s" % (c.get("name"), c.get("id")) for c in checkpoints
                         if c.get("template") == name],
            in_use=bool(users),
        ))
    missing = [n for n in wanted or () if n not in installed]
    return dict(changed=False, templates=out, missing=missing, count=len(out))


def checkpoints(root, names=None, checksum=False, disk_usage=True, now=None):
    """``{checkpoints: [...], count, size}`` for the checkpoints of every (or each named)
    container, oldest first per container."""
    layout = Layout(root)
    wanted = _wanted(names, "name")
    installed = {t["name"]: t.get("sha256") for t in list_templates(layout)}
    store = ContainerStore(layout)
    out = []
    found = _all_checkpoints(layout, wanted)
    newest = {}
    for meta in found:
        newest[meta.get("name")] = meta.get("id")
    for meta in found:
        name, template = meta.get("name"), meta.get("template")
        path = meta["path"]
        out.append(dict(
            id=meta.get("id"), name=name, path=path, created=meta.get("created"),
            age_seconds=age_seconds(meta.get("created"), now), size=meta.get("size"),
            disk_usage=dir_size(path) if disk_usage else None,
            sha256=tree_sha256(path) if checksum else None,
            latest=newest.get(name) == meta.get("id"),
            template=template, template_sha256=meta.get("template_sha256"),
            template_installed=template in installed,
            restorable_here=template in installed and installed[template] == meta.get("template_sha256"),
            container_exists=store.exists(name) if name else False,
            criu_version=meta.get("criu_version"), kernel=meta.get("kernel"), host=meta.get("host"),
            runtime=meta.get("runtime"), options=meta.get("options"),
            rootfs_tar=meta.get("rootfs_tar"),
        ))
    total = sum(c["disk_usage"] if c["disk_usage"] is not None else (c["size"] or 0) for c in out)
    return dict(changed=False, checkpoints=out, count=len(out), total_size=total)


def checkpoint_task(params, check_mode=False):
    """The ``checkpoint_info`` module's entry."""
    return checkpoints(params["root"], names=params["name"], checksum=params["checksum"],
                       disk_usage=params["disk_usage"])


def template_task(params, check_mode=False):
    """The ``template_info`` module's entry."""
    return templates(params["root"], names=params["name"], disk_usage=params["disk_usage"])
