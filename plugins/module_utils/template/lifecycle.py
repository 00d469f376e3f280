# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""OS templates: install from a source (built by ``_tplbuild``), remove, describe.

A template is ``templates/<name>/rootfs`` plus ``templates/<name>/template.json``::

    {name, source: {type, ...}, sha256, size, created, duration, files, [image_config]}

and, on a host with a subordinate id range for unprivileged containers, the tree
shifted into it, ``templates/<name>/rootfs.<uid>-<gid>-<size>`` (``_idmap``), made
here once so that no container start waits for it.

``sha256`` identifies the content (the same on every host that installed the same thing):

- ``src`` / ``url``: sha256 of the tarball;
- ``image``: digest of the image manifest as the source serves it (``skopeo inspect --raw``);
- ``debootstrap``: sha256 of a canonical JSON manifest made of the debootstrap options and
  the installed packages (name, architecture, version) read from the tree's dpkg status.

Up to date when the recorded source is the same and so is: the tarball's sha256 (``src``), the
declared checksum (``url``; nothing is downloaded), the manifest digest (``image``); for
``debootstrap`` the options alone. An install builds in a temporary directory next to the
target and swaps it in with one rename: a failed install leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import tempfile
import time
import uuid
from datetime import datetime, timezone

from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import idmap as _idmap
from ansible_collections.ctrhost.fleet.plugins.module_utils.template import tarsafe as _tarsafe
from ansible_collections.ctrhost.fleet.plugins.module_utils.template import build as _tplbuild
from ansible_collections.ctrhost.fleet.plugins.module_utils.template import busybox as _busybox
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import (
    ConflictError, NotFoundError, ValidationError)
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.validate import (
    reject_unknown_keys, validate_abs_path, validate_name, validate_sha256, validate_string_list)

# The download options the module passes in ``http`` (its argument spec).
URL_OPTIONS = _tplbuild.URL_OPTIONS
DEBOOTSTRAP_KEYS = ("suite", "mirror", "variant", "include")
DEBOOTSTRAP_VARIANTS = ("minbase", "buildd", "fakechroot")
IMAGE_TRANSPORTS = ("oci-archive:", "oci:", "docker://", "docker-archive:", "dir:")
URL_SCHEMES = ("http", "https", "ftp", "file")


def _sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- validation -------------------------------------------------------------------------

def normalize_source(src=None, url=None, checksum=None, debootstrap=None, image=None, busybox=None):
    """Exactly one source -> its canonical dict (what template.json records)."""
    given = [k for k, v in (("src", src), ("url", url), ("debootstrap", debootstrap),
                            ("image", image), ("busybox", busybox)) if v is not None and v is not False
             and (v or k == "busybox")]
    if len(given) != 1:
        raise ValidationError("src", "exactly one of src, url, debootstrap, image or busybox is required "
                              "(got %s)" % (", ".join(given) or "none"))
    kind = given[0]
    if checksum and kind in ("debootstrap", "image", "busybox"):
        raise ValidationError("checksum", "applies to src and url only, not to %s" % kind)
    if kind == "src":
        source = dict(type="src", src=validate_abs_path(src, "src", must_exist=True, kind="file"))
        if checksum:
            source["checksum"] = "sha256:" + validate_sha256(checksum)
        return source
    if kind == "url":
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        if scheme not in URL_SCHEMES:
            raise ValidationError("url", "%r must start with one of %s"
                                  % (url, ", ".join(s + "://" for s in URL_SCHEMES)))
        if not checksum:
            raise ValidationError("checksum", "is required with url (expected sha256:<64 hex>)")
        return dict(type="url", url=url, checksum="sha256:" + validate_sha256(checksum))
    if kind == "debootstrap":
        reject_unknown_keys(debootstrap, DEBOOTSTRAP_KEYS, "debootstrap")
        suite = debootstrap.get("suite")
        if not suite or not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", str(suite)):
            raise ValidationError("debootstrap.suite", "a suite name such as bookworm is required")
        variant = debootstrap.get("variant") or "minbase"
        if variant not in DEBOOTSTRAP_VARIANTS:
            raise ValidationError("debootstrap.variant", "%r is not one of %s"
                                  % (variant, ", ".join(DEBOOTSTRAP_VARIANTS)))
        mirror = debootstrap.get("mirror")
        if mirror and not re.match(r"^(https?|file)://\S+$", mirror):
            raise ValidationError("debootstrap.mirror", "%r is not an http(s):// or file:// URL"
                                  % mirror)
        include = validate_string_list(debootstrap.get("include"), "debootstrap.include",
                                       r"^[a-z0-9][a-z0-9+.-]+$", "package name")
        return dict(type="debootstrap", suite=str(suite), mirror=mirror or None,
                    variant=variant, include=sorted(set(include)))
    if kind == "busybox":
        return _busybox.normalize(busybox)
    if not isinstance(image, str) or not image.startswith(IMAGE_TRANSPORTS):
        raise ValidationError("image", "%r must be an image reference starting with one of %s"
                              % (image, ", ".join(IMAGE_TRANSPORTS)))
    if not image.startswith("docker://"):
        path = image.split(":", 1)[1]  # oci:/dir:tag and oci-archive:/x.tar[:tag]
        if not any(os.path.isabs(p) and os.path.exists(p) for p in (path, path.rsplit(":", 1)[0])):
            raise ValidationError("image", "%s: %s does not exist (expected an absolute path)"
                                  % (image, path))
    return dict(type="image", image=image)


