"""The limit table: normalisation, comparison, OCI resources, config.json."""

import json
import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.ctrhost.fleet.plugins.module_utils.limits import parse as _limitparse
from ansible_collections.ctrhost.fleet.plugins.module_utils.limits import records as _limits
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.limits.records import (
    KEYS,
    diff,
    normalize,
    persist,
    shares_to_weight,
    to_oci_resources,
    weight_to_shares,
)

M, G = 1024 ** 2, 1024 ** 3
HOST = dict(host_cpus=2, host_memory=8 * G, host_cpuset=[0, 1], host_mems=[0])


def norm(raw):
    return normalize(raw, **HOST)


def test_units_normalised_before_comparing():
    assert norm({"memory": "1G"}) == norm({"memory": "1024M"}) == norm({"memory": G})
    assert diff(norm({"memory": "1G", "cpus": "1.5"}), norm({"memory": "1024M", "cpus": 1.5})) == {}
    assert norm({"cpuset_cpus": "1,0"}) == norm({"cpuset_cpus": "0-1"}) == {"cpuset_cpus": "0-1"}


def test_full_normal_form():
    out = norm({"cpus": "1.5", "cpu_weight": 200, "cpuset_cpus": "0-1", "cpuset_mems": "0",
                "memory": "512M", "memory_swap": "1G", "memory_reservation": "256M", "pids": "100",
                "io_weight": 500, "io_read_bps": [{"device": "254:0", "rate": "10M"}],
                "io_write_bps": {"8:0": 1048576}})
    assert out == {"cpus": 1.5, "cpu_weight": 200, "cpuset_cpus": "0-1", "cpuset_mems": "0",
                   "memory": 512 * M, "memory_swap": G, "memory_reservation": 256 * M, "pids": 100,
                   "io_weight": 500, "io_read_bps": [{"device": "254:0", "rate": 10 * M}],
                   "io_write_bps": [{"device": "8:0", "rate": M}]}


def test_none_values_and_empty():
    assert norm(None) == {} and norm({}) == {} and norm({"memory": None}) == {}
    assert norm({"memory": "1G", "memory_swap": "unlimited"})["memory_swap"] == -1


def test_unknown_key_names_field_and_lists_valid_keys():
    with pytest.raises(ValidationError) as info:
        norm({"memroy": "1G"})
    assert info.value.field == "limits.memroy"
    for key in KEYS:
        assert key in info.value.msg


@pytest.mark.parametrize("raw,field,words", [
    ({"memory": 1}, "limits.memory", "at least 4M"),
    ({"memory": "3M"}, "limits.memory", "at least 4M"),
    ({"memory": "64G"}, "limits.memory", "host's memory"),
    ({"memory": "-1G"}, "limits.memory", "size"),
    ({"cpus": 1000}, "limits.cpus", "2 cpus"),
    ({"cpus": 0}, "limits.cpus", "> 0"),
    ({"cpus": -1}, "limits.cpus", "> 0"),
    ({"cpuset_cpus": "99"}, "limits.cpuset_cpus", "99 not present"),
    ({"cpuset_cpus": "0-2"}, "limits.cpuset_cpus", "2 not present"),
    ({"cpuset_mems": "1"}, "limits.cpuset_mems", "not present"),
    ({"pids": 0}, "limits.pids", "between 1"),
    ({"pids": -5}, "limits.pids", "between 1"),
    ({"pids": "lots"}, "limits.pids", "integer"),
    ({"pids": 10 ** 9}, "limits.pids", "between 1"),
    ({"cpu_weight": 0}, "limits.cpu_weight", "between 1 and 10000"),
    ({"cpu_weight": 10001}, "limits.cpu_weight", "between 1 and 10000"),
    ({"io_weight": 5}, "limits.io_weight", "between 10 and 1000"),
    ({"memory_swap": "1G"}, "limits.memory_swap", "needs limits.memory"),
    ({"memory": "1G", "memory_swap": "512M"}, "limits.memory_swap", ">= memory"),
    ({"memory": "1G", "memory_reservation": "2G"}, "limits.memory_reservation", "<= memory"),
    ({"io_read_bps": [{"device": "254:0"}]}, "limits.io_read_bps[0]", "device and rate"),
    ({"io_read_bps": [{"device": "sda", "rate": "1M"}]}, "limits.io_read_bps[0].device", "sda"),
    ({"io_read_bps": [{"device": "/dev/null", "rate": "1M"}]}, "limits.io_read_bps[0].device",
     "not a block device"),
    ({"io_read_bps": [{"device": "8:0", "rate": 0}]}, "limits.io_read_bps[0].rate", "> 0"),
    ({"io_read_bps": [{"device": "8:0", "rate": 1}, {"device": "8:0", "rate": 2}]},
     "limits.io_read_bps[1].device", "twice"),
    ({"io_write_bps": "8:0 1M"}, "limits.io_write_bps", "list"),
    ("1G", "limits", "dict"),
])
def test_rejects_bad_limits(raw, field, words):
    with pytest.raises(ValidationError) as info:
        norm(raw)
    assert info.value.field == field
    assert words in info.value.msg


