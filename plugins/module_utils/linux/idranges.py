# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Isolated id ranges: one range of its own per container (``idmap_isolated``), like
Incus' ``security.idmap.isolated``, so that no two containers of a host share a host uid
(and the per-uid key quota of one is not the other's).

The ranges are cut from a second range of root in ``/etc/subuid`` and ``/etc/subgid``
(the pool; the host role writes ``root:1100000000:1073741824``, 16384 ranges of 65536),
the same on every host of the fleet. A container's range is chosen from its name
(``preferred_slot``: the same slot on every host), or the next free one when another
container of this host holds that one; it is kept in spec.json (``idmap`` with
``isolated: true``) and goes with the container when it moves. Two containers of the
fleet may hold the same range on different hosts (nothing fleet-wide is consulted when a
range is chosen): that is found where they would meet, and a move there is refused by the
destination's preflight, naming the container that holds it (``held_by``).
"""

from __future__ import annotations

import hashlib
import json
import os

from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import idmap as _idmap
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError


def _text(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


def isolated_pool(subuid=_idmap.SUBUID, subgid=_idmap.SUBGID, size=_idmap.SIZE):
    """{uid, gid, slots}: where isolated ranges are cut from - the largest range of root in
    each file other than the shared one (``host_range``'s), in ``size`` slots.
    ValidationError naming ``idmap_isolated`` when a file has none."""
    out = {}
    for path, key in ((subuid, "uid"), (subgid, "gid")):
        subids = _idmap.parse_subids(_text(path))
        shared = next((start for start, count in subids if count >= size), None)  # host_range's
        ranges = [(c, s) for s, c in subids if s != shared and c >= size]
        if not ranges:
            raise ValidationError(
                "idmap_isolated", "isolated id ranges need a second range of root in %s (a line "
                "root:<start>:<count>, count a multiple of %d, beside the shared one; the host role "
                "writes root:1100000000:1073741824); none found" % (path, size))
        count, start = max(ranges)
        out[key], out[key + "_slots"] = start, count // size
    return dict(uid=out["uid"], gid=out["gid"], slots=min(out["uid_slots"], out["gid_slots"]))


def overlaps(one, other):
    """Whether two idmaps share a host uid or gid."""
    return any(one[k] < other[k] + other["size"] and other[k] < one[k] + one["size"]
               for k in ("uid", "gid"))


def preferred_slot(name, slots):
    """The slot a container called ``name`` gets on every host where it is free: the
    same on every host, so that it is found free again where the container moves."""
    return int(hashlib.sha256(name.encode("utf-8")).hexdigest()[:15], 16) % slots


def allocate_isolated(name, taken, pool, size=_idmap.SIZE):
    """{uid, gid, size, isolated}: container ``name``'s own range, the first free slot of
    ``pool`` from its preferred one on (``taken``: the idmaps of the other containers here)."""
    first = preferred_slot(name, pool["slots"])
    for step in range(pool["slots"]):
        slot = (first + step) % pool["slots"]
        cand = dict(uid=pool["uid"] + slot * size, gid=pool["gid"] + slot * size, size=size,
                    isolated=True)
        if not any(overlaps(cand, other) for other in taken):
            return cand
    raise ValidationError("idmap_isolated", "all %d isolated id ranges of this host are taken"
                          % pool["slots"])


def taken(containers_dir, but=None):
    """{name: idmap} of the containers under ``containers_dir`` (their spec.json), ``but`` one."""
    out = {}
    try:
        names = sorted(os.listdir(containers_dir))
    except FileNotFoundError:
        return out
    for name in names:
        if name == but:
            continue
        try:
            with open(os.path.join(containers_dir, name, "spec.json"), encoding="utf-8") as handle:
                idmap = (json.load(handle) or {}).get("idmap")
        except (OSError, ValueError, AttributeError):
            continue
        if idmap:
            out[name] = idmap
    return out


def held_by(idmap, containers_dir, but=None):
    """Names of the containers here (not ``but``) whose ids overlap isolated ``idmap``."""
    if not (idmap or {}).get("isolated"):
        return []
    return sorted(n for n, other in taken(containers_dir, but).items() if overlaps(idmap, other))
