"""Planning, comparison and validation of the container lifecycle.

The runtime is replaced at its command boundaries (``_cli.run`` and
``Runtime.spawn``) by a fake that keeps runc-like state, mount(2) and the
network namespace calls at the ``_syscall`` boundary; everything else (spec
normalisation, locking, config and spec files) is the real code working in a
temporary root.
"""

import json
import os

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import lifecycle as _container
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import spec as _ctrspec
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import netns as _netns
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import syscall as _syscall
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import (
    ConflictError,
    NotFoundError,
    ValidationError,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime.driver import Runtime
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.store import ContainerStore

LOOP = ["/bin/sh", "-c", "sleep 1000"]


class FakeRunc:
    """Stands in for runc at the _cli.run and Runtime.spawn boundaries, and for
    mount(2)/umount2(2) and the netns calls at the _syscall boundary."""

    def __init__(self, state_root):
        self.state_root = state_root
        self.containers = {}
        self.calls = []
        self.netns = set()

    def spawn(self, rt, args, log_path, timeout=120, msg=None, terminal=False):
        cmd = rt.base_cmd() + list(args)
        rt.record(cmd)
        if rt.dry_run:
            return None
        self(cmd)
        if "--pid-file" in args:  # the fake init is this process: alive
            with open(args[args.index("--pid-file") + 1], "w") as handle:
                handle.write("%d\n" % os.getpid())
        return _cli.Result(cmd, 0, "", "", 0)

    def mount(self, source, target, fstype, flags=0, data=None):
        self.calls.append(["mount", "-t", fstype, source, "-o", data, target])

    def umount(self, target, flags=0):
        self.calls.append(["umount", target])

    def set(self, name, status, pid=4242):
        os.makedirs(os.path.join(self.state_root, name), exist_ok=True)
        self.containers[name] = dict(id=name, status=status, pid=pid)

    def __call__(self, cmd, check=True, input=None, **_kw):
        cmd = [str(c) for c in cmd]
        self.calls.append(cmd)
        if "--version" in cmd:
            return _cli.Result(cmd, 0, "runc version 1.1.5\nlibseccomp: 2.5.4\n", "", 0)
        if "--root" not in cmd:
            return _cli.Result(cmd, 0, "", "", 0)
        sub, name = cmd[3], cmd[-1]
        if sub == "kill" and cmd[-2] in self.containers:
            self.containers[cmd[-2]]["status"] = "stopped"
        elif sub == "state":
            if name not in self.containers:
                return _cli.Result(cmd, 1, "", "container does not exist", 0)
            return _cli.Result(cmd, 0, json.dumps(self.containers[name]), "", 0)
        elif sub == "create":
            self.set(name, "created")
        elif sub == "run":
            self.set(name, "running", pid=os.getpid())
        elif sub == "start":
            self.containers[name]["status"] = "running"
        elif sub == "delete":
            self.containers.pop(name, None)
        elif sub == "pause":
            self.containers[name]["status"] = "paused"
        elif sub == "resume":
            self.containers[name]["status"] = "running"
        return _cli.Result(cmd, 0, "", "", 0)

    def mutating(self):
        return [c for c in self.calls if c[3:4] and c[3] not in ("state", "list", "ps") or c[0] in ("mount", "umount")]


@pytest.fixture
def env(tmp_path, monkeypatch):
    root, run_dir = tmp_path / "root", tmp_path / "run"
    rootfs = root / "templates" / "busybox" / "rootfs"
    rootfs.mkdir(parents=True)
    (root / "templates" / "busybox" / "template.json").write_text(json.dumps({"sha256": "ab" * 32}))
    layout = Layout(str(root), str(run_dir))
    fake = FakeRunc(os.path.join(layout.runtime_root, "runc"))
    monkeypatch.setattr(_cli, "run", fake)
    monkeypatch.setattr(_cli, "which", lambda name: "/usr/sbin/runc" if "runc" in name else None)
    monkeypatch.setattr(Runtime, "spawn", lambda rt, *a, **kw: fake.spawn(rt, *a, **kw))
    monkeypatch.setattr(_syscall, "mount", fake.mount)
    monkeypatch.setattr(_syscall, "umount", fake.umount)
    monkeypatch.setattr(_syscall, "netns_create", fake.netns.add)
    monkeypatch.setattr(_syscall, "netns_remove", fake.netns.discard)
    monkeypatch.setattr(_syscall, "netns_lo_up", lambda path: None)
    monkeypatch.setattr(_netns, "exists", lambda name: _netns.path(name) in fake.netns)
    base = dict(root=str(root), run_dir=str(run_dir), name="ctweb1", template="busybox", privileged=True,
                command=LOOP, state="started")
    return layout, fake, base


def _read(path):
    with open(path) as handle:
        return handle.read()


def existing(layout, fake, base, status="running", **spec_over):
    """Store a container as the module would have left it."""
    spec = _ctrspec.normalize(layout, base["name"], base)
    spec.update(spec_over, cgroups_path="/ctrhost/h/" + base["name"], template_sha256="ab" * 32,
                created="2000-01-01T00:00:00+00:00")
    ContainerStore(layout).save(base["name"], spec)
    with open(layout.container_file(base["name"], "config.json"), "w") as handle:
        json.dump({"linux": {"resources": {}}}, handle)
    if status != "stopped":
        fake.set(base["name"], status)
    return spec


def test_check_mode_create_reports_change_and_writes_nothing(env):
    layout, fake, base = env
    result = _container.ensure(base, check_mode=True)
    assert result["changed"] is True
    cmds = " | ".join(result["commands"])
    assert "mount -t overlay" in cmds and " run --bundle " in cmds and " --detach " in cmds
    assert " create " not in cmds and " start " not in cmds
    assert fake.mutating() == []
    assert not os.path.exists(layout.containers_dir)
    assert os.listdir(layout.locks_dir) == []  # the lock file of a never-created container goes
    assert result["diff"]["before"] == {} and result["diff"]["after"]["template"] == "busybox"


@pytest.mark.parametrize("name", ["a/b", "..", "a b", "", "x" * 64, "-lead"])
def test_bad_names_fail_naming_the_field(env, name):
    layout, fake, base = env
    with pytest.raises(ValidationError) as exc:
        _container.ensure(dict(base, name=name))
    assert exc.value.field == "name"
    assert fake.calls == [] and not os.path.exists(layout.containers_dir)


@pytest.mark.parametrize("over, field", [
    (dict(template="nope"), "template"),
    (dict(template=None), "template"),
    (dict(env={"BAD-KEY": "x"}), "env.BAD-KEY"),
    (dict(mounts=[dict(source="/nonexistent-ct", destination="/x")]), "mounts[0].source"),
    (dict(mounts=[dict(source="/", destination="relative")]), "mounts[0].destination"),
    (dict(mounts=[dict(source="/", destination="/x", colour=1)]), "mounts[0]"),
    (dict(capabilities={"add": ["CAP_NOPE"]}), "capabilities.add"),
    (dict(limits={"memroy": "1G"}), "limits.memroy"),
    (dict(hostname="bad_host!"), "hostname"),
    (dict(command=[]), "command"),
    (dict(stop_timeout=-1), "stop_timeout"),
    (dict(state="sleeping"), "state"),
])
def test_bad_input_names_field_and_leaves_nothing(env, over, field):
    layout, fake, base = env
    with pytest.raises((ValidationError, NotFoundError)) as exc:
        _container.ensure(dict(base, **over))
    assert exc.value.details.get("field") == field, exc.value.msg
    assert not os.path.exists(layout.containers_dir)
    assert [c for c in fake.calls if "--version" not in c] == []


def test_same_spec_on_running_container_is_unchanged(env):
    layout, fake, base = env
    existing(layout, fake, base)
    for check in (True, False):
        result = _container.ensure(dict(base), check_mode=check)
        assert result["changed"] is False and "diff" not in result
        assert result["container"]["state"] == "running" and result["container"]["pid"] == 4242
    assert fake.mutating() == []


def test_omitted_options_keep_stored_values(env):
    layout, fake, base = env
    existing(layout, fake, base, limits={"memory": 1 << 30}, autostart=True)
    result = _container.ensure(dict(name=base["name"], root=base["root"], run_dir=base["run_dir"]))
    assert result["changed"] is False
    assert result["container"]["limits"] == {"memory": 1 << 30} and result["container"]["autostart"]


def test_recreate_fields_refused_and_listed(env):
    layout, fake, base = env
    existing(layout, fake, base)
    spec_file = layout.container_file(base["name"], "spec.json")
    before = _read(spec_file)
    with pytest.raises(ConflictError) as exc:
        _container.ensure(dict(base, hostname="other", env={"X": "1"}, autostart=True))
    assert exc.value.details["fields"] == ["hostname", "env"]
    assert "recreate: true" in exc.value.msg
    assert _read(spec_file) == before and fake.mutating() == []


def test_recreate_true_stops_rewrites_and_starts(env):
    layout, fake, base = env
    existing(layout, fake, base)
    result = _container.ensure(dict(base, hostname="other", recreate=True))
    subs = [c[3] for c in fake.mutating() if c[0].endswith("runc")]
    assert result["changed"] and subs == ["kill", "delete", "run"]
    assert result["container"]["state"] == "running" and result["container"]["pid"] == os.getpid()
    cfg = json.loads(_read(layout.container_file(base["name"], "config.json")))
    assert cfg["hostname"] == "other"


def test_autostart_changes_without_touching_the_process(env):
    layout, fake, base = env
    existing(layout, fake, base)
    result = _container.ensure(dict(base, autostart=True))
    assert result["changed"] and result["container"]["pid"] == 4242
    assert result["diff"]["before"]["autostart"] is False and result["diff"]["after"]["autostart"] is True
    assert fake.mutating() == []
    assert ContainerStore(layout).load(base["name"])["autostart"] is True


@pytest.mark.parametrize("status, state, expected", [
    ("running", "stopped", ["kill", "delete"]),
    ("paused", "stopped", ["resume", "kill", "delete"]),
    ("running", "frozen", ["pause"]),
    ("paused", "started", ["resume"]),
    ("running", "restarted", ["kill", "delete", "run"]),
    ("created", "started", ["start"]),
])
def test_transitions_same_changed_in_check_mode(env, status, state, expected):
    layout, fake, base = env
    existing(layout, fake, base, status=status)
    planned = _container.ensure(dict(base, state=state), check_mode=True)
    assert fake.mutating() == []
    result = _container.ensure(dict(base, state=state))
    assert planned["changed"] is result["changed"] is True
    subs = [c[3] for c in fake.mutating() if c[0].endswith("runc")]
    assert subs == expected
    assert [c.split()[3] for c in planned["commands"] if "runc" in c] == [
        s for s in expected if s != "kill" or status != "created"]


def test_stopped_container_stays_stopped_and_absent_removes_files(env):
    layout, fake, base = env
    existing(layout, fake, base, status="stopped")
    assert _container.ensure(dict(base, state="stopped"))["changed"] is False
    assert _container.ensure(dict(base, state="absent"), check_mode=True)["changed"] is True
    assert os.path.isdir(layout.container_dir(base["name"]))
    result = _container.ensure(dict(base, state="absent"))
    assert result["changed"] and not os.path.exists(layout.container_dir(base["name"]))
    assert result["diff"]["after"] == {}
    assert _container.ensure(dict(base, state="absent"))["changed"] is False


def test_lock_busy_is_a_conflict(env):
    layout, _fake, _base = env
    store = ContainerStore(layout)
    with store.lock("ctweb1"):
        with pytest.raises(ConflictError) as exc:
            with store.lock("ctweb1", timeout=0.2):
                pass
    assert "busy" in exc.value.msg
    with store.lock("ctweb1", timeout=0.2, remove=True):
        pass
    assert not os.path.exists(store.lock_path("ctweb1"))


def test_limits_compare_normalised(env):
    layout, _fake, base = env
    a = _ctrspec.normalize(layout, "ctweb1", dict(base, limits={"memory": "1G"}))
    b = _ctrspec.normalize(layout, "ctweb1", dict(base, limits={"memory": "1024M"}))
    assert a == b and _ctrspec.changed_fields(a, b) == []
    c = dict(b, limits={"memory": 512 << 20}, command=["/bin/true"])
    assert _ctrspec.changed_fields(a, c) == ["command", "limits"]
    assert _ctrspec.needs_recreate(a, c) == ["command"]


def test_default_command_from_template_init(env):
    layout, _fake, base = env
    meta = layout.template_meta("busybox")
    with open(meta, "w") as handle:
        json.dump({"sha256": "ab" * 32, "init": ["/sbin/init"]}, handle)
    spec = _ctrspec.normalize(layout, "ctweb1", dict(base, command=None))
    assert spec["command"] == ["/sbin/init"]
    os.unlink(meta)
    with open(meta, "w") as handle:
        json.dump({"sha256": "ab" * 32}, handle)
    assert _ctrspec.normalize(layout, "ctweb1", dict(base, command=None))["command"] == ["/bin/sh"]
