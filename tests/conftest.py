"""Make the working tree importable as ansible_collections.ctrhost.fleet."""

import os
import sys
import contextlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BASE = os.path.join(ROOT, ".cache", "pytest-collections")
_LINK = os.path.join(_BASE, "ansible_collections", "ctrhost", "fleet")

if not os.path.islink(_LINK):
    os.makedirs(os.path.dirname(_LINK), exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.symlink(ROOT, _LINK)
if _BASE not in sys.path:
    sys.path.insert(0, _BASE)
