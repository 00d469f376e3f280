"""The host_info result assembled from sample host trees, a sample root and fake tools."""

import json
import os
import stat

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.host import info as _hostinfo
from ansible_collections.ctrhost.fleet.plugins.module_utils.host import state as _hoststate
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import sysinfo as _sysinfo
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout

HI_HYBRID_FILES = {
    "/proc/self/mountinfo": (
        "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n"
        "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"
        "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"),
    "/proc/cgroups": "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t1\t1\t1\nmemory\t4\t1\t1\n"
                     "pids\t8\t1\t1\nhugetlb\t0\t1\t1\n",
    "/sys/fs/cgroup/unified/cgroup.controllers": "hugetlb\n",
    "/proc/self/status": "Cpus_allowed_list:\t0-2\nCapEff:\t000001fffeffffff\n",
    "/sys/devices/system/cpu/online": "0-7\n",
    "/proc/meminfo": "MemTotal: 4000000 kB\nMemFree: 100 kB\nMemAvailable: 3000000 kB\nSwapTotal: 0 kB\n",
    "/proc/sys/kernel/osrelease": "6.1.0-18-amd64\n",
    "/proc/filesystems": "nodev\ttmpfs\n\text4\n",
    "/lib/modules/6.1.0-18-amd64/modules.dep": "kernel/fs/overlayfs/overlay.ko:\n",
    "/proc/sys/fs/pipe-max-size": "1048576\n",
}

HI_V2_FILES = dict(HI_HYBRID_FILES)
HI_V2_FILES.update({
    "/proc/self/mountinfo": "25 22 0:21 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n",
    "/proc/cgroups": "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t0\t1\t1\nmemory\t0\t1\t1\n",
    "/sys/fs/cgroup/cgroup.controllers": "cpu io memory pids\n",
    "/proc/filesystems": "nodev\toverlay\n",
})

HI_CRIU = """\
case "$1 $2 $3" in
  "--version  ") echo "Version: 4.2.1" ;;
  "check  ") echo "Looks good." ;;
  "check --feature mem_dirty_track") echo "Dirty tracking is OFF" >&2; exit 1 ;;
  *) echo "$3 is supported" ;;
esac
"""


def hi_tree(base, files):
    for path, text in files.items():
        full = os.path.join(str(base), path.lstrip("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as handle:
            handle.write(text)
    return str(base)


def hi_tool(directory, name, script):
    path = os.path.join(str(directory), name)
    with open(path, "w") as handle:
        handle.write("#!/bin/sh\n" + script)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


def hi_spec(root, name, limits):
    directory = os.path.join(str(root), "containers", name)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "spec.json"), "w") as handle:
        handle.write(limits if isinstance(limits, str) else json.dumps({"name": name, "limits": limits}))


@pytest.fixture(autouse=True)
def hi_fresh_cache():
    _sysinfo.clear_cache()
    yield
    _sysinfo.clear_cache()