# --- metadata and users -----------------------------------------------------------------

def read_meta(layout, name):
    """The recorded template.json, or None when the template is not (fully) installed."""
    path = layout.template_meta(name)
    if not os.path.isdir(layout.template_rootfs(name)) or not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def container_users(layout, name):
    """Containers whose spec.json names this template (unreadable specs count as users)."""
    users = []
    for spec in sorted(glob.glob(os.path.join(layout.containers_dir, "*", "spec.json"))):
        container = os.path.basename(os.path.dirname(spec))
        try:
            with open(spec, encoding="utf-8") as handle:
                if json.load(handle).get("template") != name:
                    continue
        except (OSError, ValueError, AttributeError):
            container += " (unreadable spec.json)"
        users.append(container)
    return users


def list_templates(layout):
    """Every installed template: its metadata plus path, rootfs and users."""
    out = []
    if os.path.isdir(layout.templates_dir):
        for name in sorted(os.listdir(layout.templates_dir)):
            meta = None if name.startswith(".") else read_meta(layout, name)
            if meta is not None:
                out.append(_describe(layout, name, meta))
    return out


def get_template(layout, name, field="template"):
    """Metadata of one installed template, or NotFoundError listing the installed ones."""
    validate_name(name, field)
    meta = read_meta(layout, name)
    if meta is None:
        installed = [t["name"] for t in list_templates(layout)]
        raise NotFoundError("%s: template %r is not installed under %s (installed: %s)"
                            % (field, name, layout.templates_dir, ", ".join(installed) or "none"),
                            field=field)
    return _describe(layout, name, meta)


def _describe(layout, name, meta):
    out = dict(meta)
    out.update(name=name, template_dir=layout.template_dir(name), rootfs=layout.template_rootfs(name),
               users=container_users(layout, name))
    return out


# --- desired content identity -----------------------------------------------------------

def _image_digest(image):
    skopeo = _cli.require("skopeo", "image templates")
    raw = _cli.run([skopeo, "inspect", "--raw", image], binary=True, timeout=300,
                   msg="skopeo inspect %s" % image).stdout
    return hashlib.sha256(raw).hexdigest()


def wanted_sha256(source):
    """The content checksum the source will give, or None when only the build tells."""
    if source["type"] == "src":
        digest = _sha256_file(source["src"])
        if source.get("checksum") and source["checksum"] != "sha256:" + digest:
            raise ValidationError("checksum", "%s has sha256:%s, expected %s"
                                  % (source["src"], digest, source["checksum"]))
        return digest
    if source["type"] == "url":
        return source["checksum"].split(":", 1)[1]
    if source["type"] == "image":
        return _image_digest(source["image"])
    if source["type"] == "busybox":
        return _busybox.identity(source)[0]
    return None


# --- install / remove ---------------------------------------------------------------------

def _sibling(path, tag):
    """A fresh, unused name next to ``path`` (same filesystem, hidden)."""
    leaf = ".%s.%s-%s" % (os.path.basename(path), tag, uuid.uuid4().hex[:8])
    return os.path.join(os.path.dirname(path), leaf)


def _swap_in(work, target, recorder):
    """Put ``work`` at ``target`` in one rename (exchange when target exists); drop the old."""
    if not os.path.lexists(target):
        os.rename(work, target)
        return
    if not _tarsafe.exchange_paths(work, target):
        old = _sibling(target, "old")
        os.rename(target, old)
        os.rename(work, target)
        work = old
    _tarsafe.safe_rmtree(work, recorder=recorder)


def _install(layout, name, source, sha256, recorder, started, http=None):
    os.makedirs(layout.templates_dir, mode=0o755, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".%s.tmp-" % name, dir=layout.templates_dir)
    try:
        os.chmod(work, 0o755)
        rootfs = os.path.join(work, "rootfs")
        os.mkdir(rootfs, 0o755)
        kwargs = dict(http=http) if source["type"] == "url" else {}
        extra = _tplbuild.BUILDERS[source["type"]](source, work, rootfs, recorder, sha256, **kwargs)
        meta = dict(name=name, source=source, sha256=extra.pop("sha256"),
                    size=_tarsafe.tree_size(rootfs),
                    created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    duration=round(time.monotonic() - started, 3))
        meta.update(extra)
        idmap = _host_idmap()
        if idmap:  # the tree unprivileged containers use as lower layer, made once here
            _idmap.ensure_shifted(rootfs, idmap, recorder)
        with open(os.path.join(work, "template.json"), "w", encoding="utf-8") as handle:
            json.dump(meta, handle, indent=2, sort_keys=True)
            handle.write("\n")
        _swap_in(work, layout.template_dir(name), recorder)
    except BaseException:
        # Keep the original error; a cleanup failure must not hide it.
        with contextlib.suppress(Exception):
            _tarsafe.safe_rmtree(work)
        raise
    return meta


