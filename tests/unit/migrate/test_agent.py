"""The destination's agent: its protocol, its fencing and its preflight.

The agent's library code runs for real on a destination root under ``tmp_path``; the
boundaries are the runtime (``migrate_boundaries.FAKE_RUNTIME``), CRIU's discovery, the
host's bridges (netlink), and for an old agent a real process of this test (a ``sleep``)
whose identity is read from /proc.
"""

from __future__ import annotations

import io
import json
import os
import queue
import subprocess
import tempfile
import time

import pytest
from .boundaries import FakeRuntime

from ansible_collections.ctrhost.fleet.plugins.module_utils.criu import reports as _criu
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import bridges as _hostnet
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import agent as _migrate_agent
from ansible_collections.ctrhost.fleet.plugins.module_utils.core import paths as _paths
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import MissingToolError
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.agent import Agent, serve
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.preflight import check
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.process import alive, identity
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.store import ContainerStore

NAME = "web1"
SPEC = dict(name=NAME, template="tpl", runtime="runc", cgroups_path="/ctrhost/unit-test/" + NAME,
            network=[], limits={})


class Dest:
    """A destination root with the runtime boundary."""

    def __init__(self, tmp_path):
        self.runtime = FakeRuntime(tmp_path)
        self.layout = Layout(str(tmp_path / "dst"), str(tmp_path / "run"))
        self.root = self.layout.root

    def stage(self, marker=None, status="running"):
        """spec.json as a restore left it (``marker``: still incoming), its runtime state
        and its incoming images."""
        ContainerStore(self.layout).save(NAME, dict(SPEC, **({"incoming": marker} if marker else {})))
        self.runtime.set_status(self.layout, NAME, status)
        incoming = os.path.join(self.layout.checkpoint_dir(NAME), ".incoming-m1")
        os.makedirs(os.path.join(incoming, "images"))
        return incoming

    def agent(self, **state):
        agent = Agent()
        agent.layout, agent.name, agent.runtime_path = self.layout, NAME, self.runtime.binary
        agent.meta = dict(id="m1", spec=SPEC)
        for key, value in state.items():
            setattr(agent, key, value)
        return agent

    def fence(self, agent_id, wait=0.01):
        return Agent().fence(dict(root=self.root, name=NAME, agent=agent_id, wait=wait,
                                  runtime_path=self.runtime.binary))


@pytest.fixture
def dest(tmp_path, monkeypatch):
    # the agent's layout is the request's root with the host's run directory: here one
    # under tmp_path (the runtime's state root is in it)
    monkeypatch.setattr(_paths, "RUN_DIR", str(tmp_path / "run"))
    return Dest(tmp_path)


@pytest.fixture
def old_agent():
    """A live process standing for the agent of a session that was dropped."""
    proc = subprocess.Popen(["sleep", "30"])
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


# -- the session ---------------------------------------------------------------------------
def test_one_json_answer_per_request_and_a_failure_is_an_answer():
    lines = [dict(op="ping"), dict(op="ready"), dict(op="launch"), "not json", dict(op="bye"),
             dict(op="ready")]
    stdin = io.BytesIO(b"".join((json.dumps(x) if isinstance(x, dict) else x).encode() + b"\n"
                                for x in lines))
    stdout = io.StringIO()
    assert serve(stdin, stdout) == 0
    hello, ready, unknown = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert hello["ok"] and hello["pid"] == os.getpid() and hello["agent"] == list(identity(os.getpid()))
    assert ready == dict(ok=False, fenced=False)  # nothing staged: not ready for a freeze
    assert unknown == dict(ok=False, error="KeyError: 'launch'")  # ping: no answer; after bye: none


def test_the_lease_running_out_fences_a_staged_session(dest):
    agent = dest.agent(staged=True, lease=0.01)
    agent.last_heard = time.monotonic() - 1
    requests = queue.Queue()
    agent.watchdog(requests)
    assert agent.fenced and requests.get_nowait() is None  # the loop stops, then cleans up
    assert agent.commit({}) == dict(ok=False, error="nothing to commit (fenced=True)")
    assert agent.ready({})["ok"] is False


