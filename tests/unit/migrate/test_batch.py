"""Several migrations at once: admission bounds, one failure not disturbing the others, the deadline.

The one boundary mocked is ``_migrate.migrate`` (the real one needs two hosts: see
tests/integration/test_evacuate_parallel.py); the scheduler, validation and results are real.
"""

from __future__ import annotations

import threading
import time

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import source as _migrate
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.state import MigrationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.batch import BatchError, migrate_batch, run_moves


class Recorder:
    """A fake ``move_one`` that records what runs at once and takes ``delay`` seconds."""

    def __init__(self, delay=0.05, fail=()):
        self.delay, self.fail = delay, set(fail)
        self.lock = threading.Lock()
        self.now, self.by_dest, self.memory = 0, {}, 0
        self.peak, self.peak_dest, self.peak_memory = 0, 0, 0
        self.order = []

    def __call__(self, move, mode):
        with self.lock:
            self.now += 1
            self.by_dest[move["dest"]] = self.by_dest.get(move["dest"], 0) + 1
            self.memory += move["memory"]
            self.peak = max(self.peak, self.now)
            self.peak_dest = max(self.peak_dest, self.by_dest[move["dest"]])
            self.peak_memory = max(self.peak_memory, self.memory)
            self.order.append(move["name"])
        time.sleep(self.delay)
        with self.lock:
            self.now -= 1
            self.by_dest[move["dest"]] -= 1
            self.memory -= move["memory"]
        if move["name"] in self.fail:
            raise MigrationError("migration of %s failed: injected" % move["name"], where="source", changed=False)
        return dict(name=move["name"], dest=move["dest"], mode=mode, changed=True, where=move["dest"], downtime=0.1)


def moves(count, dests=("b", "c"), memory=32):
    return [dict(name="c%02d" % i, dest=dests[i % len(dests)], mode="cold", memory=memory) for i in range(count)]


def test_bounds_are_never_exceeded_and_reached():
    rec = Recorder()
    results, gate = run_moves(moves(20), rec, parallel=4, per_dest=2)
    assert [r["name"] for r in results] == ["c%02d" % i for i in range(20)]  # input order
    assert rec.peak == 4 and rec.peak_dest == 2 and gate.peak == 4


def test_one_destination_is_bounded_by_per_dest():
    rec = Recorder()
    run_moves(moves(6, dests=("b",)), rec, parallel=4, per_dest=2)
    assert rec.peak == 2


def test_memory_in_flight_bounds_and_a_big_move_still_goes_alone():
    rec = Recorder()
    batch = moves(6, memory=100) + [dict(name="big", dest="b", mode="cold", memory=1000)]
    results, gate = run_moves(batch, rec, parallel=4, per_dest=4, memory_in_flight=250)
    assert rec.peak_memory <= 1000 and gate.peak_memory <= 1000
    assert rec.peak == 2  # 2 x 100 fit in 250, 3 do not
    assert all(r["changed"] for r in results)


def test_a_busy_destination_does_not_hold_back_an_idle_one():
    rec = Recorder(delay=0.1)
    batch = [dict(name="b%d" % i, dest="b", mode="cold", memory=0) for i in range(3)] + \
        [dict(name="c0", dest="c", mode="cold", memory=0)]
    run_moves(batch, rec, parallel=4, per_dest=1)
    assert rec.order.index("c0") < rec.order.index("b1")


def test_one_failure_does_not_disturb_the_others():
    rec = Recorder(fail=["c03"])
    results, _gate = run_moves(moves(8), rec, parallel=4, per_dest=2)
    failed = [r for r in results if r.get("failed")]
    assert [r["name"] for r in failed] == ["c03"] and failed[0]["where"] == "source"
    assert "injected" in failed[0]["msg"] and failed[0]["changed"] is False
    assert all(r["where"] == r["dest"] for r in results if r["name"] != "c03")