def test_block_device_path_resolved_with_stat(monkeypatch):
    real_stat = os.stat

    class FakeStat:
        st_mode = stat.S_IFBLK | 0o600
        st_rdev = os.makedev(254, 0)

    monkeypatch.setattr(_limitparse.os, "stat", lambda p: FakeStat() if p == "/dev/lmdisk" else real_stat(p))
    limits = norm({"io_read_bps": [{"device": "/dev/lmdisk", "rate": "10M"}]})
    assert limits["io_read_bps"] == [{"device": "/dev/lmdisk", "rate": 10 * M}]
    res = to_oci_resources(limits)
    assert res["blockIO"]["throttleReadBpsDevice"] == [{"major": 254, "minor": 0, "rate": 10 * M}]


# ------------------------------------------------------------------ properties
raw_limits = st.fixed_dictionaries({}, optional={
    "cpus": st.integers(min_value=1, max_value=200).map(lambda n: str(n / 100)),
    "cpu_weight": st.integers(min_value=1, max_value=10000),
    "cpuset_cpus": st.sampled_from(["0", "1", "0-1", "1,0", [0, 1]]),
    "cpuset_mems": st.just("0"),
    "memory": st.integers(min_value=4, max_value=4096).map(lambda n: "%dM" % n),
    "pids": st.integers(min_value=1, max_value=_limitparse.MAX_PIDS),
    "io_weight": st.integers(min_value=10, max_value=1000),
    "io_read_bps": st.lists(st.fixed_dictionaries({
        "device": st.sampled_from(["8:0", "8:16", "254:0"]),
        "rate": st.integers(min_value=1, max_value=2 ** 40)}), unique_by=lambda e: e["device"]),
})


@settings(max_examples=200, deadline=None)
@given(raw_limits)
def test_normalize_is_idempotent(raw):
    once = norm(raw)
    assert norm(once) == once
    assert diff(once, norm(once)) == {}
    json.dumps(once)  # storable in spec.json as is


