"""The placement filter: property tests on generated fleets plus the documented edge cases."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.fleet.placement import PlacementError, place

MiB = 1024 * 1024
GiB = 1024 * MiB
STATES = ("active", "active", "active", "cordoned", "draining", "drained", "upgrading")


@st.composite
def fleets(draw):
    """(containers, hosts, source, headroom, overcommit) with realistic numbers."""
    nhosts = draw(st.integers(min_value=1, max_value=6))
    hosts = {}
    for i in range(nhosts):
        total = draw(st.integers(min_value=1, max_value=64)) * GiB
        cpus = draw(st.integers(min_value=1, max_value=32))
        hosts["h%02d" % i] = dict(
            cpus=cpus,
            memory_total=total,
            memory_available=total // 2,
            host_state=draw(st.sampled_from(STATES)),
            committed=dict(
                memory=draw(st.integers(min_value=0, max_value=total // MiB)) * MiB,
                cpus=draw(st.integers(min_value=0, max_value=cpus * 100)) / 100.0,
                containers=draw(st.integers(min_value=0, max_value=20)),
            ),
        )
    nctrs = draw(st.integers(min_value=0, max_value=12))
    containers = []
    for i in range(nctrs):
        limits = {}
        memory = draw(st.integers(min_value=0, max_value=8 * 1024)) * MiB
        ctr = dict(name="c%02d" % i, state="running", limits=limits)
        if draw(st.integers(min_value=0, max_value=4)):
            limits["memory"] = memory
        else:  # no memory limit: its usage counts
            ctr["usage"] = dict(memory=memory, cpu_ns=1, pids=1)
        if draw(st.booleans()):
            limits["cpus"] = draw(st.integers(min_value=1, max_value=400)) / 100.0
        if draw(st.integers(min_value=0, max_value=9)) == 0:
            ctr["dest"] = draw(st.sampled_from(sorted(hosts)))
        containers.append(ctr)
    source = draw(st.one_of(st.none(), st.sampled_from(sorted(hosts))))
    headroom = draw(st.sampled_from([0.0, 0.05, 0.1, 0.25, 0.5]))
    overcommit = draw(st.sampled_from([0.5, 1.0, 1.5, 4.0]))
    return containers, hosts, source, headroom, overcommit


def _demand(ctr):
    limits = ctr.get("limits") or {}
    memory = limits.get("memory")
    if memory is None:
        memory = (ctr.get("usage") or {}).get("memory") or 0
    return memory, limits.get("cpus") or 0.0


def _check_capacity(result, containers, hosts, headroom, overcommit):
    """Independent arithmetic (floats with a tiny tolerance), not the library's."""
    by_name = {c["name"]: c for c in containers}
    for host, info in hosts.items():
        placed = [by_name[name] for name, dest in result.items() if dest == host]
        if not placed:
            continue
        memory = info["committed"]["memory"] + sum(_demand(c)[0] for c in placed)
        cpus = info["committed"]["cpus"] + sum(_demand(c)[1] for c in placed)
        assert memory <= info["memory_total"] * (1 - headroom) + 1, (host, memory)
        assert cpus <= info["cpus"] * overcommit + 1e-4, (host, cpus)


