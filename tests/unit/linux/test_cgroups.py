"""Cgroup reads, verification and live apply on sample v1, hybrid and v2 trees.

The trees are plain directories; the only thing replaced is the runtime (runc update),
by a small stand-in that writes the files the way runc's cgroup drivers do.
"""

import errno
import os

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.limits import parse as _limitparse
from ansible_collections.ctrhost.fleet.plugins.module_utils.limits import records as _limits
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.cgroups import Cgroup, detect_mode
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import (
    LimitError,
    ValidationError,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils.limits.live import apply_live, mismatches, read_limits
from ansible_collections.ctrhost.fleet.plugins.module_utils.limits.records import normalize

M = 1024 * 1024
PATH = "/ctrhost/lmhost/lm1"
UNLIMITED = "9223372036854771712"


def write_tree(root, files):
    for rel, content in files.items():
        path = os.path.join(str(root), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(content + "\n")


def v1_tree(base, cpu_dir="cpu"):
    leaf = PATH.lstrip("/")
    files = {
        "cpuset/cpuset.cpus": "0-3", "cpuset/cpuset.mems": "0",
        "cpuset/ctrhost/lmhost/cpuset.cpus": "0-3", "cpuset/ctrhost/lmhost/cpuset.mems": "0",
        "cpuset/%s/cpuset.cpus" % leaf: "0-3", "cpuset/%s/cpuset.mems" % leaf: "0",
        "%s/%s/cpu.cfs_quota_us" % (cpu_dir, leaf): "-1",
        "%s/%s/cpu.cfs_period_us" % (cpu_dir, leaf): "100000",
        "%s/%s/cpu.shares" % (cpu_dir, leaf): "1024",
        "%s/%s/cpuacct.usage" % (cpu_dir if "," in cpu_dir else "cpuacct", leaf): "123456789",
        "memory/%s/memory.limit_in_bytes" % leaf: UNLIMITED,
        "memory/%s/memory.memsw.limit_in_bytes" % leaf: UNLIMITED,
        "memory/%s/memory.soft_limit_in_bytes" % leaf: UNLIMITED,
        "memory/%s/memory.usage_in_bytes" % leaf: str(70 * M),
        "memory/%s/memory.max_usage_in_bytes" % leaf: str(90 * M),
        "memory/%s/memory.oom_control" % leaf: "oom_kill_disable 0\nunder_oom 0\noom_kill 2",
        "memory/%s/cgroup.procs" % leaf: "4242",
        "pids/%s/pids.max" % leaf: "max", "pids/%s/pids.current" % leaf: "3",
        "pids/%s/cgroup.procs" % leaf: "4242",
        "blkio/%s/blkio.weight" % leaf: "500",
        "blkio/%s/blkio.throttle.read_bps_device" % leaf: "",
        "blkio/%s/blkio.throttle.write_bps_device" % leaf: "",
        "freezer/%s/freezer.state" % leaf: "FROZEN",
    }
    write_tree(base, files)
    return Cgroup(PATH, base=str(base))


def v2_tree(base, reclaim=True):
    leaf = PATH.lstrip("/")
    files = {
        "cgroup.controllers": "cpuset cpu io memory pids",
        "ctrhost/lmhost/cpuset.cpus.effective": "0-3", "ctrhost/lmhost/cpuset.mems.effective": "0",
        leaf + "/cpu.max": "max 100000", leaf + "/cpu.weight": "100",
        leaf + "/cpuset.cpus": "", leaf + "/cpuset.mems": "",
        leaf + "/memory.max": "max", leaf + "/memory.swap.max": "max", leaf + "/memory.low": "0",
        leaf + "/memory.high": "max",
        leaf + "/memory.current": str(70 * M), leaf + "/memory.peak": str(90 * M),
        leaf + "/memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 1",
        leaf + "/pids.max": "max", leaf + "/pids.current": "5",
        leaf + "/io.weight": "default 100", leaf + "/io.max": "",
        leaf + "/cpu.stat": "usage_usec 2500\nuser_usec 2000\nsystem_usec 500",
        leaf + "/cgroup.freeze": "0", leaf + "/cgroup.events": "populated 1\nfrozen 0",
        leaf + "/cgroup.procs": "4242",
    }
    if reclaim:
        files[leaf + "/memory.reclaim"] = ""
    write_tree(base, files)
    return Cgroup(PATH, base=str(base))


def read(cg, controller, name):
    with open(cg.file(controller, name)) as handle:
        return handle.read().strip()


class FakeRunc:
    """Stands in for `runc update --resources -`: writes what runc's fs/fs2 drivers write."""

    def __init__(self, cg, ignore=()):
        self.cg, self.ignore, self.calls = cg, set(ignore), []

    def update(self, cid, res):
        self.calls.append((cid, res))
        cg, w = self.cg, self.cg.write
        cpu, mem = res.get("cpu", {}), res.get("memory", {})
        if cg.v2:
            if cpu.get("quota"):
                w(None, "cpu.max", "%s %d" % ("max" if cpu["quota"] < 0 else cpu["quota"], cpu["period"]))
            if cpu.get("shares"):
                w(None, "cpu.weight", str(_limits.shares_to_weight(cpu["shares"])))
            for key in ("cpus", "mems"):
                if cpu.get(key):
                    w(None, "cpuset." + key, cpu[key])
            if mem.get("limit"):
                w(None, "memory.max", "max" if mem["limit"] < 0 else str(mem["limit"]))
                swap = mem.get("swap", 0)
                w(None, "memory.swap.max", "max" if swap < 0 else str(swap - mem["limit"]))
            if mem.get("reservation"):
                w(None, "memory.low", str(mem["reservation"]))
            if res.get("pids") and "pids" not in self.ignore:
                w(None, "pids.max", "max" if res["pids"]["limit"] < 0 else str(res["pids"]["limit"]))
            if res.get("blockIO", {}).get("weight"):
                w(None, "io.weight", "default %d" % _limits.blkio_to_io_weight(res["blockIO"]["weight"]))
            for name, value in res.get("unified", {}).items():
                w(None, name, value)
        else:
            raise AssertionError("v1 is exercised against the real runc (integration tests)")


def test_every_key_has_its_files_or_a_backend(tmp_path):
    cg, v1 = v2_tree(tmp_path / "v2"), v1_tree(tmp_path / "v1")
    for limit in _limits.LIMITS:
        if limit.live == "dir":
            assert limit.backend is not None and limit.directory
            continue
        for group in (cg, v1):
            assert limit.where(group)[1] and limit.actual(group) is not None, limit.key
            assert limit.show(group, None) == limit.actual(group), limit.key  # unset = the defaults
    assert set(_limits.KEYS) == set(_limits.CGROUP_KEYS) | set(_limits.DIR_KEYS)


def test_detect_mode_from_sample_trees(tmp_path):
    v1_tree(tmp_path / "a")
    v2_tree(tmp_path / "b")
    v1_tree(tmp_path / "c")
    write_tree(tmp_path / "c", {"unified/cgroup.controllers": "hugetlb"})
    assert detect_mode(str(tmp_path / "a")) == "v1"
    assert detect_mode(str(tmp_path / "b")) == "v2"
    assert detect_mode(str(tmp_path / "c")) == "hybrid"
    assert Cgroup(PATH, base=str(tmp_path / "c")).v2 is False


@pytest.mark.parametrize("bad", ["system.slice:lm:x", "/a/../b", None])
def test_rejects_unsupported_paths(bad):
    with pytest.raises(ValidationError) as info:
        Cgroup(bad, base="/nonexistent", mode="v2")
    assert info.value.field == "cgroups_path"


def test_v1_read_defaults_usage_and_state(tmp_path):
    cg = v1_tree(tmp_path)
    assert cg.mode == "v1" and cg.exists()
    assert read_limits(cg) == {}
    assert mismatches(cg, {}) == []
    assert cg.usage() == dict(memory_current=70 * M, memory_peak=90 * M, cpu_ns=123456789,
                              pids_current=3, oom_kills=2)
    assert cg.freezer_state() == "frozen"
    assert cg.procs() == [4242]


def test_v1_read_limits_normalised(tmp_path):
    cg = v1_tree(tmp_path, cpu_dir="cpu,cpuacct")
    leaf = PATH.lstrip("/")
    write_tree(tmp_path, {
        "cpu,cpuacct/%s/cpu.cfs_quota_us" % leaf: "150000",
        "cpu,cpuacct/%s/cpu.shares" % leaf: str(_limits.weight_to_shares(200)),
        "cpuset/%s/cpuset.cpus" % leaf: "1,2,3",
        "memory/%s/memory.limit_in_bytes" % leaf: str(512 * M),
        "memory/%s/memory.memsw.limit_in_bytes" % leaf: str(1024 * M),
        "memory/%s/memory.soft_limit_in_bytes" % leaf: str(256 * M),
        "pids/%s/pids.max" % leaf: "64",
        "blkio/%s/blkio.weight" % leaf: "300",
        "blkio/%s/blkio.throttle.read_bps_device" % leaf: "8:0 1048576\n254:0 2097152",
    })
    assert cg.dir("cpu") == cg.dir("cpuacct") == os.path.join(str(tmp_path), "cpu,cpuacct", leaf)
    assert cg.usage()["cpu_ns"] == 123456789
    assert read_limits(cg) == {
        "cpus": 1.5, "cpu_weight": 200, "cpuset_cpus": "1-3", "memory": 512 * M,
        "memory_swap": 1024 * M, "memory_reservation": 256 * M, "pids": 64, "io_weight": 300,
        "io_read_bps": [{"device": "8:0", "rate": M}, {"device": "254:0", "rate": 2 * M}]}
    declared = normalize({"cpus": 1.5, "cpu_weight": 200, "cpuset_cpus": "1-3", "memory": "512M",
                          "memory_swap": "1G", "memory_reservation": "256M", "pids": 64,
                          "io_weight": 300, "io_read_bps": {"254:0": "2M", "8:0": "1M"}},
                         4, 8 * 1024 * M, [0, 1, 2, 3])
    assert mismatches(cg, declared) == []
    wrong = mismatches(cg, dict(declared, pids=65))
    assert wrong == [("pids", cg.file("pids", "pids.max"), "65", "64")]


def test_v2_read_limits_usage_and_state(tmp_path):
    cg = v2_tree(tmp_path)
    assert cg.mode == "v2" and cg.exists()
    assert read_limits(cg) == {}
    assert mismatches(cg, {}) == []
    assert cg.usage() == dict(memory_current=70 * M, memory_peak=90 * M, cpu_ns=2500000,
                              pids_current=5, oom_kills=1)
    assert cg.freezer_state() == "thawed"
    leaf = PATH.lstrip("/")
    write_tree(tmp_path, {leaf + "/cpu.max": "50000 100000", leaf + "/memory.max": str(256 * M),
                          leaf + "/memory.swap.max": str(256 * M), leaf + "/cpuset.cpus": "0-1",
                          leaf + "/io.max": "8:0 rbps=1048576 wbps=max riops=max wiops=max",
                          leaf + "/io.weight": "default %d" % _limits.blkio_to_io_weight(250),
                          leaf + "/cgroup.freeze": "1", leaf + "/cgroup.events": "frozen 1"})
    assert read_limits(cg) == {
        "cpus": 0.5, "cpuset_cpus": "0-1", "memory": 256 * M, "memory_swap": 512 * M, "io_weight": 250,
        "io_read_bps": [{"device": "8:0", "rate": M}]}
    assert cg.freezer_state() == "frozen"


def test_v2_apply_live_and_verify(tmp_path):
    cg = v2_tree(tmp_path)
    runc = FakeRunc(cg)
    new = normalize({"cpus": "1.5", "cpu_weight": 300, "cpuset_cpus": "0-1", "memory": "512M",
                     "memory_swap": "768M", "memory_reservation": "128M", "pids": 100,
                     "io_weight": 200, "io_write_bps": {"8:0": "5M"}}, 4, 8192 * M, [0, 1, 2, 3])
    plan = apply_live(runc, "lm1", cg, {}, new, check_mode=True)
    assert plan["changed"] and plan["after"] == new and runc.calls == []
    assert read(cg, None, "memory.max") == "max"

    result = apply_live(runc, "lm1", cg, {}, new)
    assert result["changed"] and set(result["changes"]) == set(new)
    assert read(cg, None, "cpu.max") == "150000 100000"
    assert read(cg, None, "cpu.weight") == "300"
    assert read(cg, None, "memory.max") == str(512 * M)
    assert read(cg, None, "memory.swap.max") == str(256 * M)
    assert read(cg, None, "memory.low") == str(128 * M)
    assert read(cg, None, "pids.max") == "100"
    assert read(cg, None, "io.max") == "8:0 wbps=%d" % (5 * M)
    assert result["after"] == dict(new, io_write_bps=[{"device": "8:0", "rate": 5 * M}])
    # memory and swap travel together; the throttle is not runc's business
    cid, res = runc.calls[0]
    assert cid == "lm1" and res["memory"]["swap"] == 768 * M and "throttleWriteBpsDevice" not in str(res)

    assert apply_live(runc, "lm1", cg, new, new)["changed"] is False
    assert len(runc.calls) == 1

    # removing keys resets them to the v2 defaults
    reset = apply_live(runc, "lm1", cg, new, {"memory": 512 * M})
    assert set(reset["changes"]) == set(new) - {"memory"}
    assert read(cg, None, "cpu.max").startswith("max")
    assert read(cg, None, "cpu.weight") == "100" and read(cg, None, "memory.low") == "0"
    assert read(cg, None, "memory.swap.max") == "max" and read(cg, None, "pids.max") == "max"
    assert read(cg, None, "cpuset.cpus") == "0-3" and read(cg, None, "io.max") == "8:0 wbps=max"
    assert read_limits(cg) == {"memory": 512 * M}


def test_v2_verification_failure_names_file_expected_actual(tmp_path):
    cg = v2_tree(tmp_path)
    with pytest.raises(LimitError) as info:
        apply_live(FakeRunc(cg, ignore={"pids"}), "lm1", cg, {}, {"pids": 10})
    details = info.value.details
    assert details["file"] == cg.file(None, "pids.max")
    assert details["expected"] == "10" and details["actual"] == "max"
    assert "pids.max" in info.value.msg and "'10'" in info.value.msg


def test_v2_lowering_memory_below_usage_refused_without_touching_the_limit(tmp_path):
    cg = v2_tree(tmp_path)
    cg.write(None, "memory.max", str(200 * M))
    runc = FakeRunc(cg)
    with pytest.raises(LimitError) as info:
        apply_live(runc, "lm1", cg, {"memory": 200 * M}, {"memory": 32 * M})
    assert "uses 70M" in info.value.msg and "32M" in info.value.msg
    assert info.value.details["requested"] == 32 * M and info.value.details["usage"] == 70 * M
    assert read(cg, None, "memory.reclaim") == str(70 * M - 32 * M + 4 * _limitparse.PAGE)
    assert read(cg, None, "memory.max") == str(200 * M) and runc.calls == []


def test_v2_lowering_memory_after_successful_reclaim(tmp_path, monkeypatch):
    cg = v2_tree(tmp_path)
    real_write = cg.write

    def kernel_write(controller, name, value):  # the kernel frees what memory.reclaim asks
        real_write(controller, name, value)
        if name == "memory.reclaim":
            real_write(None, "memory.current", str(70 * M - int(value)))

    monkeypatch.setattr(cg, "write", kernel_write)
    result = apply_live(FakeRunc(cg), "lm1", cg, {}, {"memory": 32 * M})
    assert result["changed"] and read(cg, None, "memory.max") == str(32 * M)


def test_v2_without_memory_reclaim_uses_memory_high_and_restores_it(tmp_path):
    cg = v2_tree(tmp_path, reclaim=False)
    with pytest.raises(LimitError):
        apply_live(FakeRunc(cg), "lm1", cg, {}, {"memory": 32 * M})
    assert read(cg, None, "memory.high") == "max"
    assert read(cg, None, "memory.max") == "max"


def test_v1_step_down_refused_by_kernel_restores_limit(tmp_path, monkeypatch):
    cg = v1_tree(tmp_path)
    cg.write("memory", "memory.limit_in_bytes", str(256 * M))
    real_write, steps = cg.write, []

    def kernel_write(controller, name, value):  # v1 answers EBUSY below what it can reclaim
        if name == "memory.limit_in_bytes":
            steps.append(int(value))
            if int(value) < 50 * M:
                raise OSError(errno.EBUSY, "Device or resource busy")
        real_write(controller, name, value)

    monkeypatch.setattr(cg, "write", kernel_write)
    with pytest.raises(LimitError) as info:
        cg.lower_memory(16 * M, settle=0)
    assert steps[0] < 70 * M and steps[0] > steps[1] > 16 * M  # stepped down, refused at 43M
    assert steps[-1] == 256 * M  # then restored
    assert read(cg, "memory", "memory.limit_in_bytes") == str(256 * M)
    assert "limits.memory" in info.value.msg and "uses 70M" in info.value.msg
    assert "stays at 256M" in info.value.msg


def test_v1_step_down_success_and_no_op(tmp_path):
    cg = v1_tree(tmp_path)
    assert cg.lower_memory(100 * M) == dict(usage=70 * M, stepped=False)
    assert cg.lower_memory(40 * M, settle=0)["stepped"] is True
    assert read(cg, "memory", "memory.limit_in_bytes") == str(40 * M)


def test_v1_io_throttle_write(tmp_path):
    cg = v1_tree(tmp_path)
    limit = _limits.OPTIONS["io_read_bps"]
    limit.write(cg, [{"device": "8:0", "rate": M}])
    assert read(cg, "blkio", "blkio.throttle.read_bps_device") == "8:0 %d" % M
    assert limit.actual(cg) == "8:0=%d" % M
    limit.write(cg, [])
    assert read(cg, "blkio", "blkio.throttle.read_bps_device") == "8:0 0"
    assert limit.actual(cg) == ""


def test_io_weight_without_weight_file_is_refused_before_acting(tmp_path):
    cg = v1_tree(tmp_path)
    os.unlink(cg.file("blkio", "blkio.weight"))
    with pytest.raises(LimitError) as info:
        apply_live(FakeRunc(cg), "lm1", cg, {}, {"io_weight": 100})
    assert "limits.io_weight" in info.value.msg and "blkio.bfq.weight" in info.value.msg


def test_remove_rmdirs_leaf_in_every_hierarchy(tmp_path):
    for sub in ("memory", "cpu", "pids", "freezer", "unified"):
        os.makedirs(os.path.join(str(tmp_path), sub, PATH.lstrip("/")))
    os.makedirs(os.path.join(str(tmp_path), "cpuset", "ctrhost"))
    cg = Cgroup(PATH, base=str(tmp_path), mode="hybrid")
    assert cg.exists()
    removed = cg.remove()
    assert len(removed) == 5 and not cg.exists()
    assert os.path.isdir(os.path.join(str(tmp_path), "memory", "ctrhost", "lmhost"))
    assert cg.remove() == []
    assert cg.freezer_state() is None and read_limits(cg) == {}