def test_the_session_ending_removes_an_uncommitted_copy(dest):
    incoming = dest.stage(marker=dict(agent=[1, 1], id="m1", created=False))
    agent = dest.agent(staged=True, restored=True, incoming=incoming, created=False)
    agent.gone = True
    agent.finish()
    assert dest.runtime.status(dest.layout, NAME) == "absent"  # killed and deleted
    assert not os.path.exists(incoming)


def test_a_lazy_copy_whose_pages_all_arrived_stays_without_commit(dest):
    incoming = dest.stage(marker=dict(agent=[1, 1], id="m1"))
    agent = dest.agent(restored=True, lazy_complete=True, incoming=incoming)
    agent.finish()
    assert dest.runtime.status(dest.layout, NAME) == "running"
    assert "incoming" not in ContainerStore(dest.layout).load(NAME)  # this host's for good


# -- fence: what a new session finds of an old one ----------------------------------------
def test_fence_kills_an_old_agent_that_hangs(dest, old_agent):
    ident = list(identity(old_agent.pid))
    out = dest.fence(ident)
    assert out == dict(ok=True, state="fenced", killed=True)
    assert old_agent.wait(timeout=5) == -9 and not alive(ident)


def test_fence_removes_a_staging_its_dead_agent_left(dest):
    incoming = dest.stage(marker=dict(agent=[999999, 1], id="m1", created=False))
    out = dest.fence([999999, 1])
    assert out == dict(ok=True, state="fenced", killed=False)
    assert dest.runtime.status(dest.layout, NAME) == "absent" and not os.path.exists(incoming)


def test_fence_leaves_a_committed_container_and_another_migrations_staging(dest):
    assert dest.fence(None) == dict(ok=True, state="absent", killed=False)
    dest.stage()
    assert dest.fence([999999, 1])["state"] == "committed"
    ContainerStore(dest.layout).save(NAME, dict(SPEC, incoming=dict(agent=list(identity(os.getpid())))))
    assert dest.fence([999999, 1])["state"] == "busy"
    assert dest.runtime.status(dest.layout, NAME) == "running"


