# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation and shipped playbooks, read from the files themselves: every return value
has a sample (or sits under one that has); every module names its requirements; shipped
playbooks set become and never override an inventory ctrhost_* variable at play level;
the built artifact leaves the lab-only playbooks out."""

import glob
import os
import subprocess
import tarfile

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = sorted(glob.glob(os.path.join(ROOT, "plugins", "modules", "*.py")))
LAB_ONLY = ("demo.yml", "network_example.yml")
GALAXY = os.path.join(ROOT, ".venv", "bin", "ansible-galaxy")


def read(path):
    with open(path) as handle:
        return handle.read()


def block(path, name):
    src = read(path)
    start = src.index(name + ' = r"""') + len(name + ' = r"""')
    return yaml.safe_load(src[start:src.index('"""', start)])


def unsampled(values, prefix=""):
    out = []
    for key, spec in (values or {}).items():
        if "sample" in spec:
            continue
        if "contains" in spec:
            out += unsampled(spec["contains"], prefix + key + ".")
            if not all("sample" in c for c in spec["contains"].values()):
                out.append(prefix + key)
        else:
            out.append(prefix + key)
    return out


@pytest.mark.parametrize("path", MODULES, ids=os.path.basename)
def test_every_return_value_has_a_sample(path):
    assert unsampled(block(path, "RETURN")) == []


@pytest.mark.parametrize("path", MODULES, ids=os.path.basename)
def test_every_module_names_its_requirements(path):
    doc = block(path, "DOCUMENTATION")
    assert doc.get("requirements"), "no requirements: in %s" % os.path.basename(path)


def shipped_playbooks():
    return sorted(p for p in glob.glob(os.path.join(ROOT, "playbooks", "*.yml"))
                  if os.path.basename(p) not in LAB_ONLY)


@pytest.mark.parametrize("path", shipped_playbooks(), ids=os.path.basename)
def test_shipped_playbooks_become_and_let_the_inventory_win(path):
    for play in yaml.safe_load(read(path)):
        if "import_playbook" in play:
            continue
        assert play.get("become") is True, "%s: play %r does not set become" % (path, play.get("name"))
        assert not [v for v in play.get("vars") or {} if v.startswith("ctrhost_")], play.get("vars")
        assert "vars_files" not in play


def test_the_artifact_leaves_lab_only_playbooks_out(tmp_path):
    subprocess.run([GALAXY, "collection", "build", "--force", "--output-path", str(tmp_path), ROOT],
                   check=True, capture_output=True)
    [tarball] = glob.glob(str(tmp_path / "*.tar.gz"))
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    playbooks = sorted(n for n in names if n.startswith("playbooks/"))
    assert playbooks == sorted("playbooks/" + os.path.basename(p) for p in shipped_playbooks())
    assert "meta/execution-environment.yml" in names and "plugins/inventory/containers.py" in names
    assert not [n for n in names if n.startswith(("tests/", "scripts/", ".cache", "docs/docsite/rst/.."))]