settings.register_profile("ctrhost", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ctrhost")


@given(fleets())
def test_all_or_error_never_overcommits_never_ineligible(fleet):
    containers, hosts, source, headroom, overcommit = fleet
    try:
        result = place(containers, hosts, source=source, memory_headroom=headroom, cpu_overcommit=overcommit)
    except PlacementError as exc:
        # all-or-error: the message names at least one container, each of them a real one
        assert exc.details["unplaced"]
        assert set(exc.details["unplaced"]) <= {c["name"] for c in containers}
        for name in exc.details["unplaced"]:
            assert name in exc.msg
        return
    assert sorted(result) == sorted(c["name"] for c in containers)
    for dest in result.values():
        assert dest in hosts
        assert dest != source
        assert hosts[dest]["host_state"] == "active"
    for ctr in containers:
        if ctr.get("dest"):
            assert result[ctr["name"]] == ctr["dest"]
    _check_capacity(result, containers, hosts, headroom, overcommit)


@given(fleets(), st.randoms(use_true_random=False))
def test_deterministic_whatever_the_input_order(fleet, rnd):
    containers, hosts, source, headroom, overcommit = fleet
    kwargs = dict(source=source, memory_headroom=headroom, cpu_overcommit=overcommit)
    try:
        first = place(containers, hosts, **kwargs)
    except PlacementError as exc:
        first = ("error", exc.msg)
    shuffled = list(containers)
    rnd.shuffle(shuffled)
    host_items = list(hosts.items())
    rnd.shuffle(host_items)
    try:
        second = place(shuffled, dict(host_items), **kwargs)
    except PlacementError as exc:
        second = ("error", exc.msg)
    assert first == second


@given(fleets())
def test_fits_when_only_empty_active_hosts_have_room_for_all(fleet):
    """If one eligible host alone can take everything, placement never fails."""
    containers, hosts, source, headroom, overcommit = fleet
    containers = [dict(c, dest=None) for c in containers]
    need_mem = sum(_demand(c)[0] for c in containers)
    need_cpu = sum(_demand(c)[1] for c in containers)
    hosts = dict(hosts)
    hosts["zz-big"] = dict(cpus=int(need_cpu / overcommit) + 2, memory_total=int(need_mem / (1 - headroom)) + GiB,
                           host_state="active", committed=dict(memory=0, cpus=0.0, containers=0))
    result = place(containers, hosts, source=source if source != "zz-big" else None,
                   memory_headroom=headroom, cpu_overcommit=overcommit)
    assert sorted(result) == sorted(c["name"] for c in containers)


def _host(state="active", total=16 * GiB, cpus=8, mem=0, cpu=0.0, count=0):
    return dict(cpus=cpus, memory_total=total, host_state=state,
                committed=dict(memory=mem, cpus=cpu, containers=count))


def _ctr(name, memory=None, cpus=None, **extra):
    limits = {}
    if memory is not None:
        limits["memory"] = memory
    if cpus is not None:
        limits["cpus"] = cpus
    return dict(name=name, limits=limits, **extra)


def test_spreads_largest_first_onto_least_loaded():
    hosts = {"a": _host(), "b": _host(), "c": _host(mem=8 * GiB)}
    ctrs = [_ctr("small", 1 * GiB), _ctr("big", 4 * GiB), _ctr("mid", 2 * GiB)]
    assert place(ctrs, hosts) == {"big": "a", "mid": "b", "small": "b"}


def test_never_the_source_nor_a_cordoned_host():
    hosts = {"src": _host(), "cord": _host("cordoned"), "drain": _host("draining"), "ok": _host(mem=10 * GiB)}
    assert place([_ctr("w", 1 * GiB)], hosts, source="src") == {"w": "ok"}


def test_headroom_is_respected_to_the_byte():
    hosts = {"a": _host(total=10 * GiB)}
    limit = 9 * GiB  # 10 GiB * 0.9
    assert place([_ctr("x", limit)], hosts) == {"x": "a"}
    with pytest.raises(PlacementError):
        place([_ctr("x", limit + 1)], hosts)
    assert place([_ctr("x", limit + 1)], hosts, memory_headroom=0.0) == {"x": "a"}


def test_cpu_overcommit_option():
    hosts = {"a": _host(cpus=2, cpu=1.5)}
    with pytest.raises(PlacementError, match="cpus 1.00"):
        place([_ctr("x", MiB, 1)], hosts)
    assert place([_ctr("x", MiB, 1)], hosts, cpu_overcommit=1.5) == {"x": "a"}


def test_error_names_every_container_that_does_not_fit_and_the_hosts():
    hosts = {"a": _host(total=4 * GiB), "b": _host("cordoned")}
    ctrs = [_ctr("fits", 1 * GiB), _ctr("huge1", 8 * GiB), _ctr("huge2", 9 * GiB)]
    with pytest.raises(PlacementError) as info:
        place(ctrs, hosts)
    assert info.value.details["unplaced"] == ["huge1", "huge2"]
    assert "huge1" in info.value.msg and "huge2" in info.value.msg and "fits (" not in info.value.msg
    assert "b: not eligible (state cordoned)" in info.value.msg


def test_pinned_destination():
    hosts = {"a": _host(), "b": _host()}
    assert place([_ctr("x", GiB, dest="b"), _ctr("y", GiB)], hosts) == {"x": "b", "y": "a"}
    with pytest.raises(PlacementError, match=r"pinned to c\): not a candidate host"):
        place([_ctr("x", GiB, dest="c")], hosts)
    with pytest.raises(PlacementError, match="it is the source host"):
        place([_ctr("x", GiB, dest="a")], hosts, source="a")


def test_container_info_shapes_sizes_usage_and_mapping_input():
    hosts = {"a": _host(total=2 * GiB, mem=0)}
    # a size string, and a container without a memory limit counted by its usage
    ctrs = {"x": dict(limits=dict(memory="1G")), "y": dict(limits={}, usage=dict(memory=900 * MiB))}
    with pytest.raises(PlacementError, match="y"):
        place(ctrs, hosts)
    ctrs["y"]["usage"]["memory"] = 700 * MiB
    assert place(ctrs, hosts) == {"x": "a", "y": "a"}


def test_failed_host_results_are_skipped_and_state_is_required():
    hosts = {"a": dict(failed=True, msg="unreachable"), "b": _host()}
    assert place([_ctr("x", GiB)], hosts) == {"x": "b"}
    with pytest.raises(ValidationError, match=r"hosts\[b\].host_state"):
        place([_ctr("x", GiB)], {"b": dict(cpus=1, memory_total=GiB)})


@pytest.mark.parametrize("kwargs, field", [
    (dict(memory_headroom=1.0), "memory_headroom"),
    (dict(memory_headroom=-0.1), "memory_headroom"),
    (dict(cpu_overcommit=0), "cpu_overcommit"),
])
def test_bad_options(kwargs, field):
    with pytest.raises(ValidationError) as info:
        place([], {"a": _host()}, **kwargs)
    assert info.value.field == field


def test_bad_inputs_name_the_field():
    with pytest.raises(ValidationError, match="listed twice"):
        place([_ctr("x"), _ctr("x")], {"a": _host()})
    with pytest.raises(ValidationError, match=r"container x: limits.memory"):
        place([_ctr("x", "lots")], {"a": _host()})
    with pytest.raises(ValidationError, match=r"containers\[0\].name"):
        place([dict(limits={})], {"a": _host()})


def test_filter_wrapper_raises_ansible_filter_error():
    errors = pytest.importorskip("ansible.errors")
    from ansible_collections.ctrhost.fleet.plugins.filter.placement import FilterModule

    flt = FilterModule().filters()["placement"]
    assert flt([_ctr("x", GiB)], {"a": _host()}, source="b") == {"x": "a"}
    with pytest.raises(errors.AnsibleFilterError, match=r"x \(memory 32.00G"):
        flt([_ctr("x", 32 * GiB)], {"a": _host()})


def test_large_fleet_is_fast_and_balanced():
    rnd = random.Random(7)
    hosts = {"h%03d" % i: _host(total=64 * GiB, cpus=32) for i in range(50)}
    ctrs = [_ctr("c%04d" % i, rnd.randint(1, 8) * 256 * MiB, rnd.randint(1, 4) / 4) for i in range(2000)]
    result = place(ctrs, hosts)
    counts = {}
    for dest in result.values():
        counts[dest] = counts.get(dest, 0) + 1
    assert len(counts) == 50
    assert max(counts.values()) - min(counts.values()) <= 10
