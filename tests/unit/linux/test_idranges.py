"""Isolated id ranges: the pool, the allocation from a name, collisions, who holds a range."""

from __future__ import annotations

import json

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import idranges

SIZE = 65536


def subids(tmp_path, text):
    for leaf in ("subuid", "subgid"):
        (tmp_path / leaf).write_text(text)
    return str(tmp_path / "subuid"), str(tmp_path / "subgid")


def test_the_pool_is_the_largest_range_besides_the_shared_one(tmp_path):
    files = subids(tmp_path, "root:1000000000:65536\nalice:100000:65536\nroot:1100000000:1073741824\n"
                             "root:3000000000:131072\n")
    assert idranges.isolated_pool(*files) == dict(uid=1100000000, gid=1100000000, slots=16384)


def test_no_pool_names_the_option(tmp_path):
    files = subids(tmp_path, "root:1000000000:65536\n")
    with pytest.raises(ValidationError) as err:
        idranges.isolated_pool(*files)
    assert err.value.field == "idmap_isolated" and "root:1100000000:1073741824" in err.value.msg


def test_allocation_is_the_same_for_a_name_everywhere_and_differs_between_names():
    pool = dict(uid=1100000000, gid=1100000000, slots=16384)
    one = idranges.allocate_isolated("web1", [], pool)
    assert one == idranges.allocate_isolated("web1", [], pool)
    assert one["isolated"] is True and one["size"] == SIZE
    assert (one["uid"] - pool["uid"]) % SIZE == 0 and one["uid"] < pool["uid"] + pool["slots"] * SIZE
    names = ["ct%d" % i for i in range(200)]
    uids = {idranges.allocate_isolated(n, [], pool)["uid"] for n in names}
    assert len(uids) > 190  # a hash over 16384 slots: a few names may share a preferred slot


def test_a_taken_slot_moves_to_the_next_free_one():
    pool = dict(uid=1100000000, gid=1100000000, slots=4)
    first = idranges.allocate_isolated("web1", [], pool)
    second = idranges.allocate_isolated("web1", [first], pool)
    assert second["uid"] != first["uid"] and not idranges.overlaps(first, second)
    taken = [dict(uid=1100000000 + s * SIZE, gid=1100000000 + s * SIZE, size=SIZE) for s in range(4)]
    with pytest.raises(ValidationError) as err:
        idranges.allocate_isolated("web1", taken, pool)
    assert "all 4 isolated id ranges" in err.value.msg


def test_overlaps_by_uid_or_gid():
    a = dict(uid=100, gid=500, size=10)
    assert idranges.overlaps(a, dict(uid=109, gid=0, size=1))
    assert idranges.overlaps(a, dict(uid=0, gid=505, size=1))
    assert not idranges.overlaps(a, dict(uid=110, gid=510, size=10))


def test_held_by_reads_the_other_containers_specs(tmp_path):
    mine = dict(uid=1100065536, gid=1100065536, size=SIZE, isolated=True)
    for name, idmap in (("a", mine), ("b", dict(mine)), ("c", dict(uid=1000000000, gid=1000000000, size=SIZE)),
                        ("d", None)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "spec.json").write_text(json.dumps(dict(idmap=idmap)))
    (tmp_path / "e").mkdir()  # no spec: not counted
    assert idranges.held_by(mine, str(tmp_path), but="a") == ["b"]
    assert idranges.held_by(dict(mine, isolated=False), str(tmp_path), but="a") == []  # shared: not exclusive
    assert sorted(idranges.taken(str(tmp_path))) == ["a", "b", "c"]
