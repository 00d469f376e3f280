# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The library's layers (CONTRIBUTING.md, "Layers"): a file of plugins/module_utils imports
only from its own package or from a lower layer. Every import counts, those inside
functions too."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB = os.path.join(ROOT, "plugins", "module_utils")
PKG = "ansible_collections.ctrhost.fleet.plugins.module_utils"

# The table of CONTRIBUTING.md: package -> layer. Packages of one layer do not import each other.
LAYERS = {
    "core": 0,
    "linux": 1,
    "net": 2, "runtime": 2, "criu": 2,
    "limits": 3, "template": 3,
    "container": 4,
    "checkpoint": 5,
    "host": 6,
    "migrate": 7,
    "fleet": 8,
}


def imported_packages(source):
    """(line, package) of every import of the library in ``source``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PKG):
            rest = node.module[len(PKG):].lstrip(".")
            heads = [rest.split(".")[0]] if rest else [alias.name for alias in node.names]
            for head in heads:
                yield node.lineno, head
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PKG + "."):
                    yield node.lineno, alias.name[len(PKG) + 1:].split(".")[0]


def violations(lib=LIB):
    found = []
    for folder, _dirs, files in os.walk(lib):
        package = os.path.relpath(folder, lib)
        for leaf in sorted(files):
            if not leaf.endswith(".py"):
                continue
            path = os.path.join(folder, leaf)
            if package == ".":
                if leaf != "__init__.py":
                    found.append("%s: a file outside the packages" % leaf)
                continue
            if package not in LAYERS:
                found.append("%s: package %r is not in the layer table" % (path, package))
                continue
            with open(path) as handle:
                for line, other in imported_packages(handle.read()):
                    if other == package:
                        continue
                    if other not in LAYERS:
                        found.append("%s:%d imports %r, which is not a package of the table"
                                     % (path, line, other))
                    elif LAYERS[other] >= LAYERS[package]:
                        found.append("%s:%d: %s (layer %d) imports %s (layer %d)"
                                     % (os.path.relpath(path, ROOT), line, package, LAYERS[package],
                                        other, LAYERS[other]))
    return found


def test_every_import_runs_down_the_layers():
    assert violations() == []


def test_every_package_has_an_empty_init():
    for package in LAYERS:
        init = os.path.join(LIB, package, "__init__.py")
        assert os.path.isfile(init), init
        assert os.path.getsize(init) == 0, init


@pytest.mark.parametrize("planted, expected", [
    ("from %s.migrate import source as _source\n" % PKG, "limits (layer 3) imports migrate (layer 7)"),
    ("def f():\n    from %s.container.lifecycle import ensure\n" % PKG, "limits (layer 3) imports container (layer 4)"),
    ("from %s.template import lifecycle\n" % PKG, "limits (layer 3) imports template (layer 3)"),
])
def test_a_planted_upward_import_is_caught(tmp_path, planted, expected):
    for package in LAYERS:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "limits" / "planted.py").write_text(planted)
    found = violations(str(tmp_path))
    assert len(found) == 1 and expected in found[0], found


def test_contributing_shows_the_same_table_and_every_file():
    """CONTRIBUTING.md's table is this one: every package on its layer, every file named."""
    with open(os.path.join(ROOT, "CONTRIBUTING.md")) as handle:
        rows = [line.split("|") for line in handle if line.startswith("| ") and "/` |" in line]
    table = {}
    for cells in rows:
        layer, package, files = cells[1].strip(), cells[2].strip().strip("`/"), cells[4]
        table[package] = (int(layer), files)
    assert {name: layer for name, (layer, _f) in table.items()} == LAYERS
    for package, (_layer, files) in table.items():
        on_disk = sorted(leaf[:-3] for leaf in os.listdir(os.path.join(LIB, package))
                         if leaf.endswith(".py") and leaf != "__init__.py")
        assert [leaf for leaf in on_disk if "`%s`" % leaf not in files] == [], package
