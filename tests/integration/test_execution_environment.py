# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's meta/execution-environment.yml as ansible-builder reads it: an EE
definition that pulls the built collection is accepted by ``ansible-builder create``, and
``ansible-builder introspect`` of the installed collection finds our Python and system
requirements. ansible-builder lives in a throwaway virtualenv under .cache/venvs/builder
(created on first use, about 15 s)."""

import os
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GALAXY = os.path.join(ROOT, ".venv", "bin", "ansible-galaxy")
BUILDER_VENV = os.path.join(ROOT, ".cache", "venvs", "builder")
BUILDER = os.path.join(BUILDER_VENV, "bin", "ansible-builder")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def builder():
    if not os.access(BUILDER, os.X_OK):
        subprocess.run([sys.executable, "-m", "venv", BUILDER_VENV], check=True)
        subprocess.run([os.path.join(BUILDER_VENV, "bin", "pip"), "install", "-q", "ansible-builder>=3.1,<4"],
                       check=True, timeout=600)
    return BUILDER


def lines(path):
    with open(os.path.join(ROOT, path)) as handle:
        return [ln.strip() for ln in handle if ln.strip() and not ln.startswith("#")]


def test_ansible_builder_accepts_the_collection(tmp_path, builder):
    subprocess.run([GALAXY, "collection", "build", "--force", "--output-path", str(tmp_path), ROOT],
                   check=True, capture_output=True)
    [tarball] = [p for p in os.listdir(tmp_path) if p.endswith(".tar.gz")]
    (tmp_path / "requirements.yml").write_text(yaml.safe_dump(
        dict(collections=[dict(name=tarball, type="file")])))
    (tmp_path / "execution-environment.yml").write_text(yaml.safe_dump(dict(
        version=3, images=dict(base_image=dict(name="quay.io/fedora/fedora:41")),
        dependencies=dict(python_interpreter=dict(package_system="python3.12", python_path="/usr/bin/python3.12"),
                          ansible_core=dict(package_pip="ansible-core>=2.20,<2.22"),
                          ansible_runner=dict(package_pip="ansible-runner"),
                          galaxy="requirements.yml"))))
    created = subprocess.run([builder, "create", "-f", "execution-environment.yml", "-c", "context"],
                             cwd=tmp_path, capture_output=True, text=True, check=False)
    assert created.returncode == 0, created.stdout + created.stderr
    assert (tmp_path / "context" / "Containerfile").exists()
    assert (tmp_path / "context" / "_build" / "requirements.yml").exists()

    # --force, from tmp_path: the repository's ansible.cfg names collections/ where it is installed
    subprocess.run([GALAXY, "collection", "install", "--force", "-p", str(tmp_path / "coll"), str(tmp_path / tarball)],
                   check=True, capture_output=True, cwd=tmp_path,
                   env={k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")})
    found = subprocess.run([builder, "introspect", str(tmp_path / "coll")], capture_output=True, text=True,
                           check=True).stdout
    data = yaml.safe_load(found[found.index("---"):])
    assert not data.get("python")  # the controller side needs no Python package beyond ansible-core
    assert [p.split("#")[0].strip() for p in data["system"]] == lines("meta/ee-bindep.txt")
