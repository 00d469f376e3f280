# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The OCI bundle's ``config.json`` as a file: where it is, read, written, its resources replaced;
the cgroups path every bundle names (``/ctrhost/<host id>/<name>``)."""

from __future__ import annotations

import os
import socket

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.atomic import atomic_write_json, read_json

OCI_VERSION = "1.0.2"
CONFIG_FILE = "config.json"


def host_id():
    """Short host name: the middle part of every cgroups path."""
    return socket.gethostname().split(".")[0] or "localhost"


def cgroups_path(name, host=None):
    return "/ctrhost/%s/%s" % (host or host_id(), name)


def cgroups_path_of(spec, name):
    """The cgroup a stored spec names; ``/ctrhost/-/<name>`` for a spec without one."""
    return spec.get("cgroups_path") or "/ctrhost/-/" + name


def config_path(bundle):
    return os.path.join(bundle, CONFIG_FILE)


def load_config(path):
    """The config at ``path`` (a file or a bundle directory), or None."""
    if os.path.isdir(path):
        path = config_path(path)
    return read_json(path)


def save_config(path, cfg):
    if os.path.isdir(path):
        path = config_path(path)
    atomic_write_json(path, cfg, mode=0o600, durable=False)  # rebuilt from spec.json


def set_resources(cfg, resources):
    """Replace ``linux.resources`` (keeping the device rules) and return ``cfg``."""
    linux = cfg.setdefault("linux", {})
    devices = (linux.get("resources") or {}).get("devices") or [{"allow": False, "access": "rwm"}]
    linux["resources"] = dict(resources or {})
    linux["resources"]["devices"] = devices
    return cfg