@pytest.fixture
def hi_tools(tmp_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    return dict(
        runc=hi_tool(tools, "runc", "echo 'runc version 1.1.12'; echo 'spec: 1.0.2-dev'\n"),
        crun=hi_tool(tools, "crun", "echo 'crun version 1.8.1'; echo '+SYSTEMD +SECCOMP'\n"),
        criu=hi_tool(tools, "criu", HI_CRIU),
    )


# ------------------------------------------------------------------ gather

@pytest.mark.parametrize("gather, expected", [
    (None, set(_hostinfo.PARTS)),
    (["all"], set(_hostinfo.PARTS)),
    (["!criu_check"], set(_hostinfo.PARTS) - {"criu_check"}),
    (["!criu_check", "!criu_features"], set(_hostinfo.PARTS) - {"criu_check", "criu_features"}),
    (["min"], set(_hostinfo.MIN_PARTS)),
    (["min", "runtimes"], set(_hostinfo.MIN_PARTS) | {"runtimes"}),
    (["all", "!committed"], set(_hostinfo.PARTS) - {"committed"}),
    (["kernel"], {"kernel"}),
])
def test_resolve_gather(gather, expected):
    assert _hostinfo.resolve_gather(gather) == expected


def test_resolve_gather_rejects_unknown():
    with pytest.raises(ValidationError) as info:
        _hostinfo.resolve_gather(["cpu", "gpus"])
    assert info.value.field == "gather" and "'gpus'" in info.value.msg


# ------------------------------------------------------------------ host state

def test_host_state_defaults_to_active(tmp_path):
    assert _hoststate.host_state(Layout(str(tmp_path))) == ("active", {})


def test_host_state_from_host_json(tmp_path):
    (tmp_path / "host.json").write_text(json.dumps({"state": "cordoned", "reason": "kernel upgrade"}))
    state, detail = _hoststate.host_state(Layout(str(tmp_path)))
    assert state == "cordoned" and detail["reason"] == "kernel upgrade"


@pytest.mark.parametrize("content, message", [
    ("{not json", "expected a JSON object"),
    (json.dumps({"state": "sleeping"}), "'sleeping'"),
    (json.dumps(["active"]), "expected one of"),
])
def test_host_state_invalid(tmp_path, content, message):
    (tmp_path / "host.json").write_text(content)
    with pytest.raises(ValidationError) as info:
        _hoststate.host_state(Layout(str(tmp_path)))
    assert message in info.value.msg and "host.json" in info.value.msg


# ------------------------------------------------------------------ committed

def test_committed_sums_declared_limits(tmp_path):
    hi_spec(tmp_path, "web1", {"memory": 512 * 1024 ** 2, "cpus": 1.5})
    hi_spec(tmp_path, "web2", {"memory": 256 * 1024 ** 2, "cpus": 0.25, "pids": 100})
    hi_spec(tmp_path, "db", {"memory": "1073741824"})
    hi_spec(tmp_path, "idle", {})
    hi_spec(tmp_path, "bare", '{"name": "bare"}')
    os.makedirs(tmp_path / "containers" / "half-made")  # no spec.json: not a container yet
    total, warnings = _hostinfo.committed(Layout(str(tmp_path)))
    assert warnings == []
    assert total == dict(memory=(512 + 256 + 1024) * 1024 ** 2, cpus=1.75, containers=5,
                         without_memory_limit=2, without_cpus_limit=3)


def test_committed_warns_about_unreadable_specs(tmp_path):
    hi_spec(tmp_path, "ok", {"memory": 1024, "cpus": 1})
    hi_spec(tmp_path, "units", {"memory": "1G"})
    hi_spec(tmp_path, "negative", {"cpus": -2})
    hi_spec(tmp_path, "broken", "{")
    total, warnings = _hostinfo.committed(Layout(str(tmp_path)))
    assert total["containers"] == 4 and total["memory"] == 1024 and total["cpus"] == 1.0
    text = "\n".join(warnings)
    assert len(warnings) == 3
    assert "units/spec.json: limits.memory: expected bytes as a non-negative integer, got '1G'" in text
    assert "limits.cpus: expected a non-negative number, got -2" in text
    assert "broken/spec.json" in text


def test_committed_without_containers_dir(tmp_path):
    total, warnings = _hostinfo.committed(Layout(str(tmp_path / "missing")))
    assert total["containers"] == 0 and total["memory"] == 0 and warnings == []


# ------------------------------------------------------------------ overlayfs

def test_overlayfs_sources(tmp_path):
    assert _hostinfo.overlayfs(hi_tree(tmp_path / "v2", HI_V2_FILES)) == {"supported": True, "source": "registered"}
    assert _hostinfo.overlayfs(hi_tree(tmp_path / "hy", HI_HYBRID_FILES)) == {"supported": True, "source": "module"}
    bare = hi_tree(tmp_path / "bare", {"/proc/filesystems": "nodev\ttmpfs\n",
                                       "/proc/sys/kernel/osrelease": "6.1.0\n"})
    assert _hostinfo.overlayfs(bare) == {"supported": False, "source": None}


# ------------------------------------------------------------------ the whole result

def test_gather_hybrid_host(tmp_path, hi_tools):
    base = hi_tree(tmp_path / "host", HI_HYBRID_FILES)
    root = tmp_path / "root"
    hi_spec(root, "web1", {"memory": 1 << 30, "cpus": 2})
    (root / "host.json").write_text('{"state": "draining"}')
    result = _hostinfo.gather(root=str(root), base=base, criu_path=hi_tools["criu"],
                              runtime_paths={"runc": hi_tools["runc"], "crun": hi_tools["crun"]})
    assert result["gathered"] == sorted(_hostinfo.PARTS)
    assert result["root"] == str(root)
    assert (result["cpus"], result["cpus_online"]) == (3, 8)
    assert result["memory_total"] == 4000000 * 1024 and result["memory_available"] == 3000000 * 1024
    assert result["kernel"] == "6.1.0-18-amd64"
    cgroup = result["cgroup"]
    assert cgroup["mode"] == "hybrid" and cgroup["version"] == 1
    assert cgroup["controllers"] == ["cpu", "hugetlb", "memory", "pids"]
    assert cgroup["mounts"]["memory"] == "/sys/fs/cgroup/memory"
    assert cgroup["mounts"]["hugetlb"] == "/sys/fs/cgroup/unified"
    assert result["overlayfs"]["supported"] is True
    runc, crun = result["runtimes"]["runc"], result["runtimes"]["crun"]
    assert runc == dict(path=hi_tools["runc"], version="1.1.12", usable=True, reason=None,
                        commit=None, spec="1.0.2-dev")
    assert crun["version"] == "1.8.1" and crun["usable"] is False and "hybrid" in crun["reason"]
    assert crun["checkpoint"] is False
    criu = result["criu"]
    assert (criu["path"], criu["version"], criu["check_passed"]) == (hi_tools["criu"], "4.2.1", True)
    assert criu["check_output"] == "Looks good."
    assert criu["features"]["lazy_pages"] is True and criu["features"]["dirty_tracking"] is False
    assert criu["cap_sys_resource"] is False and criu["pipe_max_size"] == 1048576
    assert result["host_state"] == "draining"
    assert result["committed"]["memory"] == 1 << 30 and result["committed"]["cpus"] == 2.0
    assert result["container_count"] == 1
    assert "warnings" not in result


def test_gather_v2_host_crun_usable(tmp_path, hi_tools):
    base = hi_tree(tmp_path / "host", HI_V2_FILES)
    result = _hostinfo.gather(root=str(tmp_path / "root"), gather=["runtimes", "cgroup"], base=base,
                              runtime_paths={"runc": hi_tools["runc"], "crun": hi_tools["crun"]})
    assert result["gathered"] == ["cgroup", "runtimes"]
    assert result["cgroup"]["mode"] == "v2" and result["cgroup"]["v2_controllers"] == ["cpu", "io", "memory", "pids"]
    assert result["runtimes"]["crun"]["usable"] is True and result["runtimes"]["crun"]["reason"] is None
    assert "cpus" not in result and "criu" not in result and "host_state" not in result


def test_gather_min_runs_no_command(tmp_path, hi_tools):
    calls = tmp_path / "calls"
    loud = hi_tool(tmp_path, "loud", "echo x >> %s\n" % calls)
    base = hi_tree(tmp_path / "host", HI_V2_FILES)
    result = _hostinfo.gather(root=str(tmp_path / "root"), gather=["min"], base=base, criu_path=loud,
                              runtime_paths={"runc": loud, "crun": loud})
    assert set(result["gathered"]) == set(_hostinfo.MIN_PARTS)
    assert "runtimes" not in result and "criu" not in result
    assert not calls.exists()


def test_gather_skips_criu_check(tmp_path, hi_tools):
    base = hi_tree(tmp_path / "host", HI_V2_FILES)
    result = _hostinfo.gather(root=str(tmp_path), gather=["!criu_check", "!criu_features"], base=base,
                              criu_path=hi_tools["criu"],
                              runtime_paths={"runc": hi_tools["runc"], "crun": hi_tools["crun"]})
    assert result["criu"] == {"path": hi_tools["criu"], "version": "4.2.1"}


def test_gather_without_criu(tmp_path):
    base = hi_tree(tmp_path / "host", HI_V2_FILES)
    result = _hostinfo.gather(root=str(tmp_path), gather=["criu", "criu_check", "criu_features"], base=base,
                              criu_path=str(tmp_path / "no-criu"))
    assert result["criu"] == {"path": None, "version": None, "check_passed": False,
                              "check_output": "criu not found on this host"}


def test_gather_passes_spec_warnings(tmp_path):
    hi_spec(tmp_path, "units", {"memory": "2G"})
    result = _hostinfo.gather(root=str(tmp_path), gather=["committed"])
    assert result["container_count"] == 1 and len(result["warnings"]) == 1
