"""System-container mode: OCI config, /etc/hostname, cgroup subtree on v1/hybrid/v2 sample
trees, and what a dump must know before the freeze (namespaces, users, locks, watches),
read from sample /proc trees. No root needed."""

import os
import signal

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import cgroups as _cgroups
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import spec as _ctrspec
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import bundle as _oci
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import system as _sysctr
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.cgroups import Cgroup
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import (
    ValidationError,
)

PATH = "/ctrhost/h1/sys1"


def spec(command, init="auto", hostname="sys1"):
    return dict(template="deb", command=command, init=init, hostname=hostname, env={},
                mounts=[], capabilities={}, limits={}, network=[], runtime="runc")


@pytest.mark.parametrize("command,init,expected", [
    (["/sbin/init"], "auto", True),
    (["/lib/systemd/systemd", "--log-level=info"], "auto", True),
    (["/usr/lib/systemd/systemd"], "auto", True),
    (["/sbin/init"], "none", False),
    (["/usr/sbin/sshd", "-D"], "auto", False),
    (["/usr/local/bin/my-init"], "systemd", True),
])
def test_mode_is_one_switch_or_detected_from_the_command(command, init, expected):
    assert _sysctr.is_system(spec(command, init)) is expected
    assert _sysctr.stop_signal(spec(command, init)) == (
        str(signal.SIGRTMIN + 3) if expected else "TERM")


def test_init_is_validated_by_name():
    with pytest.raises(ValidationError, match="init: expected one of auto, systemd, none"):
        _sysctr.normalize_init("upstart")
    assert _sysctr.normalize_init(None) == "auto"


@pytest.mark.parametrize("mode", ["hybrid", "v2"])
def test_system_config_has_tmpfs_cgroup_ns_terminal_and_no_extra_capability(monkeypatch, mode):
    monkeypatch.setattr(_cgroups, "detect_mode", lambda base="/sys/fs/cgroup": mode)
    plain = _oci.build_config("sys1", spec(["/bin/sh"]), "/run/netns/x", cgroupns=True)
    cfg = _oci.build_config("sys1", spec(["/sbin/init"]), "/run/netns/x", cgroupns=False,
                            cgroups=PATH)
    assert plain["process"]["terminal"] is False and cfg["process"]["terminal"] is True
    mounts = {m["destination"]: m for m in cfg["mounts"]}
    for dest in ("/run", "/run/lock", "/tmp"):
        assert mounts[dest]["type"] == "tmpfs" and "nosuid" in mounts[dest]["options"]
    assert "mode=1777" in mounts["/tmp"]["options"]
    order = [m["destination"] for m in cfg["mounts"]]
    assert order.index("/run") < order.index("/run/lock")  # parent first
    cg = mounts["/sys/fs/cgroup"]["options"]
    if mode == "v2":  # the unified hierarchy writable (nsdelegate guards the root's limits)
        assert "rw" in cg and "ro" not in cg and "/sys/fs/cgroup/systemd" not in mounts
    else:  # controllers read-only: the container cannot raise its own limits
        assert "ro" in cg and "rw" not in cg
        bind = mounts["/sys/fs/cgroup/systemd"]
        assert bind["source"] == "/sys/fs/cgroup/systemd" + PATH and "rw" in bind["options"]
        assert order_of(cfg, "/sys/fs/cgroup") < order_of(cfg, "/sys/fs/cgroup/systemd")
        # a restore on another host follows its cgroups path
        cfg["linux"]["cgroupsPath"] = "/ctrhost/h2/sys1"
        assert _sysctr.retarget(cfg)["mounts"][order_of(cfg, "/sys/fs/cgroup/systemd")][
            "source"] == "/sys/fs/cgroup/systemd/ctrhost/h2/sys1"
    assert "ro" in {m["destination"]: m for m in plain["mounts"]}["/sys/fs/cgroup"]["options"]
    # a cgroup namespace even where the caller did not ask for one
    assert {"type": "cgroup"} in cfg["linux"]["namespaces"]
    # nothing granted beyond the defaults; bpf/mount/unshare answered with EPERM
    assert cfg["process"]["capabilities"] == plain["process"]["capabilities"]
    assert "CAP_SYS_ADMIN" not in cfg["process"]["capabilities"]["bounding"]
    denied = cfg["linux"]["seccomp"]["syscalls"][0]
    assert {"bpf", "mount", "unshare", "setns"} <= set(denied["names"])
    assert denied["errnoRet"] == 1  # EPERM: systemd skips the sandboxing it cannot set up


def order_of(cfg, dest):
    return [m["destination"] for m in cfg["mounts"]].index(dest)


def test_init_field_is_compared_as_auto_for_containers_stored_before_it(tmp_path):
    old = spec(["/sbin/init"])
    old.pop("init")
    assert _ctrspec.needs_recreate(old, spec(["/sbin/init"])) == []
    assert _ctrspec.needs_recreate(old, spec(["/sbin/init"], "none")) == ["init"]


