# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A managed host whose Python lacks pyroute2 gets Ansible's missing_required_lib
message naming the library and the interpreter, not a traceback. The host is this machine
through the local connection, with the interpreter of a fresh virtualenv that has no
pyroute2 (importing it there is checked first)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAYBOOK = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")
COLLECTIONS = os.path.join(ROOT, ".cache", "pytest-collections")


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    venv = tmp_path_factory.mktemp("nopyroute2") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    probe = subprocess.run([python, "-c", "import pyroute2"], capture_output=True, check=False)
    assert probe.returncode != 0, "pyroute2 importable in a fresh venv"
    return python


@pytest.mark.parametrize("module, args", [
    ("host_network", dict(bridges=[dict(name="rqbr0", ipv4=["10.98.0.1/24"])])),
])
def test_missing_pyroute2_is_a_clear_failure(tmp_path, bare_python, module, args):
    book = tmp_path / "play.yml"
    out = tmp_path / "result.json"
    book.write_text(json.dumps([dict(hosts="localhost", gather_facts=False, tasks=[
        {"ctrhost.fleet." + module: args, "register": "r", "ignore_errors": True, "check_mode": True},
        {"ansible.builtin.copy": dict(content="{{ r | to_json }}", dest=str(out)), "check_mode": False,
         "vars": dict(ansible_python_interpreter=sys.executable)}])]))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_CONFIG", None)
    proc = subprocess.run([PLAYBOOK, "-i", "localhost,", "-c", "local", "-e",
                           json.dumps(dict(ansible_python_interpreter=bare_python)), str(book)],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.exists(), proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["failed"] and result["library"] == "pyroute2", result
    assert result["msg"].startswith("Failed to import the required Python library (pyroute2)"), result
    assert bare_python in result["msg"] and "Traceback" not in result["msg"]
