"""OCI config builder: isolation defaults, capabilities, seccomp, mounts, resources."""

import json
import os

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import oci as _ocifile
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import bundle as _oci
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError

SPEC = dict(template="busybox", command=["/bin/sh", "-c", "sleep 1"], hostname="web1",
            env={"A": "1"}, mounts=[], capabilities={}, limits={}, network=[])


def build(**over):
    spec = dict(SPEC, **over)
    return _oci.build_config("web1", spec, "/run/netns/ctrhost-web1",
                             cgroups="/ctrhost/h1/web1",
                             cgroupns=True, machine="x86_64")


def test_namespaces_netns_by_path_and_cgroup_path():
    cfg = build()
    ns = {n["type"]: n.get("path") for n in cfg["linux"]["namespaces"]}
    assert set(ns) == {"pid", "ipc", "uts", "mount", "network", "cgroup"}
    assert ns["network"] == "/run/netns/ctrhost-web1"
    assert "user" not in ns
    assert cfg["linux"]["cgroupsPath"] == "/ctrhost/h1/web1"
    assert cfg["root"] == {"path": "rootfs", "readonly": False}
    assert cfg["hostname"] == "web1"
    assert cfg["process"]["terminal"] is False
    assert cfg["process"]["args"] == ["/bin/sh", "-c", "sleep 1"]
    assert "A=1" in cfg["process"]["env"] and any(e.startswith("PATH=") for e in cfg["process"]["env"])


def test_no_cgroup_namespace_when_kernel_lacks_it():
    cfg = _oci.build_config("x", SPEC, "/run/netns/ctrhost-x", cgroupns=False)
    assert "cgroup" not in {n["type"] for n in cfg["linux"]["namespaces"]}


def test_no_host_devices_and_device_cgroup_denies_all():
    cfg = build()
    assert cfg["linux"]["devices"] == []
    assert cfg["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    assert cfg["linux"]["resources"] == {"devices": [{"allow": False, "access": "rwm"}]}  # limits: _limits


def test_masked_and_readonly_paths_are_the_oci_defaults():
    cfg = build()
    assert {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"} <= set(cfg["linux"]["maskedPaths"])
    assert {"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"} <= set(cfg["linux"]["readonlyPaths"])


def test_standard_mounts_sysfs_and_cgroup_readonly():
    mounts = {m["destination"]: m for m in build()["mounts"]}
    assert set(mounts) >= {"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"}
    assert "ro" in mounts["/sys"]["options"] and "ro" in mounts["/sys/fs/cgroup"]["options"]


def test_user_mounts_bind_readonly_and_tmpfs():
    cfg = build(mounts=[dict(source="/srv/a", destination="/a", readonly=True, type="bind"),
                        dict(source="/srv/b", destination="/b", readonly=False, type="bind"),
                        dict(source=None, destination="/t", readonly=False, type="tmpfs")])
    mounts = {m["destination"]: m for m in cfg["mounts"]}
    assert mounts["/a"]["source"] == "/srv/a" and "ro" in mounts["/a"]["options"]
    assert "rbind" in mounts["/a"]["options"]
    assert "ro" not in mounts["/b"]["options"]
    assert mounts["/t"]["type"] == "tmpfs"


def test_default_capabilities_exclude_mknod_and_sys_admin():
    caps = build()["process"]["capabilities"]
    assert caps["bounding"] == caps["effective"] == caps["permitted"]
    assert "CAP_CHOWN" in caps["bounding"] and "CAP_NET_BIND_SERVICE" in caps["bounding"]
    assert "CAP_MKNOD" not in caps["bounding"] and "CAP_SYS_ADMIN" not in caps["bounding"]


def test_capabilities_add_drop_any_spelling():
    caps = _oci.effective_capabilities({"add": ["sys_admin", "CAP_NET_ADMIN"], "drop": ["Chown"]})
    assert "CAP_SYS_ADMIN" in caps and "CAP_NET_ADMIN" in caps and "CAP_CHOWN" not in caps
    assert _oci.effective_capabilities({"drop": ["ALL"], "add": ["KILL"]}) == ["CAP_KILL"]


@pytest.mark.parametrize("caps, field", [
    ({"add": ["CAP_NOPE"]}, "capabilities.add"),
    ({"drop": ["bogus"]}, "capabilities.drop"),
    ({"add": ["ALL"]}, "capabilities.add"),
    ({"add": ["KILL"], "drop": ["CAP_KILL"]}, "capabilities"),
    ({"remove": ["KILL"]}, "capabilities"),
])
def test_bad_capabilities_name_the_field(caps, field):
    with pytest.raises(ValidationError) as exc:
        _oci.normalize_capabilities(caps)
    assert exc.value.field == field


def _denied(cfg):
    rules = cfg["linux"]["seccomp"]["syscalls"]
    assert all(r["action"] == "SCMP_ACT_ERRNO" and r["errnoRet"] == 1 for r in rules)
    return {name for r in rules for name in r["names"]}


def test_seccomp_default_allow_blocks_host_global_calls():
    cfg = build()
    assert cfg["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ALLOW"
    assert "SCMP_ARCH_X86_64" in cfg["linux"]["seccomp"]["architectures"]
    denied = _denied(cfg)
    for call in ("kexec_load", "init_module", "finit_module", "delete_module", "open_by_handle_at",
                 "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "swapon", "syslog",
                 "acct", "mount", "unshare", "setns"):
        assert call in denied, call
    # CRIU's lazy restore uses userfaultfd inside the task; ptrace stays for debuggers.
    assert "userfaultfd" not in denied and "ptrace" not in denied and "reboot" not in denied


def test_seccomp_follows_granted_capabilities():
    denied = _denied(build(capabilities={"add": ["SYS_ADMIN", "SYS_TIME"]}))
    assert "mount" not in denied and "unshare" not in denied and "clock_settime" not in denied
    assert "kexec_load" in denied and "keyctl" in denied


def test_seccomp_left_out_when_runtime_lacks_it():
    cfg = _oci.build_config("x", SPEC, "/run/netns/ctrhost-x", seccomp=False)
    assert "seccomp" not in cfg["linux"]


def test_save_load_atomic_and_set_resources(tmp_path):
    cfg = build()
    _ocifile.save_config(str(tmp_path), cfg)
    assert os.listdir(tmp_path) == ["config.json"]  # no temp file left behind
    assert os.stat(tmp_path / "config.json").st_mode & 0o777 == 0o600
    loaded = _ocifile.load_config(str(tmp_path))
    assert loaded == json.loads(json.dumps(cfg))
    _ocifile.set_resources(loaded, {"pids": {"limit": 64}})
    assert loaded["linux"]["resources"] == {"pids": {"limit": 64},
                                            "devices": [{"allow": False, "access": "rwm"}]}
    assert _ocifile.load_config(str(tmp_path / "missing.json")) is None


def test_cgroups_path_uses_short_host_name(monkeypatch):
    monkeypatch.setattr(_ocifile.socket, "gethostname", lambda: "host1.example.org")
    assert _ocifile.cgroups_path("web1") == "/ctrhost/host1/web1"


def test_criu_config_annotation_only_when_given():
    assert "org.criu.config" not in build()["annotations"]
    spec = dict(SPEC)
    cfg = _oci.build_config("web1", spec, "/run/netns/ctrhost-web1", criu_config="/run/ctrhost/criu/runc.conf")
    assert cfg["annotations"]["org.criu.config"] == "/run/ctrhost/criu/runc.conf"
    assert cfg["annotations"]["org.ctrhost.name"] == "web1"