def test_hostname_written_without_following_symlinks(tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    assert _sysctr.write_hostname(str(rootfs), "web1") is True
    assert (rootfs / "etc/hostname").read_text() == "web1\n"
    assert _sysctr.write_hostname(str(rootfs), "web1") is False  # unchanged
    outside = tmp_path / "host-file"
    outside.write_text("host data\n")
    (rootfs / "etc/hostname").unlink()
    (rootfs / "etc/hostname").symlink_to(outside)
    assert _sysctr.write_hostname(str(rootfs), "web2") is True
    assert outside.read_text() == "host data\n"  # the container's symlink was replaced
    assert (rootfs / "etc/hostname").read_text() == "web2\n"
    evil = tmp_path / "evil"
    (evil / "etc").mkdir(parents=True)
    os.rename(evil / "etc", tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", evil / "etc")
    with pytest.raises(OSError):  # /etc itself a symlink: refused, nothing written
        _sysctr.write_hostname(str(evil), "x")
    assert not (tmp_path / "elsewhere" / "hostname").exists()


def _tree(base, hierarchies, subs):
    for h in hierarchies:
        for rel in [""] + subs:
            os.makedirs(os.path.join(base, h, PATH.lstrip("/"), rel), exist_ok=True)


@pytest.mark.parametrize("mode", ["v1", "hybrid", "v2"])
def test_cgroup_tree_recorded_and_recreated(tmp_path, mode):
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    subs = ["init.scope", "system.slice", "system.slice/cron.service",
            "system.slice/ssh.service", "user.slice"]
    if mode == "v2":
        hierarchies = [""]
        for base in (src, dst):
            os.makedirs(base)
            open(os.path.join(base, "cgroup.controllers"), "w").close()
    else:
        hierarchies = ["systemd", "pids", "memory", "devices", "cpuset"]
        if mode == "hybrid":
            os.makedirs(os.path.join(src, "unified"))
            open(os.path.join(src, "unified", "cgroup.controllers"), "w").close()
        for h in hierarchies:
            os.makedirs(os.path.join(dst, h))
    _tree(src, hierarchies, subs)
    tree = _sysctr.cgroup_tree(Cgroup(PATH, base=src).dirs())
    keys = ["unified"] if mode == "v2" else sorted(hierarchies)
    assert sorted(tree) == sorted(keys) if mode != "hybrid" else set(keys) <= set(tree)
    first = tree[keys[0]]
    assert first.index("system.slice") < first.index("system.slice/cron.service")
    other = PATH.replace("h1", "h2")  # the destination's own cgroups path
    made = _sysctr.recreate_tree(Cgroup(other, base=dst).dirs(create=True), tree)
    for h in hierarchies:
        there = os.path.join(dst, h, other.lstrip("/"))
        skipped = h in ("devices", "cpuset")  # the runtime sets the rules there first
        assert os.path.isdir(os.path.join(there, "system.slice/ssh.service")) is not skipped
    assert made == len(subs) * (1 if mode == "v2" else 3)
    assert _sysctr.recreate_tree(Cgroup(other, base=dst).dirs(), tree) == 0  # idempotent
    with pytest.raises(ValidationError, match="bad cgroup path"):
        _sysctr.recreate_tree({"systemd": dst}, {"systemd": ["../../escape"]})


def test_cgroup_remove_and_procs_cover_the_subtree(tmp_path):
    base = str(tmp_path)
    open(os.path.join(base, "cgroup.controllers"), "w").close()
    _tree(base, [""], ["init.scope", "system.slice/cron.service"])
    top = os.path.join(base, PATH.lstrip("/"))
    for rel, pids in (("", ""), ("init.scope", "1\n"), ("system.slice/cron.service", "7\n8\n")):
        with open(os.path.join(top, rel, "cgroup.procs"), "w") as handle:
            handle.write(pids)
    cg = Cgroup(PATH, base=base)
    assert sorted(cg.procs()) == [1, 7, 8]
    for here, _d, files in os.walk(top):
        for leaf in files:
            os.unlink(os.path.join(here, leaf))  # cgroupfs: empty dirs rmdir
    removed = cg.remove()
    assert removed[-1] == top and not os.path.exists(top) and len(removed) == 4


class FakeRt:
    name = "runc"

    def __init__(self, states):
        self.states = list(states)

    def state(self, _cid):
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


def test_start_verified_with_the_tail_of_the_console_log(tmp_path):
    from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import console as _console
    from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CommandError

    log = tmp_path / "console.log"
    log.write_text("old run\n")
    offset = log.stat().st_size
    with open(log, "a") as handle:
        handle.write("Missing privilege separation directory: /run/sshd\n")
    with pytest.raises(CommandError) as err:
        _console.verify_started(FakeRt([{"status": "running"}, {"status": "stopped"}]), "c1",
                                str(log), offset, 5)
    assert "exited right after the start" in err.value.msg
    assert "Missing privilege separation directory" in err.value.msg
    assert "old run" not in err.value.msg  # only what this start wrote
    assert err.value.details["console_log"] == str(log)
    _console.verify_started(FakeRt([{"status": "running"}]), "c1", str(log), offset, 0.1)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another owner needs root")
def test_delegate_gives_the_systemd_cgroup_directory_to_the_ranges_root(tmp_path):
    idmap = dict(uid=1000000000, gid=1000000000, size=65536)
    leaf = tmp_path / "systemd" / "ctrhost" / "h1" / "c1"
    leaf.mkdir(parents=True)
    (leaf / "cgroup.procs").write_text("")
    (leaf / "sub").mkdir()
    made = _sysctr.delegate("/ctrhost/h1/c1", idmap, cgroup_mode="hybrid", base=str(tmp_path))
    assert made == str(leaf)
    assert os.stat(leaf).st_uid == 1000000000 and os.stat(leaf / "cgroup.procs").st_gid == 1000000000
    assert os.stat(leaf / "sub").st_uid == 0 and os.stat(tmp_path / "systemd" / "ctrhost").st_uid == 0
    v2 = _sysctr.delegate("/ctrhost/h1/c2", idmap, cgroup_mode="v2", base=str(tmp_path))
    assert v2 == str(tmp_path / "ctrhost" / "h1" / "c2") and os.stat(v2).st_uid == 1000000000
