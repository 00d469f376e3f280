"""Pre-copy (_migrate_precopy): the convergence policy, and the spine of the rounds.

The spine runs for real down to two boundaries: the runtime's ``checkpoint --pre-dump``
(a fake runtime writes what CRIU writes: pages, a stats image, the ``parent`` link) and
SSH (the link runs the receiver's remote command locally, so a real ``tar -x`` unpacks
the stream into a directory standing for the destination).
"""

import json
import os
import shutil

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.criu import reports as _criu
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import source as _migrate
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import precopy as _migrate_precopy
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import driver as _runtime
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CommandError, ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.precopy import PAGE_SIZE, Policy
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.state import Run
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout

STATS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "criu", "stats-dump")
MB = 2**20


def rounds(*sizes):
    return [dict(bytes_dirty=s) for s in sizes]


# -- policy ------------------------------------------------------------------------------
def test_defaults_come_from_the_one_option_table():
    policy = Policy.from_options(None)
    assert policy.as_dict() == dict(max_iterations=5, dirty_threshold=2 * MB, min_progress=10)
    assert Policy.from_options({"max_iterations": None}).max_iterations == 5  # the module's unset


@pytest.mark.parametrize("history, stop", [
    ((64 * MB,), None),                                     # first round: all memory, go on
    ((64 * MB, 8 * MB), None),                              # shrank a lot
    ((64 * MB, 8 * MB, 2 * MB), "converged"),               # at the threshold
    ((64 * MB, 8 * MB, 7.5 * MB), "not_shrinking"),         # 6% < 10%
    ((64 * MB, 8 * MB, 9 * MB), "not_shrinking"),           # grew
    ((64 * MB, 32 * MB, 16 * MB, 8 * MB, 4 * MB), "max_iterations"),
    ((1 * MB,), "converged"),                               # a small container: one round
])
def test_verdict(history, stop):
    verdict = Policy(5, 2 * MB, 10).verdict(rounds(*history))
    assert (verdict and verdict[0]) == stop, verdict


def test_min_progress_zero_goes_on_until_the_maximum():
    policy = Policy.from_options(dict(max_iterations=3, min_progress=0))
    assert policy.verdict(rounds(8 * MB, 9 * MB)) is None  # grew, but the rule is off
    assert policy.verdict(rounds(8 * MB, 9 * MB, 9 * MB))[0] == "max_iterations"


@pytest.mark.parametrize("options, field", [
    (dict(max_iterations=0), "precopy.max_iterations"),
    (dict(max_iterations="3"), "precopy.max_iterations"),
    (dict(min_progress=101), "precopy.min_progress"),
    (dict(dirty_threshold="lots"), "precopy.dirty_threshold"),
    (dict(rounds=3), "precopy"),
    ("fast", "precopy"),
])
def test_bad_options_name_the_field(options, field):
    with pytest.raises(ValidationError) as err:
        Policy.from_options(options)
    assert err.value.details["field"] == field, err.value.msg


def test_bad_policy_fails_before_anything_is_touched(tmp_path):
    with pytest.raises(ValidationError) as err:  # no container, no SSH: validation comes first
        _migrate.migrate(str(tmp_path), "web1", "host2", mode="live", precopy=dict(min_progress=-1))
    assert err.value.details["field"] == "precopy.min_progress"
    assert os.listdir(tmp_path) == []


def test_choose_mode_uses_live_only_where_both_track_dirty_memory(tmp_path):
    yes = dict(pre_dump=True, pre_dump_reason=None)
    no = dict(pre_dump=False, pre_dump_reason="the kernel does not track dirty memory")
    for src, dst, mode in ((yes, yes, "live"), (no, yes, "cold"), (yes, no, "cold")):
        run = Run(Layout(str(tmp_path)), "web1", {}, "live", "host2", None)
        _migrate.choose_mode(run, src, dict(pre_dump=dst["pre_dump"]))
        assert run.mode == mode and (run.fallback is None) == (mode == "live"), run.fallback
    assert "dirty memory" in run.fallback


# -- the spine ---------------------------------------------------------------------------
class LocalLink:
    """The SSH boundary: the receiver's remote command runs here."""

    dest = "dest"

    def ssh_cmd(self, _dest, remote):
        return ["sh", "-c", remote]


class Workload:
    """The runtime boundary: ``checkpoint --pre-dump`` writes ``dirty[n]`` bytes of pages
    as CRIU would (with the real stats image of a dump, and the ``parent`` link); a
    round in ``fail`` fails as a runtime does."""

    def __init__(self, dirty, fail=(), stats=False):
        self.dirty, self.fail, self.stats, self.calls = list(dirty), set(fail), stats, []
        self.real = _cli.run

    def __call__(self, cmd, **kwargs):
        if "checkpoint" not in cmd:
            return self.real(cmd, **kwargs)
        self.calls.append(cmd)
        images = cmd[cmd.index("--image-path") + 1]
        assert "--pre-dump" in cmd and cmd[-1] == "web1"
        if len(self.calls) in self.fail:
            with open(os.path.join(images, "dump.log"), "w") as log:
                log.write("(00.010000) Error (criu/mem.c:1): Can't dump memory\n")
            raise CommandError("pre-dump failed", cmd, 1, stderr="criu failed")
        if "--parent-path" in cmd:
            os.symlink(cmd[cmd.index("--parent-path") + 1], os.path.join(images, "parent"))
        with open(os.path.join(images, "pages-1.img"), "wb") as pages:
            pages.write(b"\x5a" * self.dirty.pop(0))
        with open(os.path.join(images, "pagemap-1.img"), "wb") as pagemap:
            pagemap.write(b"map")
        if self.stats:
            shutil.copy(STATS, os.path.join(images, "stats-dump"))
        return _cli.Result(cmd, 0, "", "", 0.1)


