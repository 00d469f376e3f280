# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The id range of unprivileged containers, and template trees shifted into it.

One shared range per fleet (like Incus' default shared map), not one per
container: the ``host`` role writes the same ``root:<base>:<size>`` line to
``/etc/subuid`` and ``/etc/subgid`` of every host, so

* a template is shifted once per host (not once per container) and the
  overlay's lower layer stays shared, as for privileged containers;
* a container's files (its upper layer) keep their owners when they are copied
  to another host: no id translation, the destination only checks that it has
  the same range.

Or, asked per container (``idmap_isolated``), a range of its own cut from a second
range of root (``idranges.isolated_pool``), chosen from the container's name (``allocate_isolated``;
the next free one when that is taken here), kept in spec.json and so across moves. Its
template is shifted for it alone (``templates/<t>/rootfs.<uid>-<gid>-<size>``, removed
with the container).

The price of sharing: the roots of two containers of a host are the same host uid. They
still cannot reach each other: each has its own mount, pid, ipc and network
namespaces, and the directories of a container are not in another's mount
namespace.

A container stores its map in spec.json (``idmap``: uid, gid, size): chosen once
at creation from this host's range, never re-read (the owners in its upper
layer depend on it). A stored spec without ``privileged`` is a container made
before user namespaces existed here: it stays privileged.

Shifting (``ensure_shifted``) copies ``templates/<t>/rootfs`` to
``templates/<t>/rootfs.<uid>-<gid>-<size>`` with every owner moved by the
range's start: modes (setuid/setgid bits set again after the chown), xattrs,
POSIX ACLs (their named ids shifted), file capabilities (v2 made v3 with the
range's root as ``rootid``: the kernel honours v2 only for the host's root),
hard links, symlinks (``lchown``) and times kept. Ids beyond the range become
65534 (nobody), as the kernel shows unmapped ids.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import struct
import uuid

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError

SUBUID = "/etc/subuid"
SUBGID = "/etc/subgid"
SIZE = 65536
OWNERS = ("root", "0")
OVERFLOW = 65534
ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")
CAPS_XATTR = "security.capability"
_ACL_USER, _ACL_GROUP = 0x02, 0x08
_CAPS_V2, _CAPS_V3, _CAPS_MASK = 0x02000000, 0x03000000, 0xFF000000


def parse_subids(text, owners=OWNERS):
    """[(start, count)] of ``owners``' lines of a subuid/subgid file's ``text``."""
    out = []
    for line in (text or "").splitlines():
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] not in owners:
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if start > 0 and count > 0:
            out.append((start, count))
    return out


def _read(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


def _first(path, size):
    for start, count in parse_subids(_read(path)):
        if count >= size:
            return start
    return None


def host_range(subuid=SUBUID, subgid=SUBGID, size=SIZE):
    """{uid, gid, size}: the first ``size`` ids of root's range in ``subuid``/``subgid``.
    ValidationError naming ``privileged`` when a file has none."""
    uid, gid = _first(subuid, size), _first(subgid, size)
    missing = [p for p, v in ((subuid, uid), (subgid, gid)) if v is None]
    if missing:
        raise ValidationError(
            "privileged", "an unprivileged container needs %d subordinate ids of root in %s "
            "(a line root:<start>:<count>, which the host role writes); none found. Run the "
            "host role, or set privileged: true" % (size, " and ".join(missing)))
    return dict(uid=uid, gid=gid, size=size)


def missing_on_host(idmap, subuid=SUBUID, subgid=SUBGID):
    """What this host lacks to run a container with ``idmap`` ([] when nothing)."""
    out = []
    for path, key in ((subuid, "uid"), (subgid, "gid")):
        start, end = idmap[key], idmap[key] + idmap["size"]
        if not any(s <= start and end <= s + c for s, c in parse_subids(_read(path))):
            out.append("%s has no range of root covering %d-%d" % (path, start, end - 1))
    return out


def give_images(image_dir, idmap, within=()):
    """An unprivileged container's checkpoint images (or a lazy restore's work directory)
    made readable by its restored tasks: still root's, but in the group of the range's
    root, with group read (directories: search; sockets: write too), nothing for others.

    CRIU's restored root task opens some images (the time namespace's) before its user
    namespace has its map, as the host's root without capabilities over the files, and
    the others after it became the range's root: only root's files with the range's
    group serve both. Directories above that lie in one of ``within`` (the layout's root,
    its run directory) get search permission for others, not read."""
    gid = idmap["gid"]
    for here, _dirs, files in os.walk(image_dir):
        _open_to_group(here, gid, 0o050)
        for leaf in files:
            path = os.path.join(here, leaf)
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode):
                _open_to_group(path, gid, 0o060 if stat.S_ISSOCK(mode) else 0o040)
    up = os.path.dirname(os.path.abspath(image_dir))
    while any(up == w or up.startswith(w.rstrip("/") + "/") for w in within):
        mode = os.stat(up).st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(up, stat.S_IMODE(mode) | stat.S_IXOTH)
        up = os.path.dirname(up)