def _host_idmap():
    """This host's range for unprivileged containers, or None when it has none."""
    try:
        return _idmap.host_range()
    except ValidationError:
        return None


def _result(layout, name, state, changed, before, after, recorder, started, **extra):
    meta = after or {}
    result = dict(changed=changed, name=name, state=state, template_dir=layout.template_dir(name),
                  rootfs=layout.template_rootfs(name), sha256=meta.get("sha256"),
                  size=meta.get("size"), template=after,
                  duration=round(time.monotonic() - started, 3), commands=recorder.commands,
                  diff=dict(before=before or {}, after=after or {}))
    result.update(extra)
    return result


def present(layout, name, source, force=False, check_mode=False, http=None):
    """Install ``source`` as template ``name`` unless the same content is already there."""
    started = time.monotonic()
    recorder = _cli.Recorder()
    validate_name(name)
    before = read_meta(layout, name)
    sha256 = wanted_sha256(source)
    same = (before is not None and before.get("source") == source
            and (sha256 is None or before.get("sha256") == sha256))
    # A tarball is its content: the same sha256 from another path or URL is the same template.
    same = same or bool(before is not None and sha256 and before.get("sha256") == sha256
                        and source["type"] in _tplbuild.TARBALL_SOURCES
                        and (before.get("source") or {}).get("type") in _tplbuild.TARBALL_SOURCES)
    users = container_users(layout, name)
    if same and not force:
        return _result(layout, name, "present", False, before, before, recorder, started,
                       users=users)
    if before is not None and users and not force:
        raise ConflictError(
            "name: template %r is used by container(s) %s; replacing it would change their "
            "lower layer under them: remove them first or set force=true"
            % (name, ", ".join(users)), users=users)
    if check_mode:
        for cmd in _tplbuild.planned_commands(source, layout, name):
            recorder.add(cmd)
        after = dict(name=name, source=source, sha256=sha256)
        return _result(layout, name, "present", True, before, after, recorder, started,
                       users=users)
    after = _install(layout, name, source, sha256, recorder, started, http)
    skipped = after.get("files", {}).get("skipped") or []
    notes = ["skipped %d device node(s) (the runtime provides /dev): %s"
             % (len(skipped), ", ".join(skipped[:10]))] if skipped else []
    return _result(layout, name, "present", True, before, after, recorder, started,
                   users=users, notes=notes)


def absent(layout, name, force=False, check_mode=False):
    """Remove template ``name``; refused while containers use it unless ``force``."""
    started = time.monotonic()
    recorder = _cli.Recorder()
    validate_name(name)
    target = layout.template_dir(name)
    before = read_meta(layout, name)
    if not os.path.lexists(target):
        return _result(layout, name, "absent", False, None, None, recorder, started, users=[])
    users = container_users(layout, name)
    if users and not force:
        raise ConflictError("name: template %r is used by container(s) %s; remove them first "
                            "or set force=true" % (name, ", ".join(users)), users=users)
    if not check_mode:
        doomed = _sibling(target, "del")
        os.rename(target, doomed)
        _tarsafe.safe_rmtree(doomed, recorder=recorder)
    return _result(layout, name, "absent", True, before or dict(name=name), None, recorder,
                   started, users=users)


def ensure(root, name, state="present", src=None, url=None, checksum=None, debootstrap=None,
           image=None, force=False, check_mode=False, http=None, busybox=None):
    """Entry point of the template module; ``http`` holds the download options (URL_OPTIONS
    and timeout), never recorded in template.json."""
    layout = Layout(root)
    validate_name(name)
    if state == "absent":  # source options are ignored: a task may flip only its state
        return absent(layout, name, force=force, check_mode=check_mode)
    if state != "present":
        raise ValidationError("state", "%r is not one of present, absent" % state)
    source = normalize_source(src=src, url=url, checksum=checksum, debootstrap=debootstrap,
                              image=image, busybox=busybox)
    return present(layout, name, source, force=force, check_mode=check_mode, http=http)


def task(params, check_mode=False):
    """The ``template`` module's entry."""
    return ensure(params["root"], params["name"], state=params["state"], src=params["src"],
                  url=params["url"], checksum=params["checksum"], debootstrap=params["debootstrap"],
                  image=params["image"], busybox=params.get("busybox"), force=params["force"],
                  check_mode=check_mode,
                  http={key: params[key] for key in URL_OPTIONS + ("timeout",)})