# -- preflight -----------------------------------------------------------------------------
@pytest.fixture
def preflight(dest, monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the unpacked agents' place
    criu = dict(version="4.2.1", check=True, check_output="", lazy_pages=False,
                lazy_pages_reason="no userfaultfd", pre_dump=True)
    monkeypatch.setattr(_criu, "discover", lambda path=None: dict(criu))
    monkeypatch.setattr(_hostnet, "read_bridges", lambda ipr=None: {})  # netlink: no bridges here

    def ask(**req):
        meta = dict(spec=dict(SPEC, **req.pop("spec", {})), template_sha256=None)
        return check(dict(dict(root=dest.root, name=NAME, meta=meta,
                               runtime_path=dest.runtime.binary), **req))
    return ask, criu


def test_preflight_names_every_problem(dest, preflight, tmp_path):
    ask, _criu_facts = preflight
    os.makedirs(dest.layout.container_dir(NAME))
    out = ask(memory_needed=2**60, disk_needed=2**60, spec=dict(limits=dict(cpus=100000)))
    assert out["ok"] is False
    problems = "\n".join(out["problems"])
    for words in ("template 'tpl' is not installed", "the container needs 1152921504606846976",
                  "cpus limit 100000 exceeds", "a container named web1 exists here",
                  "the move needs about 1152921504606846976"):
        assert words in problems, problems
    facts = out["facts"]
    assert facts["pre_dump"] is True and facts["lazy_pages"] is False
    assert facts["lazy_port"] > 0 and facts["disk_free"] > 0


def test_preflight_refuses_while_an_incoming_migration_is_alive(dest, preflight):
    ask, _criu_facts = preflight
    dest.stage(marker={"agent": list(identity(os.getpid())), "from": "h1", "since": "now"})
    out = ask()
    assert any("an incoming migration of web1 from h1 is in progress" in p for p in out["problems"])
    assert out["facts"]["cleaned"] is None


def test_preflight_of_an_unprivileged_container_checks_the_range_and_userfaultfd(preflight, monkeypatch):
    from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import idmap as _idmap
    from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import sysinfo as _sysinfo

    ask, criu_facts = preflight
    criu_facts.update(lazy_pages=True, lazy_pages_reason=None)
    monkeypatch.setattr(_idmap, "missing_on_host", lambda idmap: ["/etc/subuid has no range of root "
                                                                  "covering 1000000000-1000065535"])
    monkeypatch.setattr(_sysinfo, "unprivileged_userfaultfd", lambda base="/": False)
    out = ask(spec=dict(privileged=False, idmap=dict(uid=1000000000, gid=1000000000, size=65536)))
    assert any("the container is unprivileged (its ids map to 1000000000-1000065535) but /etc/subuid"
               in p for p in out["problems"]), out["problems"]
    assert out["facts"]["lazy_pages"] is False
    assert "vm.unprivileged_userfaultfd=0" in out["facts"]["lazy_pages_reason"]
    monkeypatch.setattr(_sysinfo, "unprivileged_userfaultfd", lambda base="/": True)
    monkeypatch.setattr(_idmap, "missing_on_host", lambda idmap: [])
    out = ask(spec=dict(privileged=False, idmap=dict(uid=1000000000, gid=1000000000, size=65536)))
    assert out["facts"]["lazy_pages"] is True and not any("unprivileged" in p for p in out["problems"])
    monkeypatch.setattr(_sysinfo, "unprivileged_userfaultfd", lambda base="/": False)
    assert ask()["facts"]["lazy_pages"] is True  # a privileged one: the sysctl does not matter


def test_preflight_says_when_criu_is_missing(preflight, monkeypatch):
    ask, _criu_facts = preflight

    def missing(path=None):
        raise MissingToolError("criu: not found on this host", tool="criu")
    monkeypatch.setattr(_criu, "discover", missing)
    assert "criu: not found on this host" in ask()["problems"]


def test_the_agent_is_started_from_one_file_of_the_shipped_zip():
    assert "migrate import agent as a" in _migrate_agent.BOOTSTRAP and "a.serve(" in _migrate_agent.BOOTSTRAP
    assert set(Agent.REQUESTS) <= set(dir(Agent))


def test_preflight_refuses_a_full_key_quota_and_an_isolated_range_held_here(dest, preflight, monkeypatch):
    from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import idmap as _idmap
    from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import peruser as _peruser

    ask, _criu_facts = preflight
    monkeypatch.setattr(_idmap, "missing_on_host", lambda idmap: [])
    full = dict(keys=200, maxkeys=200, bytes=0, maxbytes=20000, free_keys=0, free_bytes=20000, containers_free=0)
    monkeypatch.setattr(_peruser, "key_room", lambda uid, base="/", users=None: dict(full, uid=uid))
    mine = dict(uid=1100065536, gid=1100065536, size=65536, isolated=True)
    os.makedirs(dest.layout.container_dir("other"))
    with open(dest.layout.container_file("other", "spec.json"), "w") as handle:
        json.dump(dict(idmap=mine), handle)
    problems = "\n".join(ask(spec=dict(privileged=False, idmap=mine))["problems"])
    assert "kernel.keys.maxkeys: uid 1100065536 holds 200 of 200 keys; container web1" in problems, problems
    assert "isolated id range (idmap_isolated) 1100065536-1100131071 is held here by container other" in problems
    # the shared range is shared: another container holding it is no problem
    shared = dict(uid=1000000000, gid=1000000000, size=65536)
    monkeypatch.setattr(_peruser, "key_room", lambda uid, base="/", users=None: dict(full, uid=uid, keys=1,
                                                                                     free_keys=199))
    assert not any("range" in p or "kernel.keys" in p
                   for p in ask(spec=dict(privileged=False, idmap=shared))["problems"])
