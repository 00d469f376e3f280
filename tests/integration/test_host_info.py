"""host_info run through ansible on this machine, checked against independent reads."""

import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(REPO, ".cache", "pytest-collections")
ANSIBLE = os.path.join(REPO, ".venv", "bin", "ansible")
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


def hi_env():
    env = dict(os.environ)
    env.update(ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_CALLBACK_RESULT_FORMAT="json",
               ANSIBLE_NOCOLOR="1", ANSIBLE_DEPRECATION_WARNINGS="0", PATH=SBIN_PATH)
    return env


def hi_run_module(args="", check=False):
    """Run ctrhost.fleet.host_info on localhost; returns (rc, result dict)."""
    assert os.path.isdir(os.path.join(COLLECTIONS, "ansible_collections", "ctrhost", "fleet", "plugins"))
    cmd = [ANSIBLE, "localhost", "-c", "local", "-i", "localhost,", "-e",
           "ansible_python_interpreter=%s" % PYTHON, "-m", "ctrhost.fleet.host_info", "-a", args]
    if check:
        cmd.append("--check")
    proc = subprocess.run(cmd, cwd=REPO, env=hi_env(), capture_output=True, text=True, timeout=300)
    head, sep, body = proc.stdout.partition(" => ")
    assert sep, "no result in output: %s\n%s" % (proc.stdout, proc.stderr)
    return proc.returncode, json.loads(body)


def hi_sh(*cmd):
    return subprocess.run(list(cmd), capture_output=True, text=True, env=hi_env(), timeout=120)


def hi_meminfo():
    with open("/proc/meminfo") as handle:
        return {line.split(":")[0]: int(line.split()[1]) * 1024 for line in handle if line.rstrip().endswith("kB")}


def hi_fstype(path):
    return hi_sh("stat", "-f", "-c", "%T", path).stdout.strip()


@pytest.fixture(scope="module")
def hi_full(tmp_path_factory):
    root = tmp_path_factory.mktemp("hi-root")
    rc, result = hi_run_module("root=%s" % root)
    assert rc == 0, result
    return result


