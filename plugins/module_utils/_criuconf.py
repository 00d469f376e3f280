# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""CRIU probes cached on disk, and the CRIU configuration file runc hands to CRIU.

* ``cached(cache_dir, name, key, compute)``: a JSON-able value computed once per
  ``key``, kept in this process and in ``<cache_dir>/<name>.json`` (tmpfs: gone
  at reboot).
* ``probe_key(binary)``: the binary's path, mtime, size and inode plus the
  kernel release: a CRIU verdict holds until one of them changes.
* ``check`` / ``version`` / ``feature``: ``criu check``, ``criu --version``,
  ``criu check --feature X`` through that cache.
* ``write_config(run_dir, criu_path)``: ``<run_dir>/criu/runc.conf``, the file
  every config.json names in its ``org.criu.config`` annotation. It holds
  ``network-lock nftables`` when this CRIU can lock the network with nftables
  (one ruleset instead of many iptables runs); absent otherwise (CRIU's
  iptables default).
"""

from __future__ import annotations

import contextlib
import json
import os

from ansible_collections.ctrhost.fleet.plugins.module_utils import _sysinfo
from ansible_collections.ctrhost.fleet.plugins.module_utils._paths import RUN_DIR

CONFIG_LEAF = os.path.join("criu", "runc.conf")
NFT_FEATURE = "network_lock_nftables"
NFT_LINE = "network-lock nftables\n"
_MEMO = {}


def cache_dir_of(run_dir=None):
    return os.path.join(run_dir or RUN_DIR, "cache")


def config_path(run_dir=None):
    return os.path.join(run_dir or RUN_DIR, CONFIG_LEAF)


def probe_key(binary, base="/"):
    """``path|mtime_ns|size|inode|kernel release`` of ``binary``; None when it cannot be
    stat'ed (then nothing is cached)."""
    try:
        st = os.stat(binary)
    except OSError:
        return None
    return "%s|%s|%s|%s|%s" % (binary, st.st_mtime_ns, st.st_size, st.st_ino,
                               _sysinfo.kernel_release(base))


def _atomic_write(path, text, mode=0o600):
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as handle:
        handle.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def cached(cache_dir, name, key, compute, keep=lambda value: True):
    """``compute()`` once per ``key``: memoised in-process and in ``<cache_dir>/<name>.json``.

    ``keep(value)`` decides whether a fresh value is stored (e.g. not a failure
    that may be transient). An unreadable or stale file is recomputed; a None
    ``key`` (see ``probe_key``) is never cached."""
    if key is None:
        return compute()
    path = os.path.join(cache_dir, "%s.json" % name)
    if (path, key) in _MEMO:
        return _MEMO[(path, key)]
    value, found = None, False
    with contextlib.suppress(OSError, ValueError, AttributeError, KeyError):
        with open(path) as handle:
            saved = json.load(handle)
        if saved.get("key") == key:
            value, found = saved["value"], True
    if not found:
        value = compute()
        if not keep(value):
            return value
        with contextlib.suppress(OSError, TypeError, ValueError):
            _atomic_write(path, json.dumps(dict(key=key, value=value)))
    _MEMO[(path, key)] = value
    return value


def _leaf(binary):
    return binary.strip("/").replace("/", "_")


def check(criu_path, cache_dir=None):
    """(passed, output) of ``criu check``; only a pass is stored on disk."""
    value = cached(cache_dir or cache_dir_of(), "criu-check-%s" % _leaf(criu_path),
                   probe_key(criu_path), lambda: list(_sysinfo.criu_check(criu_path)),
                   keep=lambda v: bool(v[0]))
    return bool(value[0]), value[1]


def version(criu_path, cache_dir=None):
    """``criu --version``'s version string (None when unknown; not stored)."""
    return cached(cache_dir or cache_dir_of(), "criu-version-%s" % _leaf(criu_path),
                  probe_key(criu_path), lambda: _sysinfo.criu_version(criu_path),
                  keep=lambda v: v is not None)


def feature(criu_path, name, cache_dir=None):
    """(True/False/None, output) of ``criu check --feature name``."""
    value = cached(cache_dir or cache_dir_of(), "criu-feature-%s-%s" % (_leaf(criu_path), name),
                   probe_key(criu_path), lambda: list(_sysinfo.criu_feature(criu_path, name)))
    return value[0], value[1]


def write_config(run_dir, criu_path):
    """Write (or remove) ``<run_dir>/criu/runc.conf`` for this CRIU; returns its text or None."""
    path = config_path(run_dir)
    wanted = NFT_LINE if feature(criu_path, NFT_FEATURE, cache_dir_of(run_dir))[0] else None
    try:
        with open(path) as handle:
            current = handle.read()
    except OSError:
        current = None
    if current == wanted:
        return wanted
    if wanted is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    else:
        _atomic_write(path, wanted, mode=0o644)
    return wanted