def test_after_the_deadline_moves_are_skipped_or_made_cold():
    rec = Recorder(delay=0.01)
    clock = iter([0, 0, 5, 5, 5, 5]).__next__
    results, _gate = run_moves(moves(4), rec, parallel=1, per_dest=1, deadline=1, clock=clock)
    assert [r.get("skipped", False) for r in results] == [False, False, True, True]
    assert results[2]["late"] and results[2]["where"] == "source" and rec.order == ["c00", "c01"]
    clock = iter([0, 5, 5, 5]).__next__
    results, _gate = run_moves(moves(2), rec, parallel=1, per_dest=1, deadline=1, after_deadline="cold",
                               clock=clock)
    assert [r["mode"] for r in results] == ["cold", "cold"] and results[1]["late"]


@pytest.fixture
def fake_migrate(monkeypatch, tmp_path):
    """_migrate.migrate replaced at its boundary: live fails for names in ``fail_live``
    (the container stays on the source), ``fail`` always fails."""
    calls = []
    fail_live, fail = set(), set()

    def migrate(root, name, dest, mode="cold", check_mode=False, hooks=None, **kwargs):
        calls.append((name, mode))
        if name in fail or (mode == "live" and name in fail_live):
            raise MigrationError("migration of %s to %s failed: injected" % (name, dest), where="source",
                                 changed=False)
        return dict(changed=not check_mode, name=name, dest=dest, mode=mode, where=dest, downtime=0.2,
                    fallback=None)

    monkeypatch.setattr(_migrate, "migrate", migrate)
    return calls, fail_live, fail, str(tmp_path)


def test_a_failed_live_move_falls_back_to_cold(fake_migrate):
    calls, fail_live, _fail, root = fake_migrate
    fail_live.add("a")
    out = migrate_batch(root, [dict(name="a", dest="h2"), dict(name="b", dest="h3")], mode="live")
    first = out["results"][0]
    assert first["mode"] == "cold" and "injected" in first["first_error"] and first["where"] == "h2"
    assert sorted(calls) == [("a", "cold"), ("a", "live"), ("b", "live")]
    assert out["moved"] == ["a", "b"] and out["changed"]


def test_the_batch_fails_naming_the_failed_move_with_every_result(fake_migrate):
    _calls, _fail_live, fail, root = fake_migrate
    fail.add("b")
    with pytest.raises(BatchError) as err:
        migrate_batch(root, [dict(name="a", dest="h2"), dict(name="b", dest="h3")], mode="cold")
    details = err.value.details
    assert details["failed_moves"] == ["b"] and details["moved"] == ["a"] and "injected" in err.value.msg
    assert [r["name"] for r in details["results"]] == ["a", "b"]


def test_check_mode_plans_and_moves_nothing(fake_migrate):
    calls, _fail_live, _fail, root = fake_migrate
    out = migrate_batch(root, [dict(name="a", dest="h2")], check_mode=True)
    assert calls == [("a", "cold")] and out["moved"] == []


@pytest.mark.parametrize("moves_, field", [
    ("x", "moves"),
    ([dict(name="a")], "moves[0].dest"),
    ([dict(name="a b", dest="h")], "moves[0].name"),
    ([dict(name="a", dest="h", mode="warp")], "moves[0].mode"),
    ([dict(name="a", dest="h"), dict(name="a", dest="i")], "moves[1].name"),
    ([dict(name="a", dest="h", speed=1)], "moves[0]"),
])
def test_bad_moves_are_refused_naming_the_field(fake_migrate, moves_, field):
    calls, _fail_live, _fail, root = fake_migrate
    with pytest.raises(ValidationError) as err:
        migrate_batch(root, moves_)
    assert err.value.field == field and calls == []


@pytest.mark.parametrize("kwargs, field", [
    (dict(parallel=0), "parallel"), (dict(per_dest=-1), "per_dest"),
    (dict(memory_in_flight="lots"), "memory_in_flight"), (dict(after_deadline="later"), "after_deadline"),
    (dict(deadline="soon"), "deadline"),
])
def test_bad_bounds_are_refused_naming_the_field(fake_migrate, kwargs, field):
    calls, _fail_live, _fail, root = fake_migrate
    with pytest.raises(ValidationError) as err:
        migrate_batch(root, [dict(name="a", dest="h2")], **kwargs)
    assert err.value.field == field and calls == []