def test_capacity_and_kernel_match_proc(hi_full):
    assert hi_full["changed"] is False
    assert hi_full["cpus"] == int(hi_sh("nproc").stdout)
    mem = hi_meminfo()
    assert hi_full["memory_total"] == mem["MemTotal"]
    assert abs(hi_full["memory_available"] - mem["MemAvailable"]) < max(mem["MemTotal"] // 10, 256 << 20)
    assert hi_full["kernel"] == hi_sh("uname", "-r").stdout.strip()
    with open("/proc/filesystems") as handle:
        registered = any(line.split()[-1] == "overlay" for line in handle if line.strip())
    if registered:
        assert hi_full["overlayfs"] == {"supported": True, "source": "registered"}
    assert hi_full["host_state"] == "active" and hi_full["container_count"] == 0


def test_cgroup_layout_matches_statfs(hi_full):
    cgroup = hi_full["cgroup"]
    top = hi_fstype("/sys/fs/cgroup")
    if top == "cgroup2fs":
        assert (cgroup["mode"], cgroup["version"], cgroup["v2_mount"]) == ("v2", 2, "/sys/fs/cgroup")
    elif os.path.ismount("/sys/fs/cgroup/unified") and hi_fstype("/sys/fs/cgroup/unified") == "cgroup2fs":
        assert (cgroup["mode"], cgroup["version"], cgroup["v2_mount"]) == ("hybrid", 1, "/sys/fs/cgroup/unified")
    else:
        assert cgroup["mode"] == "v1"
    for name, mount in cgroup["mounts"].items():
        assert os.path.ismount(mount), name
        expected = "cgroup2fs" if name in cgroup["v2_controllers"] else "cgroupfs"
        assert hi_fstype(mount) == expected, name
    if cgroup["v2_mount"]:
        with open(os.path.join(cgroup["v2_mount"], "cgroup.controllers")) as handle:
            assert sorted(handle.read().split()) == cgroup["v2_controllers"]
    with open("/proc/cgroups") as handle:
        v1 = {f[0] for f in (line.split() for line in handle if not line.startswith("#"))
              if f[1] != "0" and f[3] == "1"}
    assert v1 | set(cgroup["v2_controllers"]) == set(cgroup["controllers"])


def test_runtimes_match_their_own_version_output(hi_full):
    for name in ("runc", "crun"):
        entry = hi_full["runtimes"][name]
        path = shutil.which(name, path=SBIN_PATH)
        assert entry["path"] == path
        if path is None:
            assert entry["usable"] is False and "not found" in entry["reason"]
            continue
        first = hi_sh(path, "--version").stdout.splitlines()[0]
        assert entry["version"] == first.split()[2]
    cgroup = hi_full["cgroup"]
    crun = hi_full["runtimes"]["crun"]
    if crun["path"] and cgroup["mode"] == "hybrid" and cgroup["v2_controllers"]:
        assert crun["usable"] is False and "hybrid" in crun["reason"]


def test_criu_matches_criu_itself(hi_full):
    criu = hi_full["criu"]
    path = shutil.which("criu", path=SBIN_PATH)
    assert criu["path"] == path
    if path is None:
        assert criu["check_passed"] is False
        return
    version = hi_sh(path, "--version").stdout
    assert "Version: %s" % criu["version"] in version
    check = hi_sh(path, "check")
    assert criu["check_passed"] is (check.returncode == 0)
    assert criu["check_output"].strip().splitlines()[-1] in (check.stdout + check.stderr)
    for feature, key in (("uffd", "uffd"), ("uffd-noncoop", "uffd_noncoop"), ("mem_dirty_track", "mem_dirty_track")):
        verdict = hi_sh(path, "check", "--feature", feature).returncode == 0
        assert criu["features"][key] is verdict, feature
    assert criu["features"]["dirty_tracking"] is criu["features"]["mem_dirty_track"]
    with open("/proc/sys/fs/pipe-max-size") as handle:
        assert criu["pipe_max_size"] == int(handle.read())
    with open("/proc/self/status") as handle:
        capeff = int([line.split()[1] for line in handle if line.startswith("CapEff:")][0], 16)
    with open("/proc/self/uid_map") as handle:
        init_ns = handle.read().split() == ["0", "0", "4294967295"]
    assert criu["cap_sys_resource"] is (bool(capeff >> 24 & 1) and init_ns)
    can_grow = criu["cap_sys_resource"] or criu["pipe_max_size"] >= criu["pipe_size_needed"]
    expected = bool(criu["features"]["lazy_pages"] and can_grow)
    assert criu["features"]["lazy_pages_usable"] is expected
    assert (criu["lazy_pages_reason"] is None) is expected


def test_root_state_and_committed_limits(tmp_path):
    (tmp_path / "host.json").write_text(json.dumps({"state": "cordoned", "by": "hi-test"}))
    for name, limits in (("hi-a", {"memory": 268435456, "cpus": 0.5}), ("hi-b", {"memory": 134217728}),
                         ("hi-c", {"cpus": 2})):
        (tmp_path / "containers" / name).mkdir(parents=True)
        (tmp_path / "containers" / name / "spec.json").write_text(json.dumps({"name": name, "limits": limits}))
    rc, result = hi_run_module("root=%s gather=min" % tmp_path)
    assert rc == 0, result
    assert result["host_state"] == "cordoned" and result["host_state_detail"]["by"] == "hi-test"
    assert result["committed"] == dict(memory=268435456 + 134217728, cpus=2.5, containers=3,
                                       without_memory_limit=1, without_cpus_limit=1)
    assert result["container_count"] == 3
    assert "criu" not in result and "runtimes" not in result

    rc, checked = hi_run_module("root=%s gather=min" % tmp_path, check=True)
    assert rc == 0 and checked["changed"] is False
    for key in ("committed", "host_state", "cgroup", "cpus", "kernel", "memory_total", "overlayfs"):
        assert checked[key] == result[key], key


def test_gather_skips_criu_check(tmp_path):
    rc, result = hi_run_module("root=%s gather=!criu_check,!criu_features" % tmp_path)
    assert rc == 0, result
    assert set(result["criu"]) == {"path", "version"}
    assert "runtimes" in result and "committed" in result


def test_bad_host_json_fails_with_its_path(tmp_path):
    (tmp_path / "host.json").write_text(json.dumps({"state": "asleep"}))
    rc, result = hi_run_module("root=%s gather=host_state" % tmp_path)
    assert rc != 0 and result["changed"] is False
    assert "host.json" in result["msg"] and "'asleep'" in result["msg"] and "cordoned" in result["msg"]


def test_unknown_gather_item_is_refused(tmp_path):
    rc, result = hi_run_module("root=%s gather=gpus" % tmp_path)
    assert rc != 0 and "gather" in result["msg"] and "gpus" in result["msg"]


def test_ansible_doc_renders():
    proc = subprocess.run([os.path.join(REPO, ".venv", "bin", "ansible-doc"), "ctrhost.fleet.host_info"],
                          cwd=REPO, env=hi_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "lazy_pages_usable" in proc.stdout and "gather" in proc.stdout
