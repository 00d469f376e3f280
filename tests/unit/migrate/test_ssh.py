"""Link.connect: reaching the destination is tried again on transient failures only.

The SSH processes are the boundary: ``Link.reopen`` (spawns the master) and
``Link.start_agent`` (spawns the agent session) are replaced; the retry policy is real."""

from __future__ import annotations

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import ssh as _migrate_ssh
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CommandError


def make_link(monkeypatch, tmp_path, failures):
    link = _migrate_ssh.Link("dest.example", str(tmp_path))
    calls = []

    def reopen(timeout=20):
        calls.append(("open", timeout))
        if failures:
            raise failures.pop(0)

    monkeypatch.setattr(link, "reopen", reopen)
    monkeypatch.setattr(link, "check", lambda: False)
    monkeypatch.setattr(link, "start_agent", lambda: calls.append(("agent",)) or {"agent": [1, 2]})
    monkeypatch.setattr(_migrate_ssh.time, "sleep", lambda s: None)
    return link, calls


def banner():
    return CommandError("ssh to dest.example failed: Connection timed out during banner exchange", ["ssh"], 255)


def test_transient_failures_are_tried_again_until_the_agent_answers(monkeypatch, tmp_path):
    link, calls = make_link(monkeypatch, tmp_path, [banner(), CommandError(
        "ssh to dest.example: no connection after 20s", ["ssh"], -1)])
    assert link.connect(timeout=60) == {"agent": [1, 2]}
    assert [c[0] for c in calls] == ["open", "open", "open", "agent"]
    link.close()


def test_a_refused_login_is_raised_at_once(monkeypatch, tmp_path):
    denied = CommandError("ssh to dest.example failed: root@dest.example: Permission denied (publickey).",
                          ["ssh"], 255)
    link, calls = make_link(monkeypatch, tmp_path, [denied, banner()])
    with pytest.raises(CommandError, match="Permission denied"):
        link.connect(timeout=60)
    assert calls == [("open", 30)]
    link.close()


def test_the_deadline_ends_the_tries(monkeypatch, tmp_path):
    link, calls = make_link(monkeypatch, tmp_path, [banner() for _ in range(5)])
    clock = iter(range(0, 1000, 40))
    monkeypatch.setattr(_migrate_ssh.time, "monotonic", lambda: next(clock))
    with pytest.raises(CommandError, match="banner exchange"):
        link.connect(timeout=90)
    assert 1 < len(calls) < 5
    link.close()


def test_an_agent_session_cut_at_its_start_is_tried_again(monkeypatch, tmp_path):
    link, calls = make_link(monkeypatch, tmp_path, [])
    answers = [CommandError("migration agent on dest.example: connection lost at its start (Broken pipe)",
                            ["start_agent"], -1), {"agent": [3, 4]}]

    def start_agent():
        calls.append(("agent",))
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(link, "start_agent", start_agent)
    assert link.connect() == {"agent": [3, 4]}
    assert [c[0] for c in calls] == ["open", "agent", "open", "agent"]
    link.close()
