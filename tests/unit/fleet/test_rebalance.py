"""The rebalance planner: property tests on generated fleets plus simple cases with a known fewest-moves answer."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.fleet.rebalance import plan

MiB = 1024 * 1024
GiB = 1024 * MiB
STATES = ("active", "active", "active", "cordoned", "draining", "drained")


def host(total_gib=10, cpus=4, state="active"):
    return dict(memory_total=total_gib * GiB, cpus=cpus, host_state=state, committed={})


def ctr(name, memory_mib=0, cpus=None, usage_mib=None):
    limits = dict(memory=memory_mib * MiB) if memory_mib else {}
    if cpus is not None:
        limits["cpus"] = cpus
    out = dict(name=name, limits=limits)
    if usage_mib is not None:
        out["usage"] = dict(memory=usage_mib * MiB)
    return out


@st.composite
def fleets(draw):
    hosts, containers = {}, {}
    for i in range(draw(st.integers(min_value=1, max_value=5))):
        name = "h%d" % i
        hosts[name] = host(draw(st.integers(min_value=1, max_value=16)), draw(st.integers(min_value=1, max_value=8)),
                           draw(st.sampled_from(STATES)))
        containers[name] = [ctr("c%d_%d" % (i, j), draw(st.integers(min_value=0, max_value=4096)),
                                draw(st.sampled_from([None, 0.25, 0.5, 1, 2])),
                                draw(st.integers(min_value=0, max_value=512)))
                            for j in range(draw(st.integers(min_value=0, max_value=8)))]
    return hosts, containers, draw(st.sampled_from([0.3, 0.5, 0.7, 0.9])), draw(st.sampled_from([0.5, 0.8, 1.0]))


def load(hosts, containers, moves):
    """Memory bytes and cpus per host after ``moves``, computed here independently."""
    where = {c["name"]: h for h, ctrs in containers.items() for c in ctrs}
    spec = {c["name"]: c for ctrs in containers.values() for c in ctrs}
    for move in moves:
        assert where[move["name"]] == move["source"]
        where[move["name"]] = move["dest"]
    out = {h: [0, 0.0] for h in hosts}
    for name, h in where.items():
        limits = spec[name]["limits"]
        out[h][0] += limits.get("memory") or (spec[name].get("usage") or {}).get("memory", 0)
        out[h][1] += limits.get("cpus") or 0
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets())
def test_never_over_commits_and_respects_cordons(fleet):
    hosts, containers, mem_thr, cpu_thr = fleet
    result = plan(hosts, containers, mem_thr, cpu_thr, memory_headroom=0.1, cpu_overcommit=1.0)
    before = load(hosts, containers, [])
    after = load(hosts, containers, result["moves"])
    moved_to = {m["dest"] for m in result["moves"]}
    moved_from = {m["source"] for m in result["moves"]}
    for name, info in hosts.items():
        if info["host_state"] != "active":  # cordoned & co: never a source nor a destination
            assert name not in moved_to | moved_from
        if name in moved_to:  # a destination ends within its thresholds and the placement bounds
            mem, cpus = after[name]
            assert mem <= min(info["memory_total"] * mem_thr, info["memory_total"] * 0.9)
            assert cpus <= info["cpus"] * cpu_thr + 1e-9
        if name in moved_from:  # a move only ever leaves an over host
            mem, cpus = before[name]
            assert mem > info["memory_total"] * mem_thr or cpus > info["cpus"] * cpu_thr + 1e-9
    names = [m["name"] for m in result["moves"]]
    assert len(names) == len(set(names))  # a container moves at most once
    for name, rep in result["hosts"].items():
        if rep["over_after"] and rep["excluded"] is None:
            assert any(u.startswith(name + ":") for u in result["unresolved"])
    assert plan(hosts, containers, mem_thr, cpu_thr) == plan(dict(reversed(list(hosts.items()))), containers,
                                                             mem_thr, cpu_thr)


@settings(max_examples=200, deadline=None)
@given(fleets())
def test_a_balanced_fleet_gives_no_move(fleet):
    hosts, containers, mem_thr, cpu_thr = fleet
    first = plan(hosts, containers, mem_thr, cpu_thr)
    if first["unresolved"]:
        return
    # apply the plan: the fleet it leaves is balanced, and a second plan moves nothing
    moved = {m["name"]: m for m in first["moves"]}
    again = {h: [c for c in ctrs if c["name"] not in moved] for h, ctrs in containers.items()}
    for ctrs in containers.values():
        for c in ctrs:
            if c["name"] in moved:
                again[moved[c["name"]]["dest"]].append(c)
    second = plan(hosts, again, mem_thr, cpu_thr)
    assert second["moves"] == [] and not any(r["over_after"] for r in second["hosts"].values())


def test_one_move_when_one_container_removes_the_excess_and_the_smallest_such():
    hosts = dict(a=host(10), b=host(10), c=host(10))
    containers = dict(a=[ctr("big", 4096), ctr("mid", 1536), ctr("small", 512)], b=[], c=[ctr("x", 1024)])
    # a holds 6 GiB of 10; threshold 0.5 -> 1 GiB too much: "mid" (1.5 GiB) is the smallest that suffices
    result = plan(hosts, containers, 0.5, 1.0)
    assert result["moves"] == [dict(name="mid", source="a", dest="b", memory=1536 * MiB, cpus=0.0)]
    assert result["hosts"]["a"]["over_before"] and not result["hosts"]["a"]["over_after"]


def test_two_moves_when_no_single_container_is_enough():
    hosts = dict(a=host(10), b=host(10), c=host(10))
    containers = dict(a=[ctr("a%d" % i, 1024) for i in range(8)], b=[], c=[])
    result = plan(hosts, containers, 0.6, 1.0)  # 8 GiB, at most 6 GiB: two of 1 GiB move
    assert len(result["moves"]) == 2 and {m["dest"] for m in result["moves"]} == {"b", "c"}


def test_cpu_threshold_moves_a_cpu_container():
    hosts = dict(a=host(10, cpus=2), b=host(10, cpus=2))
    containers = dict(a=[ctr("hog", 64, cpus=1), ctr("idle", 64, cpus=0.25), ctr("free", 64)], b=[])
    result = plan(hosts, containers, 0.9, 0.5)  # 1.25 of 2 cpus, at most 1: "idle" is enough
    assert [(m["name"], m["dest"]) for m in result["moves"]] == [("idle", "b")]


def test_cordoned_hosts_are_neither_sources_nor_destinations():
    hosts = dict(a=host(10), b=host(10, state="cordoned"), c=host(10, state="draining"))
    containers = dict(a=[ctr("a1", 4096), ctr("a2", 4096)], b=[ctr("b1", 9000)], c=[])
    result = plan(hosts, containers, 0.5, 1.0)
    assert result["moves"] == [] and result["unresolved"] and result["unresolved"][0].startswith("a:")
    assert result["hosts"]["b"]["excluded"] == "state cordoned" and not result["hosts"]["b"]["over_after"]


def test_balanced_hosts_give_no_move():
    hosts = dict(a=host(10), b=host(10))
    containers = dict(a=[ctr("a1", 1024, cpus=1)], b=[ctr("b1", 2048, usage_mib=100)])
    result = plan(hosts, containers, 0.5, 0.5)
    assert result["moves"] == [] and result["unresolved"] == []
    assert result["hosts"]["a"]["before"] == result["hosts"]["a"]["after"] == dict(memory=0.1, cpu=0.25)


def test_unlimited_containers_count_their_usage():
    hosts = dict(a=host(1), b=host(1))
    containers = dict(a=[ctr("u1", usage_mib=400), ctr("u2", usage_mib=300)], b=[])
    result = plan(hosts, containers, 0.5, 1.0)
    assert [m["name"] for m in result["moves"]] == ["u2"]


@pytest.mark.parametrize("args, field", [
    (dict(memory_threshold=0), "memory_threshold"), (dict(cpu_threshold=1.5), "cpu_threshold"),
    (dict(memory_threshold="x"), "memory_threshold"), (dict(memory_headroom=1), "memory_headroom"),
])
def test_bad_thresholds_are_refused_naming_the_field(args, field):
    kwargs = dict(memory_threshold=0.5, cpu_threshold=0.5)
    kwargs.update(args)
    with pytest.raises(ValidationError) as err:
        plan(dict(a=host()), dict(a=[]), **kwargs)
    assert err.value.field == field


def test_bad_inputs_are_refused_naming_the_field():
    with pytest.raises(ValidationError) as err:
        plan(dict(a=host()), dict(a="x"), 0.5, 0.5)
    assert err.value.field == "containers[a]"
    with pytest.raises(ValidationError) as err:
        plan(dict(a=dict(cpus=2, host_state="active")), {}, 0.5, 0.5)
    assert err.value.field == "hosts[a].memory_total"


def test_filter_wrapper_returns_the_plan_and_raises_ansible_filter_error():
    from ansible.errors import AnsibleFilterError

    from ansible_collections.ctrhost.fleet.plugins.filter.rebalance_plan import FilterModule

    flt = FilterModule().filters()["rebalance_plan"]
    hosts = dict(a=host(10), b=host(10))
    out = flt(hosts, dict(a=[ctr("a1", 4096), ctr("a2", 2048)], b=[]), 0.5, 0.5)
    assert [m["name"] for m in out["moves"]] == ["a2"] and out["lines"][0] == "a2: a -> b (memory 2.00G, cpus 0.00)"
    with pytest.raises(AnsibleFilterError, match="memory_threshold"):
        flt(hosts, {}, 2, 0.5)
