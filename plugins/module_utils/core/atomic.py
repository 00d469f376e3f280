# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Atomic file writes: a temporary file beside the target, then one rename.

* ``atomic_write(path, text)``: readers see the old file or the new one, never a part.
  The temporary name holds the pid, the thread and a sequence number, and is created
  exclusively: the threads of one process (a batch of migrations) never share one.
* ``atomic_write_json(path, data)``: the same for JSON (indented, sorted keys).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading

_SEQ = itertools.count()


def atomic_write(path, text, mode=0o600, durable=False, parents=False):
    """Write ``text`` to ``path`` atomically, with permissions ``mode``.

    ``durable``: fsync before the rename (for state that must survive a crash).
    ``parents``: create the missing parent directories (0700) first."""
    directory = os.path.dirname(path) or "."
    if parents:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = None
    while fd is None:
        tmp = os.path.join(directory, ".%s.%d.%d.%d.tmp" % (
            os.path.basename(path), os.getpid(), threading.get_ident(), next(_SEQ)))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:  # left by a dead process that had our pid
            continue
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def json_text(data):
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def atomic_write_json(path, data, mode=0o644, durable=True):
    """Write ``data`` as JSON to ``path`` atomically (fsync'ed unless ``durable=False``, for
    files rebuilt from others: config.json from spec.json)."""
    atomic_write(path, json_text(data), mode=mode, durable=durable)


def read_json(path, default=None):
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return default
