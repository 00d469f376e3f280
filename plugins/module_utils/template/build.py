# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The builders of an OS template (``_template``): each writes the tree into
``<work>/rootfs`` and returns the metadata it adds (``sha256`` at least).

* ``src`` / ``url``: a tarball, downloaded (Ansible's ``open_url``, checksum verified
  before anything is unpacked) and extracted by ``_tarsafe``;
* ``debootstrap``: a Debian tree; its identity is the suite plus the dpkg package list;
* ``image``: an OCI image copied by skopeo and unpacked by umoci;
* ``busybox``: the host's static busybox and its applets (``busybox.py``).

``BUILDERS`` maps a source type to its builder; ``planned_commands`` lists what check
mode reports.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import urllib.error

from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.template import busybox as _busybox
from ansible_collections.ctrhost.fleet.plugins.module_utils.template import tarsafe as _tarsafe
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CommandError, ValidationError

DOWNLOAD_TIMEOUT = 60
DEBOOTSTRAP_TIMEOUT = 3600

# Module options of a download -> keyword arguments of Ansible's open_url (proxy from the
# *_proxy variables unless use_proxy=false, TLS verified against ca_path or the system's CAs).
URL_OPTIONS = ("headers", "validate_certs", "ca_path", "use_proxy", "url_username", "url_password",
               "force_basic_auth", "client_cert", "client_key")


def _download(url, path, sha256, http=None):
    from ansible.module_utils import urls

    http = dict(http or {})
    timeout = http.pop("timeout", None) or DOWNLOAD_TIMEOUT
    kwargs = {k: v for k, v in http.items() if k in URL_OPTIONS and v is not None}
    digest = hashlib.sha256()
    try:
        resp = urls.open_url(url, timeout=timeout, http_agent="ctrhost.fleet-template", **kwargs)
        with contextlib.closing(resp), open(path, "wb") as out:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, urls.ConnectionError, urls.SSLValidationError, OSError, ValueError) as exc:
        raise ValidationError("url", "download of %s failed: %s" % (url, exc))
    if digest.hexdigest() != sha256:
        raise ValidationError("checksum", "%s has sha256:%s, expected sha256:%s; nothing was "
                              "unpacked" % (url, digest.hexdigest(), sha256))


def _build_tarball(source, work, rootfs, recorder, sha256, http=None):
    """``src`` and ``url``: the tarball is verified, then unpacked by _tarsafe."""
    tarball, field = source.get("src"), source["type"]
    if field == "url":
        tarball = os.path.join(work, "download")
        recorder.add(["download", source["url"], tarball])
        _download(source["url"], tarball, sha256, http)
    stats = _tarsafe.extract(tarball, rootfs, field=field, workdir=work, recorder=recorder)
    if field == "url":
        os.unlink(tarball)
    return dict(sha256=sha256, files=stats)


def _dpkg_packages(rootfs):
    """'name:arch=version' of every installed package, from the tree's dpkg status file."""
    with open(os.path.join(rootfs, "var/lib/dpkg/status"), encoding="utf-8",
              errors="replace") as handle:
        paragraphs = handle.read().split("\n\n")
    packages = []
    for para in paragraphs:
        fields = dict(re.findall(r"^([\w-]+): *(.*)$", para, re.M))
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            packages.append("%s:%s=%s" % (fields["Package"], fields.get("Architecture", ""),
                                          fields.get("Version", "")))
    return sorted(packages)


def debootstrap_command(source, rootfs):
    cmd = [_cli.require("debootstrap", "debootstrap templates"),
           "--variant=%s" % source["variant"]]
    if source["include"]:
        cmd.append("--include=%s" % ",".join(source["include"]))
    cmd += [source["suite"], rootfs]
    if source["mirror"]:
        cmd.append(source["mirror"])
    return cmd


def _build_debootstrap(source, work, rootfs, recorder, _sha256):
    try:
        _cli.run(debootstrap_command(source, rootfs), recorder=recorder,
                 timeout=DEBOOTSTRAP_TIMEOUT, msg="debootstrap %s" % source["suite"])
    except CommandError as exc:
        text = "%s\n%s" % (exc.details.get("stdout", ""), exc.details.get("stderr", ""))
        if any(f in text for f in _UNREACHABLE):
            raise ValidationError(
                "debootstrap.mirror", "this host cannot reach %s (%s); debootstrap needs the "
                "package mirror. Build the template where the mirror is reachable and install "
                "its tarball here with src (a lab host has no way out: build it on the machine)"
                % (source["mirror"] or "debootstrap's default mirror",
                   _last_words(text)), **exc.details) from None
        raise
    packages = _dpkg_packages(rootfs)
    manifest = json.dumps(dict(source=source, packages=packages), sort_keys=True,
                          separators=(",", ":"))
    return dict(sha256=hashlib.sha256(manifest.encode()).hexdigest(), packages=len(packages))


_UNREACHABLE = ("Failed getting release file", "Temporary failure resolving", "Could not resolve",
                "Network is unreachable", "Connection refused", "Connection timed out")


def _last_words(text):
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def image_commands(source, work):
    layout = os.path.join(work, "oci")
    return [
        [_cli.require("skopeo", "image templates"), "copy", "--quiet", source["image"],
         "oci:%s:template" % layout],
        [_cli.require("umoci", "image templates"), "unpack", "--image", "%s:template" % layout,
         os.path.join(work, "bundle")],
    ]


def _build_image(source, work, rootfs, recorder, sha256):
    for cmd in image_commands(source, work):
        _cli.run(cmd, recorder=recorder, timeout=1800, msg=" ".join(cmd[:2]))
    bundle = os.path.join(work, "bundle")
    with open(os.path.join(bundle, "config.json"), encoding="utf-8") as handle:
        process = json.load(handle).get("process", {})
    os.rmdir(rootfs)
    os.rename(os.path.join(bundle, "rootfs"), rootfs)
    for leftover in (bundle, os.path.join(work, "oci")):
        shutil.rmtree(leftover)
    # ``init`` is what a container runs by default (see _ctrspec.default_command).
    return dict(sha256=sha256, init=process.get("args") or None,
                image_config=dict(env=process.get("env", []), cwd=process.get("cwd", "/")))


TARBALL_SOURCES = ("src", "url")
BUILDERS = dict(src=_build_tarball, url=_build_tarball, debootstrap=_build_debootstrap, image=_build_image,
                busybox=_busybox.build)


def planned_commands(source, layout, name):
    work = os.path.join(layout.templates_dir, ".%s.tmp-XXXX" % name)
    if source["type"] == "debootstrap":
        return [debootstrap_command(source, os.path.join(work, "rootfs"))]
    if source["type"] == "image":
        return image_commands(source, work)
    if source["type"] == "url":
        return [["download", source["url"], os.path.join(work, "download")]]
    return []
