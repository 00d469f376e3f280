# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The library shipped to another host: a zip of this collection's module_utils.

The migration agent and the inventory's host report run on a host that need not
have the collection: the caller sends this zip on the command's stdin and a
``python3 -c`` bootstrap imports from it (zipimport). ``payload`` walks the
packages recursively, from a checkout and from AnsiballZ's zip alike (there it
holds what the running module imported). ``payload(entry)`` ships only ``entry``
(a module below module_utils, ``"host.report"``) and what it imports, at module
level or inside functions: the inventory's report to every host on every load.
"""

from __future__ import annotations

import ast
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


def _needs(package, name, data, modules):
    """The modules (keys of ``modules``) that one module's source imports."""
    found = set()
    for node in ast.walk(ast.parse(data)):
        if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith(PKG):
            continue
        for alias in node.names:
            for candidate in ("%s.%s" % (node.module, alias.name), node.module):
                if candidate in modules:
                    found.add(candidate)
                    break
    return found


def payload(entry=None):
    """Zip of this collection's module_utils, subpackages included; with ``entry``, only
    that module and what it needs."""
    from ansible_collections.ctrhost.fleet.plugins import module_utils as pkg
    modules = {}  # dotted module -> (package, file name)
    for package, name in _walk(PKG, list(pkg.__path__)):
        if name.endswith("__init__.py"):  # a subpackage's, named from its parent
            dotted = package + "." + os.path.dirname(name)
        else:
            dotted = package + "." + name[:-3]
        modules[dotted] = (package, name)
    wanted = set(modules)
    if entry is not None:
        todo, wanted = [PKG + "." + entry], set()
        while todo:
            dotted = todo.pop()
            if dotted in wanted:
                continue
            wanted.add(dotted)
            package, name = modules[dotted]
            todo.extend(_needs(package, name, pkgutil.get_data(package, name), modules) - wanted)
            parent = dotted.rpartition(".")[0]
            while parent.startswith(PKG + "."):  # the packages on the way hold an __init__.py
                wanted.add(parent)
                parent = parent.rpartition(".")[0]
    buf = io.BytesIO()
    base = PKG.replace(".", "/")
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for part in _PARENTS:
            zf.writestr(part + "/__init__.py", "")
        zf.writestr(base + "/__init__.py", "")
        for dotted in sorted(wanted):
            package, name = modules[dotted]
            data = pkgutil.get_data(package, name)
            if data is not None:
                folder = package[len(PKG):].lstrip(".").replace(".", "/")
                zf.writestr("/".join(p for p in (base, folder, name) if p), data)
    return buf.getvalue()
