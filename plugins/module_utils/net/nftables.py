# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The nftables boundary: libnftables through its official Python binding.

The binding (``python3-nftables`` on Debian/Ubuntu, ``python3-nftables`` or
``nftables`` elsewhere) is a pure-Python ctypes wrapper of ``libnftables.so``.
Distributions install it for the system interpreter only; when Ansible runs
the module under another interpreter (a virtualenv, pyenv) the distribution's
copy is loaded from its standard location, as it works with any Python 3.
Commands go in as nftables' own syntax (one atomic transaction per call),
listings come back as JSON; nothing parses the ``nft`` CLI's text.

libnftables is not thread-safe: its parser (a flex scanner) and netlink buffers are
shared, and two threads in ``nft_run_cmd_from_buffer`` at once crash the process
(SIGSEGV, or flex's "start-condition stack underflow" followed by ``exit(2)``). The
host's boot and shutdown and the batch and parallel paths start, stop and move
containers in threads, so every call into the library holds one process-wide lock.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import (
    CommandError,
    MissingToolError,
)

# Where distributions put the binding for their system interpreter.
SYSTEM_SITES = ("/usr/lib/python3/dist-packages", "/usr/lib64/python3/site-packages",
                "/usr/lib/python3/site-packages")
_HANDLE = []
# Held around every call into libnftables (see above).
LOCK = threading.RLock()


def _import():
    try:
        import nftables  # noqa: F401  (the binding of this interpreter, if any)

        return sys.modules["nftables"]
    except ImportError:
        pass
    for site in SYSTEM_SITES:
        init = os.path.join(site, "nftables", "__init__.py")
        if os.path.exists(init):
            spec = importlib.util.spec_from_file_location(
                "nftables", init, submodule_search_locations=[os.path.dirname(init)])
            module = importlib.util.module_from_spec(spec)
            sys.modules["nftables"] = module
            spec.loader.exec_module(module)
            return module
    raise MissingToolError("the nftables Python binding (python3-nftables) is not installed on this "
                           "host; it filters the containers' bridge ports", tool="python3-nftables")


def handle():
    """The process's libnftables context (JSON output), made once. Use it under LOCK."""
    if not _HANDLE:
        module = _import()
        try:
            nft = module.Nftables()
        except OSError as exc:  # libnftables.so missing
            raise MissingToolError("libnftables cannot be loaded (%s); install nftables" % exc,
                                   tool="libnftables")
        nft.set_json_output(True)
        nft.set_handle_output(False)
        _HANDLE.append(nft)
    return _HANDLE[0]


def run(script, what):
    """Run ``script`` (nftables syntax, several lines) as one transaction."""
    with LOCK:
        rc, out, err = handle().cmd(script)
    if rc != 0:
        raise CommandError("nftables (%s): %s" % (what, (err or out).strip()), ["libnftables", script],
                           rc, out, err)
    return out


def listing(what):
    """The JSON objects of ``list <what>`` (e.g. ``table bridge x``); [] when it does not exist."""
    with LOCK:
        rc, out, err = handle().cmd("list %s" % what)
    if rc != 0:
        if "No such file or directory" in (err or ""):
            return []
        raise CommandError("nftables: list %s: %s" % (what, err.strip()), ["libnftables", "list " + what],
                           rc, out, err)
    return [item for item in json.loads(out or "{}").get("nftables", []) if "metainfo" not in item]
