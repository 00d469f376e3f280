"""Kernel limits many containers hit: sizing for memory, /proc/key-users, the refusal."""

from __future__ import annotations

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import LimitError
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import peruser

MiB = 1024 * 1024
GiB = 1024 * MiB

KEY_USERS = """    0:     9 8/8 3/1000000 40/25000000
1000000000:   201 200/200 200/200 2450/20000
1000065536:     2 2/2 2/200 24/20000
"""


def fake_proc(tmp_path, key_users=KEY_USERS, **sysctls):
    if key_users is not None:
        (tmp_path / "proc").mkdir(exist_ok=True)
        (tmp_path / "proc" / "key-users").write_text(key_users)
    for name, value in sysctls.items():
        path = tmp_path / "proc" / "sys" / name.replace("__", ".").replace(".", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("%s\n" % value)
    return str(tmp_path)


def test_parse_key_users_reads_the_quota_columns():
    users = peruser.parse_key_users(KEY_USERS + "garbage\n12: x y z w\n")
    assert sorted(users) == [0, 1000000000, 1000065536]
    assert users[1000000000] == dict(keys=200, maxkeys=200, bytes=2450, maxbytes=20000, instantiated=200)


@pytest.mark.parametrize("memory", [512 * MiB, 1 * GiB, 24 * GiB, 256 * GiB])
def test_recommended_never_caps_a_host_below_its_memory(memory):
    wanted = peruser.recommended(memory)
    assert set(wanted) == set(peruser.RULES)
    # one idle container takes about 1.2 MiB: the key quota of the shared root outlasts memory
    assert wanted["kernel.keys.maxkeys"] >= memory // MiB
    assert wanted["kernel.keys.maxbytes"] >= wanted["kernel.keys.maxkeys"] * peruser.key_bytes("x" * 64)
    assert wanted["fs.inotify.max_user_instances"] >= 8192
    assert wanted["net.ipv4.neigh.default.gc_thresh3"] >= memory // MiB
    for family in ("ipv4", "ipv6"):
        t1, t2, t3 = (wanted["net.%s.neigh.default.gc_thresh%d" % (family, i)] for i in (1, 2, 3))
        assert t1 < t2 < t3
    # the floors are Incus's production-setup values, not lower
    assert wanted["kernel.keys.maxkeys"] >= 2000 and wanted["vm.max_map_count"] == 262144


def test_recommended_grows_with_memory():
    small, large = peruser.recommended(1 * GiB), peruser.recommended(64 * GiB)
    assert all(large[name] >= small[name] for name in small)
    assert large["kernel.keys.maxkeys"] > small["kernel.keys.maxkeys"]


def test_raised_never_lowers_and_below_names_what_is_short():
    wanted = {"a": 10, "b": 10, "c": 10}
    now = {"a": 5, "b": 20, "c": None}
    assert peruser.below(wanted, now) == ["a"]
    assert peruser.raised(wanted, now) == {"a": 10, "b": 20}


def test_key_room_of_a_full_quota_refuses_naming_the_limit(tmp_path):
    base = fake_proc(tmp_path)
    room = peruser.key_room(1000000000, base)
    assert room["free_keys"] == 0 and room["containers_free"] == 0
    msg = peruser.refusal(room, "web1")
    assert msg.startswith("kernel.keys.maxkeys: uid 1000000000 holds 200 of 200 keys; container web1")
    assert "ctrhost_sysctls" in msg and "raise it" in msg
    with pytest.raises(LimitError) as err:
        peruser.refuse_start(1000000000, "web1", base)
    assert err.value.details["limit"] == "kernel.keys.maxkeys"
    assert peruser.refusal(peruser.key_room(1000065536, base), "web1") is None


def test_key_bytes_full_is_named_too():
    room = dict(uid=7, keys=1, maxkeys=200, bytes=19990, maxbytes=20000, free_keys=199, free_bytes=10)
    assert peruser.refusal(room, "web1").startswith("kernel.keys.maxbytes: uid 7 holds 19990 of 20000")


def test_a_uid_without_keys_has_the_sysctls_limits(tmp_path):
    base = fake_proc(tmp_path, **{"kernel__keys__maxkeys": 300, "kernel__keys__maxbytes": 30000,
                                  "kernel__keys__root_maxkeys": 1000000,
                                  "kernel__keys__root_maxbytes": 25000000})
    room = peruser.key_room(1100000000, base)
    assert (room["keys"], room["maxkeys"], room["free_keys"]) == (0, 300, 300)
    assert room["containers_free"] == min(300, 30000 // peruser.key_bytes("x" * 16))
    assert (peruser.key_room(0, base)["keys"], peruser.key_room(0, base)["maxkeys"]) == (3, 1000000)


def test_no_key_support_never_refuses(tmp_path):
    base = fake_proc(tmp_path, key_users=None)
    room = peruser.key_room(1000000000, base)
    assert room["containers_free"] is None and peruser.refusal(room, "web1") is None


def test_runtime_failure_said_as_the_limit(tmp_path):
    base = fake_proc(tmp_path)
    text = "runc run failed: unable to join session keyring: unable to create session key: disk quota exceeded"
    assert peruser.explain_runtime_failure(text, 1000000000, "web1", base).startswith("kernel.keys.maxkeys:")
    # raced: free again by now, still said as the key quota
    assert "key quota of uid 1000065536" in peruser.explain_runtime_failure(text, 1000065536, "w", base)
    assert peruser.explain_runtime_failure("exec format error", 1000000000, "web1", base) is None


def test_report_gives_headroom_per_root(tmp_path):
    base = fake_proc(tmp_path, **{"kernel__keys__maxkeys": 200, "kernel__keys__maxbytes": 20000})
    out = peruser.report([1000000000, 1000065536], 24 * GiB, base)
    assert [q["uid"] for q in out["key_quota"]] == [1000000000, 1000065536]
    assert out["containers_free"] == 0
    assert "kernel.keys.maxkeys" in out["below_recommended"]
    assert out["raise_to"]["kernel.keys.maxkeys"] == out["recommended"]["kernel.keys.maxkeys"]
    assert out["sysctls"]["vm.max_map_count"] is None  # not in this fake /proc
