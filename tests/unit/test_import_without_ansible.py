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
bad = []
for leaf in sorted(os.listdir(sys.argv[2])):
    if leaf.startswith("_") and leaf.endswith(".py") and leaf not in ("__init__.py", "_module.py"):
        try:
            importlib.import_module("ansible_collections.ctrhost.fleet.plugins.module_utils." + leaf[:-3])
        except ImportError as exc:
            bad.append("%s: %s" % (leaf, exc))
print("\n".join(bad))
'''


def test_library_imports_without_ansible():
    proc = subprocess.run([sys.executable, "-c", PROBE, BASE, LIB], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip() == ""
