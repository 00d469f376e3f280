# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The library is importable without Ansible: the host's boot helper (ctrhost-autostart) and
the migration agent load it with a bare Python. Checked in a fresh interpreter where any
import of ``ansible`` fails."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = os.path.join(ROOT, ".cache", "pytest-collections")
LIB = os.path.join(ROOT, "plugins", "module_utils")

PROBE = r'''
import importlib, importlib.abc, os, sys
class NoAnsible(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ansible" or name.startswith("ansible."):
            raise ImportError("ansible is not installed here")
sys.meta_path.insert(0, NoAnsible())
sys.path.insert(0, sys.argv[1])
count = 0
bad = []
base = sys.argv[2]
for folder, _dirs, files in sorted(os.walk(base)):
    rel = os.path.relpath(folder, base)
    package = "ansible_collections.ctrhost.fleet.plugins.module_utils"
    if rel != ".":
        package += "." + rel.replace(os.sep, ".")
    for leaf in sorted(files):
        if not leaf.endswith(".py") or leaf == "__init__.py" or (rel, leaf) == ("core", "module.py"):
            continue
        try:
            importlib.import_module(package + "." + leaf[:-3])
            count += 1
        except ImportError as exc:
            bad.append("%s/%s: %s" % (rel, leaf, exc))
print(count)
print("\n".join(bad))
'''


def test_library_imports_without_ansible():
    proc = subprocess.run([sys.executable, "-c", PROBE, BASE, LIB], capture_output=True, text=True,
                          check=True)
    count, _, bad = proc.stdout.partition("\n")
    assert bad.strip() == ""
    # every library file was imported: the walk reaches into the packages
    expected = sum(1 for _d, _s, files in os.walk(LIB) for leaf in files
                   if leaf.endswith(".py") and leaf != "__init__.py") - 1
    assert int(count) == expected > 70
