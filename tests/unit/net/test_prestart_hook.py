"""The network hook's handshake: the hook program (run as runc runs it: the state on
stdin) against ``Birth`` in this process, with a temporary meeting directory."""

import json
import os
import subprocess

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.net import prestart_hook as _nethook
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CtrhostError


def run_hook(directory, pid=4242, limit=None):
    hook = _nethook.prestart_hook("c1", directory=str(directory))
    args = hook["args"][:-1] + [str(limit)] if limit else hook["args"]
    return subprocess.run(args, input=json.dumps({"pid": pid, "id": "c1"}), capture_output=True,
                          text=True, timeout=30)


def test_the_hook_waits_until_the_library_attached_the_network(tmp_path):
    seen = []
    with _nethook.Birth("c1", seen.append, directory=str(tmp_path / "m")) as birth:
        proc = run_hook(tmp_path / "m")
    assert proc.returncode == 0, proc.stderr
    assert seen == [4242] and birth.pid == 4242
    assert not os.path.exists(tmp_path / "m")  # the meeting place goes with the block


def test_a_failed_attach_fails_the_hook_and_is_raised_again(tmp_path):
    def configure(pid):
        raise CtrhostError("network: bridge br9 of eth0 does not exist")

    with pytest.raises(CtrhostError) as err:
        with _nethook.Birth("c1", configure, directory=str(tmp_path / "m")):
            proc = run_hook(tmp_path / "m")
    assert proc.returncode != 0 and "bridge br9 of eth0 does not exist" in proc.stderr
    assert "br9" in err.value.msg


def test_a_runtime_started_without_the_library_fails_at_once(tmp_path):
    proc = run_hook(tmp_path / "nobody")
    assert proc.returncode != 0 and "nothing sets up this container's network" in proc.stderr


def test_the_hook_gives_up_when_no_answer_comes(tmp_path):
    (tmp_path / "m").mkdir()
    os.mkfifo(tmp_path / "m" / "go")
    proc = run_hook(tmp_path / "m", limit=0.2)
    assert proc.returncode != 0 and "not set up within" in proc.stderr
    assert (tmp_path / "m" / "pid").read_text() == "4242\n"


def test_the_config_carries_only_this_hook_as_prestart():
    cfg = {"hooks": {"prestart": [{"path": "/bin/true"}], "poststop": [{"path": "/bin/x"}]}}
    _nethook.with_hook(cfg, "c1")
    assert [h["args"][-2] for h in cfg["hooks"]["prestart"]] == ["/run/ctrhost/nethook/c1"]
    assert cfg["hooks"]["poststop"] == [{"path": "/bin/x"}]
    assert cfg["hooks"]["prestart"][0]["timeout"] > _nethook.TIMEOUT


def test_the_hook_reads_the_top_level_pid_of_a_real_runtime_state(tmp_path):
    """runc's state as it writes it: one line, no spaces, annotations after the pid."""
    seen = []
    state = ('{"ociVersion":"1.0.2","id":"c1","status":"creating","pid":31337,"bundle":"/b",'
             '"annotations":{"x.pid":"1","note":"\\"pid\\":7"}}')
    with _nethook.Birth("c1", seen.append, directory=str(tmp_path / "m")):
        hook = _nethook.prestart_hook("c1", directory=str(tmp_path / "m"))
        proc = subprocess.run(hook["args"], input=state, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert seen == [31337]


def test_a_state_without_pid_fails_the_hook(tmp_path):
    with _nethook.Birth("c1", lambda pid: None, directory=str(tmp_path / "m")):
        hook = _nethook.prestart_hook("c1", directory=str(tmp_path / "m"))
        proc = subprocess.run(hook["args"], input='{"id":"c1"}', capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "has no pid" in proc.stderr