@given(st.integers(min_value=4, max_value=8192))
def test_size_spellings_equal(mib):
    assert norm({"memory": "%dM" % mib}) == norm({"memory": mib * M}) == norm({"memory": "%dKiB" % (mib * 1024)})
    if mib % 1024 == 0:
        assert norm({"memory": "%dG" % (mib // 1024)}) == norm({"memory": "%dM" % mib})


@settings(deadline=None)
@given(raw_limits, raw_limits)
def test_diff_names_exactly_the_changed_keys(a, b):
    na, nb = norm(a), norm(b)
    changed = diff(na, nb)
    assert set(changed) == {k for k in KEYS if na.get(k) != nb.get(k)}
    assert (changed == {}) == (na == nb)
    for key, change in changed.items():
        assert change == {"before": na.get(key), "after": nb.get(key)}


def test_weight_conversion_round_trips_through_runc_formula():
    for weight in range(1, 10001):
        shares = weight_to_shares(weight)
        assert 2 <= shares <= 262144
        assert shares_to_weight(shares) == weight
    assert weight_to_shares(1) == 2 and weight_to_shares(10000) == 262144


def test_io_weight_conversion_is_monotonic_and_inverts():
    values = [_limits.blkio_to_io_weight(w) for w in range(10, 1001)]
    assert values == sorted(values) and len(set(values)) == len(values)
    assert values[0] == 1 and values[-1] == 10000
    for w in (10, 100, 500, 1000):
        assert _limits.io_weight_to_blkio(_limits.blkio_to_io_weight(w)) == w


def test_to_oci_resources():
    res = to_oci_resources(norm({"cpus": 1.5, "cpu_weight": 100, "cpuset_cpus": "0", "memory": "1G",
                                 "memory_reservation": "512M", "pids": 10, "io_weight": 300,
                                 "io_write_bps": [{"device": "8:16", "rate": "1M"}]}))
    assert res == {
        "cpu": {"quota": 150000, "period": 100000, "shares": weight_to_shares(100), "cpus": "0"},
        "memory": {"limit": G, "swap": -1, "reservation": 512 * M},
        "pids": {"limit": 10},
        "blockIO": {"weight": 300, "throttleWriteBpsDevice": [{"major": 8, "minor": 16, "rate": M}]},
    }
    assert to_oci_resources({}) == {}
    assert to_oci_resources(norm({"memory": "1G", "memory_swap": "2G"}))["memory"] == {
        "limit": G, "swap": 2 * G}


def test_persist_keeps_devices_and_is_idempotent(tmp_path):
    path = tmp_path / "config.json"
    devices = [{"allow": False, "access": "rwm"}]
    path.write_text(json.dumps({"ociVersion": "1.0.2", "linux": {
        "resources": {"devices": devices, "memory": {"limit": 1}}, "cgroupsPath": "/x/y"}}))
    limits = norm({"memory": "256M", "pids": 50})
    assert persist(str(tmp_path), limits, check_mode=True) is True
    assert json.loads(path.read_text())["linux"]["resources"]["memory"] == {"limit": 1}
    assert persist(str(tmp_path), limits) is True
    cfg = json.loads(path.read_text())
    assert cfg["linux"]["resources"] == {"devices": devices, "memory": {"limit": 256 * M, "swap": -1},
                                         "pids": {"limit": 50}}
    assert cfg["linux"]["cgroupsPath"] == "/x/y"
    assert persist(str(tmp_path), limits) is False
    assert persist(str(tmp_path), {}) is True
    assert json.loads(path.read_text())["linux"]["resources"] == {"devices": devices}


def test_persist_writes_a_given_config(tmp_path):
    cfg = {"ociVersion": "1.0.2", "linux": {"resources": {"pids": {"limit": 9}}}}
    assert persist(str(tmp_path), norm({"pids": 50}), check_mode=True, config=cfg) is True
    assert not (tmp_path / "config.json").exists()
    assert persist(str(tmp_path), norm({"pids": 50}), config=cfg) is True
    assert json.loads((tmp_path / "config.json").read_text())["linux"]["resources"] == {
        "pids": {"limit": 50}, "devices": [{"allow": False, "access": "rwm"}]}


def test_host_facts_shape():
    facts = _limits.host_facts()
    assert facts["cpus"] >= 1 and facts["memory"] > 0 and facts["cpuset"] and facts["mems"]


def test_host_cpus_are_the_affinity_count(monkeypatch):
    from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import sysinfo as _sysinfo
    monkeypatch.setattr(_sysinfo, "proc_status", lambda base="/": {"Cpus_allowed_list": "0,2"})
    assert _limits.host_facts()["cpus"] == 2
    with pytest.raises(ValidationError) as info:
        normalize({"cpus": 3}, **dict(HOST, host_cpus=_limits.host_facts()["cpus"]))
    assert info.value.field == "limits.cpus" and "2 cpus" in info.value.msg


def test_argument_spec_is_the_table():
    spec = _limits.argument_spec()
    assert list(spec) == list(KEYS)
    assert spec["pids"] == dict(type="int") and spec["memory"] == dict(type="raw")