def test_frozen_windows_are_bounded_and_released_however_a_move_ends(monkeypatch, tmp_path):
    """The window hooks go through _migrate.migrate's own step calls (Run.step), here replayed by the fake."""
    lock = threading.Lock()
    state = dict(now=0, peak=0)

    def migrate(root, name, dest, mode="cold", check_mode=False, hooks=None, **kwargs):
        for step in ("preflight", "staged", "presync"):
            hooks.get(step, lambda run: None)(None)
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        if name.endswith("3"):  # fails inside its window: recovery steps "fenced"
            hooks["fenced"](None)
            raise MigrationError("migration of %s failed: injected" % name, where="source", changed=False)
        if name.endswith("5"):  # fails inside its window without reaching a closing step
            raise MigrationError("migration of %s failed: injected" % name, where="source", changed=False)
        hooks["restored"](None)
        return dict(changed=True, name=name, dest=dest, mode=mode, where=dest, downtime=0.05)

    monkeypatch.setattr(_migrate, "migrate", migrate)
    batch = [dict(name="c%d" % i, dest="h%d" % (i % 3)) for i in range(12)]
    with pytest.raises(BatchError) as err:
        migrate_batch(str(tmp_path), batch, parallel=6, per_dest=2, frozen=2)
    assert state["peak"] == 2
    assert err.value.details["failed_moves"] == ["c3", "c5"] and len(err.value.details["moved"]) == 10


def test_a_callers_hook_still_runs_with_the_window(monkeypatch, tmp_path):
    seen = []

    def migrate(root, name, dest, mode="cold", check_mode=False, hooks=None, **kwargs):
        hooks["presync"]("run-of-" + name)
        hooks["restored"]("run-of-" + name)
        return dict(changed=True, name=name, dest=dest, mode=mode, where=dest, downtime=0.1)

    monkeypatch.setattr(_migrate, "migrate", migrate)
    migrate_batch(str(tmp_path), [dict(name="a", dest="h"), dict(name="b", dest="h")], frozen=1,
                  hooks={"a": {"presync": seen.append}})
    assert seen == ["run-of-a"]


def test_probe_cache_writes_from_many_threads_never_collide(tmp_path):
    """The migrations of a batch share the process's probe cache files (``_atomic.atomic_write``)."""
    from ansible_collections.ctrhost.fleet.plugins.module_utils.core.atomic import atomic_write

    path = str(tmp_path / "cache" / "criu.json")
    errors = []
    barrier = threading.Barrier(8)

    def write(i):
        barrier.wait()
        try:
            for _ in range(50):
                atomic_write(path, "value %d\n" % i, parents=True)
        except OSError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert (tmp_path / "cache" / "criu.json").read_text().startswith("value ")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["criu.json"]  # no temp file left


@pytest.mark.parametrize("failures, stderr, calls, raised", [
    (2, 'level=error msg="unable to freeze"', 3, False),  # FREEZING under load: tried again
    (3, 'level=error msg="unable to freeze"', 3, True),  # three times in all, then the error
    (1, 'level=error msg="container not running"', 1, True),  # anything else: at once
])
def test_a_pause_left_freezing_is_tried_again(monkeypatch, tmp_path, failures, stderr, calls, raised):
    from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
    from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import driver as _runtime
    from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CommandError

    seen = []

    def run(cmd, **kwargs):  # the runc command line: the boundary
        seen.append(cmd)
        if len(seen) <= failures:
            raise CommandError("runc pause failed", cmd, 1, stderr=stderr)

    monkeypatch.setattr(_cli, "run", run)
    rt = _runtime.Runtime("runc", path="/bin/true", state_root=str(tmp_path))
    if raised:
        with pytest.raises(CommandError):
            rt.pause("c1")
    else:
        rt.pause("c1")
    assert len(seen) == calls and seen[0][-2:] == ["pause", "c1"]


def test_a_move_of_a_container_gone_meanwhile_says_so():
    from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import NotFoundError
    from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import batch as _batch
    gone = _batch.failure(dict(name="c1", dest="h2"), NotFoundError("name: container c1 does not exist here"))
    assert gone["where"] == "absent" and gone["failed"] and gone["changed"] is False
    other = _batch.failure(dict(name="c1", dest="h2"), RuntimeError("boom"))
    assert other["where"] == "source"
