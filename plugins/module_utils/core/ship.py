# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The library shipped to another host: a zip of this collection's module_utils.

The migration agent and the inventory's host report run on a host that need not
have the collection: the caller sends this zip on the command's stdin and a
``python3 -c`` bootstrap imports from it (zipimport). ``payload`` walks the
packages recursively, from a checkout and from AnsiballZ's zip alike (there it
holds what the running module imported).
"""

from __future__ import annotations

import io
import os
import pkgutil
import zipfile

PKG = "ansible_collections.ctrhost.fleet.plugins.module_utils"
_PARENTS = ("ansible_collections", "ansible_collections/ctrhost",
            "ansible_collections/ctrhost/fleet", "ansible_collections/ctrhost/fleet/plugins")


def _walk(package, paths):
    """(dotted package, module file name) of every module below ``package``."""
    for info in pkgutil.iter_modules(paths):
        if info.ispkg:
            yield package, os.path.join(info.name, "__init__.py")
            sub = [os.path.join(path, info.name) for path in paths]
            yield from _walk(package + "." + info.name, sub)
        else:
            yield package, info.name + ".py"


def payload():
    """Zip of this collection's module_utils, subpackages included."""
    from ansible_collections.ctrhost.fleet.plugins import module_utils as pkg
    buf = io.BytesIO()
    base = PKG.replace(".", "/")
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for part in _PARENTS:
            zf.writestr(part + "/__init__.py", "")
        zf.writestr(base + "/__init__.py", "")
        for package, name in _walk(PKG, list(pkg.__path__)):
            data = pkgutil.get_data(package, name)
            if data is not None:
                folder = package[len(PKG):].lstrip(".").replace(".", "/")
                zf.writestr("/".join(p for p in (base, folder, name) if p), data)
    return buf.getvalue()
