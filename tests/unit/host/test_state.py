"""host.json state machine (library and the host_state module run as a process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.host import state as _hoststate
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ConflictError, ValidationError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
MODULE = os.path.join(ROOT, "plugins", "modules", "host_state.py")


def _file(root):
    with open(os.path.join(root, "host.json")) as handle:
        return json.load(handle)


def test_absent_file_is_active_and_reading_changes_nothing(tmp_path):
    result = _hoststate.ensure(root=str(tmp_path / "r"))
    assert result["state"] == "active" and not result["changed"]
    assert not (tmp_path / "r" / "host.json").exists()


def test_transition_writes_history_and_is_idempotent(tmp_path):
    root = str(tmp_path)
    first = _hoststate.ensure(root=root, state="draining", reason="kernel upgrade")
    assert first["changed"] and first["previous_state"] == "active"
    data = _file(root)
    assert data["state"] == "draining" and data["reason"] == "kernel upgrade"
    assert data["history"] == [dict(first["transition"])]
    assert data["since"] == first["transition"]["at"]
    second = _hoststate.ensure(root=root, state="draining", reason="kernel upgrade")
    assert not second["changed"]
    assert _file(root) == data
    # same state, no reason: nothing changes either
    assert not _hoststate.ensure(root=root, state="draining")["changed"]


def test_same_state_new_reason_is_not_a_transition(tmp_path):
    root = str(tmp_path)
    _hoststate.ensure(root=root, state="cordoned", reason="a")
    result = _hoststate.ensure(root=root, state="cordoned", reason="b")
    assert result["changed"] and result["transition"] is None
    assert _file(root)["reason"] == "b" and len(_file(root)["history"]) == 1


@pytest.mark.parametrize("start, target", [
    ("active", "drained"), ("active", "upgrading"), ("cordoned", "upgrading"), ("cordoned", "drained"),
    ("draining", "upgrading"),
])
def test_forbidden_transitions_leave_the_file_alone(tmp_path, start, target):
    root = str(tmp_path)
    _hoststate.ensure(root=root, state=start, force=True)
    path = tmp_path / "host.json"
    before = path.read_text() if path.exists() else None
    with pytest.raises(ConflictError, match="cannot go from %s to %s" % (start, target)):
        _hoststate.ensure(root=root, state=target)
    assert (path.read_text() if path.exists() else None) == before
    assert _hoststate.ensure(root=root, state=target, force=True)["state"] == target


def test_full_evacuation_cycle_and_history_is_bounded(tmp_path):
    root = str(tmp_path)
    cycle = ["draining", "drained", "upgrading", "active"]
    for _ in range(6):
        for state in cycle:
            assert _hoststate.ensure(root=root, state=state)["changed"]
    history = _file(root)["history"]
    assert len(history) == _hoststate.HISTORY_LENGTH
    assert history[-1]["from"] == "upgrading" and history[-1]["to"] == "active"
    assert all(a["to"] == b["from"] for a, b in zip(history, history[1:], strict=False))


def test_progress_replace_merge_and_delete(tmp_path):
    root = str(tmp_path)
    _hoststate.ensure(root=root, state="draining", progress=dict(placement=dict(a="h2", b="h3"), moved={}))
    assert _hoststate.ensure(root=root, progress_update=dict(moved=dict(a="h2")))["changed"]
    assert not _hoststate.ensure(root=root, progress_update=dict(moved=dict(a="h2")))["changed"]
    _hoststate.ensure(root=root, progress_update=dict(moved=dict(b="h3")))
    assert _file(root)["progress"] == dict(placement=dict(a="h2", b="h3"), moved=dict(a="h2", b="h3"))
    _hoststate.ensure(root=root, progress_update=dict(placement=None))
    assert _file(root)["progress"] == dict(moved=dict(a="h2", b="h3"))
    _hoststate.ensure(root=root, progress={})
    assert _file(root)["progress"] == {}


def test_check_mode_same_changed_and_nothing_written(tmp_path):
    root = str(tmp_path / "new")
    check = _hoststate.ensure(root=root, state="cordoned", check_mode=True)
    assert check["changed"] and check["state"] == "cordoned"
    assert not os.path.exists(root)
    real = _hoststate.ensure(root=root, state="cordoned")
    assert real["changed"] == check["changed"]
    assert check["diff"]["before"] == {} and real["diff"]["after"]["state"] == "cordoned"


def test_validation(tmp_path):
    with pytest.raises(ValidationError, match="state: expected one of"):
        _hoststate.ensure(root=str(tmp_path), state="sleeping")
    with pytest.raises(ValidationError, match="progress_update"):
        _hoststate.ensure(root=str(tmp_path), progress={}, progress_update={})
    (tmp_path / "host.json").write_text('{"state": "bogus"}')
    with pytest.raises(ValidationError, match="state"):
        _hoststate.ensure(root=str(tmp_path), state="active")


def _module(tmp_path, check=False, diff=False, **args):
    args = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    path = tmp_path / "args.json"
    path.write_text(json.dumps(dict(ANSIBLE_MODULE_ARGS=args)))
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, ".cache", "pytest-collections"))
    proc = subprocess.run([sys.executable, MODULE, str(path)], capture_output=True, text=True, env=env,
                          check=False)
    return json.loads(proc.stdout)


def test_module_check_mode_diff_idempotence(tmp_path):
    root = str(tmp_path / "root")
    check = _module(tmp_path, check=True, diff=True, root=root, state="draining", reason="r")
    assert check["changed"] is True and check["diff"]["after"]["state"] == "draining"
    assert not os.path.exists(os.path.join(root, "host.json"))
    real = _module(tmp_path, root=root, state="draining", reason="r")
    assert real["changed"] is True and _file(root)["state"] == "draining"
    again = _module(tmp_path, root=root, state="draining", reason="r")
    assert again["changed"] is False
    # The result names host.json "file", not "path": Ansible would add the file's attributes to a result
    # with a "path", its "state" ("file") replacing the host state.
    read_only = _module(tmp_path, root=root)
    assert read_only["state"] == again["state"] == "draining"
    assert read_only["file"] == os.path.join(root, "host.json") and "mode" not in read_only
    bad = _module(tmp_path, root=root, state="upgrading")
    assert bad["failed"] and "cannot go from draining to upgrading" in bad["msg"]
    assert _file(root)["state"] == "draining"