def _open_to_group(path, gid, bits):
    os.chown(path, -1, gid, follow_symlinks=False)
    os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) | bits)


def oci_mappings(idmap):
    """``linux.uidMappings`` and ``gidMappings`` of ``idmap``."""
    return ([dict(containerID=0, hostID=idmap["uid"], size=idmap["size"])],
            [dict(containerID=0, hostID=idmap["gid"], size=idmap["size"])])


def of(spec):
    """The idmap of a stored or declared spec, or None (privileged)."""
    return (spec or {}).get("idmap") or None


def blocked_ancestor(path):
    """(directory, mode) of the first of ``path`` and its parents that others may not
    pass through (no o+x), or None."""
    path = os.path.abspath(path)
    chain = []
    while True:
        chain.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for directory in reversed(chain):
        try:
            mode = stat.S_IMODE(os.stat(directory).st_mode)
        except FileNotFoundError:
            return None
        if not mode & stat.S_IXOTH:
            return directory, mode
    return None


def shifted_rootfs(template_rootfs, idmap):
    """Where the tree of ``template_rootfs`` shifted into ``idmap`` lives."""
    return "%s.%d-%d-%d" % (template_rootfs, idmap["uid"], idmap["gid"], idmap["size"])


# -- shifting ------------------------------------------------------------------------------
def _shift_id(value, base, size, back=False):
    if back:
        return value - base if base <= value < base + size else OVERFLOW
    return base + (value if value < size else OVERFLOW)


def shift_acl(data, idmap, back=False):
    """A POSIX ACL xattr value with its named user and group ids shifted."""
    if len(data) < 4 or (len(data) - 4) % 8:
        return data
    out = bytearray(data[:4])
    for off in range(4, len(data), 8):
        tag, perm, ident = struct.unpack_from("<HHI", data, off)
        if tag == _ACL_USER:
            ident = _shift_id(ident, idmap["uid"], idmap["size"], back)
        elif tag == _ACL_GROUP:
            ident = _shift_id(ident, idmap["gid"], idmap["size"], back)
        out += struct.pack("<HHI", tag, perm, ident)
    return bytes(out)


def shift_caps(data, idmap, back=False):
    """A ``security.capability`` value owned by the range's root (v3, ``rootid``)."""
    if len(data) < 4:
        return data
    magic = struct.unpack_from("<I", data)[0]
    if magic & _CAPS_MASK == _CAPS_V2 and len(data) >= 20 and not back:
        return struct.pack("<I", _CAPS_V3 | (magic & ~_CAPS_MASK)) + data[4:20] + \
            struct.pack("<I", idmap["uid"])
    if magic & _CAPS_MASK == _CAPS_V3 and len(data) >= 24:
        root = struct.unpack_from("<I", data, 20)[0]
        if back:
            if root == idmap["uid"]:
                return struct.pack("<I", _CAPS_V2 | (magic & ~_CAPS_MASK)) + data[4:20]
            return data
        return data[:20] + struct.pack("<I", _shift_id(root, idmap["uid"], idmap["size"]))
    return data


def _xattrs(path):
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []
    out = []
    for name in names:
        with contextlib.suppress(OSError):
            out.append((name, os.getxattr(path, name, follow_symlinks=False)))
    return out