@pytest.fixture
def spine(tmp_path, monkeypatch):
    def make(workload, **policy):
        monkeypatch.setattr(_cli, "run", workload)
        layout = Layout(str(tmp_path / "src"))
        run = Run(layout, "web1", dict(cgroups_path="/ctrhost/t/web1"), "live", "dest", None)
        run.policy = Policy.from_options(policy)
        run.link, run.incoming = LocalLink(), str(tmp_path / "dst" / ".incoming-1")
        run.images = layout.checkpoint_dir("web1", ".migrate-1")
        os.makedirs(os.path.join(run.incoming, "images"))
        os.makedirs(run.images)
        rt = _runtime.Runtime("runc", path=shutil.which("true"), state_root=str(tmp_path / "rt"))
        return run, rt
    return make


def test_rounds_stream_each_pre_dump_and_chain_them(spine):
    sizes = [64 * PAGE_SIZE * 1000, 900 * PAGE_SIZE, 8 * PAGE_SIZE]  # converges in round 3
    work = Workload(sizes)
    run, rt = spine(work, dirty_threshold=64 * PAGE_SIZE)
    parent = _migrate_precopy.iterate(run, rt, dict(path="/usr/sbin/criu"), {"leave_running": True}, 60)
    assert parent == "pre-3"  # the final dump's --parent-path, relative to the images
    assert [c[c.index("--image-path") + 1] for c in work.calls] == [
        os.path.join(run.images, "pre-%d" % n) for n in (1, 2, 3)]
    assert "--parent-path" not in work.calls[0]
    assert [c[c.index("--parent-path") + 1] for c in work.calls[1:]] == ["../pre-1", "../pre-2"]
    assert [r["pages_written"] for r in run.iterations] == [s // PAGE_SIZE for s in sizes]
    assert [r["bytes_dirty"] for r in run.iterations] == sizes
    assert all(r["bytes_sent"] > r["bytes_dirty"] and r["seconds"] >= r["dump_seconds"]
               for r in run.iterations), run.iterations
    assert run.bytes == sum(r["bytes_sent"] for r in run.iterations)
    assert run.precopy["stop"] == "converged" and run.precopy["iterations"] == 3
    assert [s["step"] for s in run.steps] == ["iteration1", "iteration2", "iteration3"]
    # the destination holds the same chain, read back from its disk: every page, and
    # relative parent links that resolve there
    dst = os.path.join(run.incoming, "images")
    for n, size in enumerate(sizes, 1):
        assert os.path.getsize(os.path.join(dst, "pre-%d" % n, "pages-1.img")) == size
    assert os.readlink(os.path.join(dst, "pre-3", "parent")) == "../pre-2"
    assert os.path.samefile(os.path.join(dst, "pre-3", "parent", "parent"), os.path.join(dst, "pre-1"))


def test_a_workload_that_never_converges_stops_at_the_maximum(spine):
    work = Workload([5 * MB] * 10, stats=True)
    run, rt = spine(work, max_iterations=3, min_progress=0, dirty_threshold=0)
    assert _migrate_precopy.iterate(run, rt, dict(path=None), {}, 60) == "pre-3"
    assert len(work.calls) == 3 and run.precopy["stop"] == "max_iterations"
    # pages counted from CRIU's stats image when there is one (a real runc dump's)
    assert {r["pages_written"] for r in run.iterations} == {
        _criu.read_stats(STATS)["dump"]["pages_written"]}
    assert run.iterations[0]["frozen_time"] == pytest.approx(0.079132)
    assert run.precopy["policy"] == dict(max_iterations=3, dirty_threshold=0, min_progress=0)


def test_a_failed_round_keeps_its_log_and_says_where_it_runs(spine):
    work = Workload([8 * MB, 4 * MB], fail={2})
    run, rt = spine(work)
    with pytest.raises(CommandError) as err:
        _migrate_precopy.iterate(run, rt, dict(path=None), {}, 60)
    assert "pre-dump pre-2 for migration of container web1 failed" in err.value.msg
    assert err.value.details["container_status"] == "absent"  # as the runtime reports it
    kept = err.value.details["dump_log"]
    with open(kept) as log:
        assert kept.endswith("last-migrate-failure.log") and "Can't dump memory" in log.read()
    assert len(run.iterations) == 1 and run.precopy is None  # round 1 was sent, then it stopped
    assert json.dumps(run.iterations)  # the result stays serialisable
