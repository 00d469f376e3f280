"""One placement plan per batch of a roll (``fleet/rollplan``): capacity reserved across the
batch, never a host of the batch, upgraded hosts first, and the bound on moves over a whole
simulated roll."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.fleet.placement import PlacementError
from ansible_collections.ctrhost.fleet.plugins.module_utils.fleet.rollplan import (
    moves_report,
    place_batch,
    plan_batch,
)

MiB = 1024 * 1024
GiB = 1024 * MiB


def host(memory_gib=8, cpus=4, state="active", used_mib=0, count=0):
    return dict(cpus=cpus, memory_total=memory_gib * GiB, host_state=state,
                committed=dict(memory=used_mib * MiB, cpus=0, containers=count))


def ctr(name, memory_mib=100, cpus=None, dest=None):
    limits = dict(memory="%dM" % memory_mib)
    if cpus is not None:
        limits["cpus"] = cpus
    out = dict(name=name, state="running", limits=limits)
    if dest:
        out["dest"] = dest
    return out


def test_capacity_is_reserved_across_the_hosts_of_the_batch():
    # h3 has room for 3 containers of 1G (3.6G of 4G with the 10% headroom); each batch host brings 2:
    # planned one host at a time from the same snapshot, h3 would get all 4.
    hosts = {"h3": host(4), "h4": host(4, used_mib=2048)}
    containers = {"h1": [ctr("a1", 1024), ctr("a2", 1024)], "h2": [ctr("b1", 1024), ctr("b2", 1024)]}
    placement, records = plan_batch(containers, hosts, batch=["h1", "h2"])
    dests = [d for part in placement.values() for d in part.values()]
    assert dests.count("h3") == 3 and dests.count("h4") == 1, placement
    assert records["h3"]["memory_used"] <= records["h3"]["memory_capacity"]


def test_all_or_nothing_over_the_batch():
    hosts = {"h3": host(4)}
    containers = {"h1": [ctr("a1", 2048)], "h2": [ctr("b1", 2048)]}
    with pytest.raises(PlacementError) as err:
        place_batch(containers, hosts, batch=["h1", "h2"])
    assert "batch h1, h2" in err.value.msg and "1 of 2 container(s) do not fit" in err.value.msg
    assert err.value.details["unplaced"] in (["a1"], ["b1"])


def test_never_a_host_of_the_batch_nor_a_cordoned_one():
    # the batch's own hosts are listed as candidates and still active (not yet cordoned)
    hosts = {"h1": host(64), "h2": host(64), "h3": host(4, state="cordoned"), "h4": host(4)}
    containers = {"h1": [ctr("a1")], "h2": [ctr("b1")]}
    assert place_batch(containers, hosts, batch=["h1", "h2"]) == {"h1": {"a1": "h4"}, "h2": {"b1": "h4"}}
    with pytest.raises(PlacementError) as err:
        place_batch({"h1": [ctr("a1", dest="h2")]}, hosts, batch=["h1", "h2"])
    assert "it drains in this batch" in err.value.msg


def test_upgraded_hosts_are_preferred_even_when_more_loaded():
    # h2 (still to drain) is empty, h3 (upgraded) is half full: h3 takes what fits, h2 the rest.
    hosts = {"h2": host(8), "h3": host(8, used_mib=5 * 1024, count=5)}
    containers = {"h1": [ctr("a%d" % i, 512) for i in range(5)]}
    placement = place_batch(containers, hosts, batch=["h1"], pending=["h2"])
    dests = sorted(placement["h1"].values())
    assert dests.count("h3") == 4 and dests.count("h2") == 1, placement  # 5G + 4 x 512M <= 7.2G


def test_a_spare_host_outside_the_roll_counts_as_final():
    hosts = {"h2": host(64), "spare": host(8, used_mib=4096)}
    assert place_batch({"h1": [ctr("a1")]}, hosts, batch=["h1"], pending=["h2"]) == {"h1": {"a1": "spare"}}


def test_pins_are_kept_and_reserve_capacity_first():
    hosts = {"h3": host(2), "h4": host(2)}
    containers = {"h1": [ctr("a1", 1024, dest="h4")], "h2": [ctr("b1", 1024), ctr("b2", 700)]}
    placement = place_batch(containers, hosts, batch=["h1", "h2"])
    assert placement["h1"] == {"a1": "h4"}
    assert placement["h2"]["b1"] == "h3"  # h4 already holds the pinned one


def test_empty_hosts_of_the_batch_get_an_empty_part():
    assert place_batch({"h1": []}, {"h3": host()}, batch=["h1", "h2"]) == {"h1": {}, "h2": {}}


@pytest.mark.parametrize("kwargs, field", [
    (dict(containers={"h1": []}, hosts={}, batch=[]), "batch"),
    (dict(containers={"h1": []}, hosts={}, batch="h1"), "batch"),
    (dict(containers={"h9": []}, hosts={}, batch=["h1"]), "containers"),
    (dict(containers={"h1": [ctr("x")], "h2": [ctr("x")]}, hosts={}, batch=["h1", "h2"]), "containers"),
    (dict(containers={"h1": "x"}, hosts={}, batch=["h1"]), "containers[h1]"),
    (dict(containers=[], hosts={}, batch=["h1"]), "containers"),
    (dict(containers={}, hosts={}, batch=["h1"], pending=[3]), "pending"),
    (dict(containers={}, hosts=[], batch=["h1"]), "hosts"),
])
def test_bad_input_names_the_field(kwargs, field):
    with pytest.raises(ValidationError) as err:
        place_batch(**kwargs)
    assert err.value.field == field, err.value.msg


def test_the_answer_does_not_depend_on_the_order_of_the_inputs():
    hosts = {"h%d" % i: host(4 + i) for i in range(3, 7)}
    containers = {"h1": [ctr("a%d" % i, 100 + 37 * i) for i in range(6)],
                  "h2": [ctr("b%d" % i, 90 + 41 * i) for i in range(6)]}
    one = place_batch(containers, hosts, batch=["h1", "h2"], pending=["h5"])
    rev = place_batch({k: list(reversed(v)) for k, v in reversed(list(containers.items()))},
                      dict(reversed(list(hosts.items()))), batch=["h2", "h1"], pending=["h5"])
    assert one == rev


def simulate(nhosts, per_host, serial, spare=0, memory_gib=64):
    """A whole roll without a return trip, batch after batch; {container: moves}."""
    roll = ["h%02d" % i for i in range(nhosts)]
    where = {"c%02d_%d" % (i, j): h for i, h in enumerate(roll) for j in range(per_host)}
    allhosts = roll + ["s%d" % i for i in range(spare)]
    moves = {name: 0 for name in where}
    done = []
    for start in range(0, nhosts, serial):
        batch = roll[start:start + serial]
        hosts = {}
        for h in allhosts:
            count = sum(1 for w in where.values() if w == h)
            hosts[h] = host(memory_gib, cpus=64, used_mib=100 * count, count=count)
        containers = {h: [ctr(n) for n, w in sorted(where.items()) if w == h] for h in batch}
        pending = [h for h in roll if h not in done and h not in batch]
        placement = place_batch(containers, hosts, batch=batch, pending=pending)
        for part in placement.values():
            for name, dest in part.items():
                assert dest not in batch
                where[name] = dest
                moves[name] += 1
        done.extend(batch)
    first = {n for n in moves if n.split("_")[0] in {"c%02d" % i for i in range(serial)}}
    return moves, first


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nhosts=st.integers(min_value=2, max_value=9), per_host=st.integers(min_value=0, max_value=4),
       serial=st.integers(min_value=1, max_value=4), spare=st.integers(min_value=0, max_value=2))
def test_a_roll_moves_each_container_at_most_once_plus_once_for_the_first_batch(nhosts, per_host, serial, spare):
    serial = min(serial, nhosts - 1)  # one batch of every host has nowhere to go
    moves, first = simulate(nhosts, per_host, serial, spare)
    for name, count in moves.items():
        bound = 2 if name in first and not spare else 1
        assert 1 <= count <= bound, (name, count, moves)


def test_the_bound_is_reached_without_a_spare_host():
    moves, first = simulate(4, 2, 2)
    assert {n: c for n, c in moves.items() if n in first} == dict.fromkeys(sorted(first), 2)
    assert all(c == 1 for n, c in moves.items() if n not in first)
    assert sum(moves.values()) == 12  # 4 + 8: batch 2 drains its own and the first batch's


def test_moves_report_counts_per_container_and_in_total():
    records = [dict(name="a", to="h3"), dict(name="b", to="h4"), dict(name="a", to="h1")]
    assert moves_report(records) == dict(moves={"a": 2, "b": 1}, total=3, containers=2, most=2)
    assert moves_report([]) == dict(moves={}, total=0, containers=0, most=0)
    with pytest.raises(ValidationError) as err:
        moves_report([dict(to="h1")])
    assert err.value.field == "moves[0].name"
    with pytest.raises(ValidationError):
        moves_report("a")