def _set_owner(path, st, idmap, back=False, xattrs=None):
    """chown by offset, then mode (chown clears setuid/setgid), xattrs, times."""
    uid = _shift_id(st.st_uid, idmap["uid"], idmap["size"], back)
    gid = _shift_id(st.st_gid, idmap["gid"], idmap["size"], back)
    os.chown(path, uid, gid, follow_symlinks=False)
    link = stat.S_ISLNK(st.st_mode)
    if not link:
        os.chmod(path, stat.S_IMODE(st.st_mode))
    for name, value in xattrs if xattrs is not None else _xattrs(path):
        if name in ACL_XATTRS:
            value = shift_acl(value, idmap, back)
        elif name == CAPS_XATTR:
            value = shift_caps(value, idmap, back)
        with contextlib.suppress(OSError):
            os.setxattr(path, name, value, follow_symlinks=False)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _copy_entry(src, dst, st, links):
    """Make ``dst`` a copy of ``src`` (not its owner); False when it was a hard link."""
    mode = st.st_mode
    if stat.S_ISREG(mode) and st.st_nlink > 1:
        first = links.get((st.st_dev, st.st_ino))
        if first:
            os.link(first, dst)
            return False
        links[(st.st_dev, st.st_ino)] = dst
    if stat.S_ISDIR(mode):
        os.mkdir(dst, 0o700)
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISREG(mode):
        with open(src, "rb") as fin, open(dst, "xb") as fout:
            os.chmod(dst, 0o600)
            while os.sendfile(fout.fileno(), fin.fileno(), None, 1 << 24) > 0:
                pass
    elif stat.S_ISFIFO(mode):
        os.mkfifo(dst, 0o600)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        os.mknod(dst, stat.S_IFMT(mode) | 0o600, st.st_rdev)
    else:  # sockets: nothing to copy
        return False
    return True


def shift_copy(src, dst, idmap):
    """Copy the tree ``src`` to the new ``dst`` with owners shifted into ``idmap``."""
    links, dirs = {}, []
    top = os.lstat(src)
    os.mkdir(dst, 0o700)
    dirs.append((src, dst, top))
    for root, subdirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        target = dst if rel == "." else os.path.join(dst, rel)
        for leaf in subdirs + files:
            path, copy = os.path.join(root, leaf), os.path.join(target, leaf)
            st = os.lstat(path)
            if not _copy_entry(path, copy, st, links):
                continue
            if stat.S_ISDIR(st.st_mode):
                dirs.append((path, copy, st))  # owner and times once filled
            else:
                _set_owner(copy, st, idmap, xattrs=_xattrs(path))
    for path, copy, st in reversed(dirs):
        _set_owner(copy, st, idmap, xattrs=_xattrs(path))


def shift_in_place(path, idmap, back=False):
    """Move every owner below ``path`` into ``idmap`` (``back``: out of it), in place:
    a container's upper layer when it turns unprivileged (or privileged)."""
    seen = set()
    for root, subdirs, files in os.walk(path, topdown=False):
        for leaf in files + subdirs:
            entry = os.path.join(root, leaf)
            st = os.lstat(entry)
            if (st.st_dev, st.st_ino) in seen:
                continue
            if st.st_nlink > 1:
                seen.add((st.st_dev, st.st_ino))
            _set_owner(entry, st, idmap, back)
    _set_owner(path, os.lstat(path), idmap, back)


def ensure_shifted(template_rootfs, idmap, recorder=None):
    """The shifted tree of ``template_rootfs`` for ``idmap``, made once (under a lock,
    built aside and renamed into place: an interrupted shift leaves no half tree)."""
    target = shifted_rootfs(template_rootfs, idmap)
    if os.path.isdir(target):
        return target
    lock = os.path.join(os.path.dirname(template_rootfs), ".shift.lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        if os.path.isdir(target):
            return target
        if recorder is not None:
            recorder.add(["ctrhost-shift", template_rootfs, target,
                          "%d:%d:%d" % (idmap["uid"], idmap["gid"], idmap["size"])])
        work = "%s.tmp-%s" % (target, uuid.uuid4().hex[:8])
        try:
            shift_copy(template_rootfs, work, idmap)
            os.rename(work, target)
        except BaseException:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
            raise
    return target
