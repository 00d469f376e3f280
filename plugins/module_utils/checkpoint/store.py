# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checkpoints kept on a host: their ids, where they are (``checkpoints/<name>/<id>/``
with ``checkpoint.json``), listing, lookup, pruning, sizes, and the modes that keep the
images root's."""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import shutil

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.atomic import read_json
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import NotFoundError, ValidationError

META_FILE = "checkpoint.json"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def default_id(now=None):
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ")


def validate_id(value, field="id"):
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ValidationError(field, "expected 1-64 characters [A-Za-z0-9_.-] starting with a "
                              "letter or digit (default: a UTC timestamp), got %r" % (value,))
    return value


def list_checkpoints(layout, name):
    """Complete checkpoints of ``name``, oldest first: [checkpoint.json + path]."""
    base = layout.checkpoint_dir(name)
    out = []
    for entry in sorted(os.listdir(base)) if os.path.isdir(base) else ():
        if entry.startswith(".") or not os.path.isdir(os.path.join(base, entry)):
            continue
        meta = read_json(os.path.join(base, entry, META_FILE))
        if meta:
            out.append(dict(meta, path=os.path.join(base, entry)))
    out.sort(key=lambda m: (m.get("created") or "", m.get("id") or ""))
    return out


def find(layout, name, cid=None):
    """checkpoint.json (+ path) of checkpoint ``cid`` (newest when None) or NotFoundError."""
    found = list_checkpoints(layout, name)
    if cid is None:
        if not found:
            raise NotFoundError("id: container %s has no checkpoint under %s"
                                % (name, layout.checkpoint_dir(name)), field="id")
        return found[-1]
    for meta in found:
        if meta.get("id") == cid:
            return meta
    raise NotFoundError("id: checkpoint %r of container %s not found (available: %s)"
                        % (cid, name, ", ".join(m["id"] for m in found) or "none"), field="id")


def dir_size(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for leaf in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, leaf)).st_size
    return total


def prune(layout, name, keep, exclude=(), check_mode=False):
    """Delete all but the newest ``keep`` checkpoints of ``name``; return deleted ids."""
    if keep is None:
        return []
    found = list_checkpoints(layout, name)
    victims = [m for m in found[:max(0, len(found) - keep)] if m["id"] not in exclude]
    if not check_mode:
        for meta in victims:
            shutil.rmtree(meta["path"])
    return [m["id"] for m in victims]


def root_only_dir(path):
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


def checkpoints_root(layout):
    """``checkpoints/`` made, mode 0711: no one but root lists it, and the root of an
    unprivileged container (whose restored tasks open their images themselves, see
    ``_idmap.give_images``) may pass through to its own, whatever runs beside it."""
    os.makedirs(layout.checkpoints_dir, mode=0o711, exist_ok=True)
    os.chmod(layout.checkpoints_dir, 0o711)


def private_tree(path):
    """Directories 0700 and files 0600 under ``path``: the images hold the container's
    memory (its environment, secrets included) and are for root only."""
    for base, _dirs, files in os.walk(path):
        os.chmod(base, 0o700)
        for leaf in files:
            full = os.path.join(base, leaf)
            if not os.path.islink(full):
                os.chmod(full, 0o600)
