# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tool probes (``runc --version``, ``criu check`` ...) cached per process and on disk.

* ``cached(cache_dir, name, key, compute)``: a JSON-able value computed once per
  ``key``, kept in this process and in ``<cache_dir>/<name>.json`` (tmpfs: gone
  at reboot).
* ``probe_key(binary)``: the binary's path, mtime, size and inode plus the
  kernel release: a verdict holds until one of them changes.
"""

from __future__ import annotations

import contextlib
import json
import os

from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import sysinfo as _sysinfo
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.atomic import atomic_write
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import RUN_DIR

_MEMO = {}


def cache_dir_of(run_dir=None):
    return os.path.join(run_dir or RUN_DIR, "cache")


def probe_key(binary, base="/"):
    """``path|mtime_ns|size|inode|kernel release`` of ``binary``; None when it cannot be
    stat'ed (then nothing is cached)."""
    try:
        st = os.stat(binary)
    except OSError:
        return None
    return "%s|%s|%s|%s|%s" % (binary, st.st_mtime_ns, st.st_size, st.st_ino,
                               _sysinfo.kernel_release(base))


def leaf(binary):
    """A file name for ``binary``'s cache entry."""
    return binary.strip("/").replace("/", "_")


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
            atomic_write(path, json.dumps(dict(key=key, value=value)), parents=True)
    _MEMO[(path, key)] = value
    return value
