"""Placement and the key quota: no unprivileged container onto a host whose quota is full."""

from __future__ import annotations

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.fleet.placement import PlacementError, place

GiB = 1024 ** 3
IDMAP = dict(uid=1000000000, gid=1000000000, size=65536)


def host(free, containers=0):
    info = dict(cpus=8, memory_total=64 * GiB, host_state="active",
                committed=dict(memory=0, cpus=0, containers=containers))
    if free is not None:
        info["kernel_limits"] = dict(containers_free=free)
    return info


def ctr(name, unprivileged=True):
    out = dict(name=name, limits=dict(memory="64M"))
    if unprivileged:
        out["idmap"] = IDMAP
    return out


def test_a_full_key_quota_takes_no_unprivileged_container():
    hosts = {"a": host(0), "b": host(5, containers=50)}
    assert place([ctr("c1"), ctr("c2")], hosts) == {"c1": "b", "c2": "b"}
    # a privileged one is not counted to the range's root
    assert place([ctr("p1", unprivileged=False)], {"a": host(0)}) == {"p1": "a"}
    # one with an isolated range has a key quota of its own
    assert place([dict(ctr("i1"), idmap=dict(IDMAP, uid=1100000000, isolated=True))], {"a": host(0)}) == {"i1": "a"}
    # without kernel_limits gathered, nothing changes
    assert place([ctr("c1")], {"a": host(None)}) == {"c1": "a"}


def test_the_quota_is_counted_down_and_named_when_short():
    with pytest.raises(PlacementError) as err:
        place([ctr("c%d" % i) for i in range(3)], {"a": host(2)})
    assert "kernel.keys.maxkeys" in err.value.msg and "a: " in err.value.msg
    assert len(err.value.details["unplaced"]) == 1
