"""Where the container ends up when a migration fails at each step, and the spine of a move.

``_migrate._move`` (everything after the preflight) runs for real against the boundaries
of ``migrate_boundaries``: a runtime script whose state files say where the source's
container is (running, paused = frozen, absent = removed), and a local SSH link whose
remote commands unpack the frozen window's tar stream into a directory standing for the
destination. A failure is injected at a step through the step hooks (as the integration
tests do), or by the destination's scripted answer, or by the runtime.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

import pytest
from .boundaries import FakeRuntime, LocalLink

from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import window as _dumpwindow
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import source as _migrate
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CommandError
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.precopy import Policy
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.state import MigrationError, Run
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime.driver import runtime_for
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.store import ContainerStore

NAME = "web1"
SPEC = dict(name=NAME, template="tpl", runtime="runc", cgroups_path="/ctrhost/unit-test/" + NAME,
            network=[], limits={})


class Source:
    """One container on a source host under ``tmp_path`` and the means to move it."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.runtime = FakeRuntime(tmp_path)
        self.layout = Layout(str(tmp_path / "src"), str(tmp_path / "run"))
        ContainerStore(self.layout).save(NAME, SPEC)
        with open(os.path.join(self.layout.container_dir(NAME), "config.json"), "w") as handle:
            handle.write('{"ociVersion": "1.0.2"}')
        self.upper = self.layout.container_file(NAME, "upper")
        os.makedirs(os.path.join(self.upper, "etc"))
        with open(os.path.join(self.upper, "etc", "motd"), "w") as handle:
            handle.write("before the move\n")
        self.runtime.set_status(self.layout, NAME, "running")
        self.run = None

    def move(self, mode="cold", answers=None, hooks=None, pre_dump=True):
        self.run = run = Run(self.layout, NAME, dict(SPEC), mode, "dest", hooks,
                             policy=Policy.from_options(None), dest_root=str(self.tmp / "dst"),
                             runtime_path=self.runtime.binary)
        run.link = LocalLink(self.tmp / "dst", answers)
        rt = runtime_for(self.layout, SPEC.get("runtime"), self.runtime.binary)
        criu = dict(path=self.runtime.criu, pre_dump=pre_dump)
        meta = dict(id="migrate-1", spec=SPEC, options={})
        pre = dict(ok=True, facts=dict(lazy_port=1))
        try:
            return _migrate._move(run, rt, criu, meta, pre, dict(leave_running=True), 30)
        finally:
            _migrate._close(run)

    def status(self):
        return self.runtime.status(self.layout, NAME)

    def calls(self):
        return self.runtime.calls(self.layout)

    def steps(self):
        return [s["step"] for s in self.run.steps]

    def dest(self, *parts):
        return os.path.join(str(self.tmp / "dst"), *parts)


@pytest.fixture
def src(tmp_path):
    return Source(tmp_path)


def fail(_run):
    raise CommandError("injected failure", ["inject"], 1)


# -- a move that works --------------------------------------------------------------------
@pytest.fixture
def big(monkeypatch):
    """The container's memory cgroup says it holds 64 MiB: its page images are streamed
    during the dump (``_migrate_pages``)."""
    monkeypatch.setattr(_dumpwindow, "expected_bytes", lambda _path: 64 * 1024 * 1024)


def test_a_cold_move_ends_on_the_destination_and_removes_the_source(src, big):
    def late_write(run):  # after the pre-sync: only the frozen window's stream carries it
        with open(os.path.join(src.upper, "etc", "late"), "w") as handle:
            handle.write("written while it still ran\n")
    out = src.move(hooks=dict(presync=late_write))
    assert out["where"] == "dest" and out["changed"] and out["mode"] == "cold"
    assert src.steps() == ["staged", "presync", "freeze", "dumped", "transferred", "restored",
                           "committed", "source_removed"]
    assert src.calls() == ["state", "pause", "checkpoint", "state", "resume", "delete"]
    # the source is gone, bundle and runtime state
    assert src.status() == "absent" and not os.path.exists(src.layout.container_dir(NAME))
    assert not os.path.exists(src.run.images)
    # the destination holds the images and both rootfs files, read back from its disk
    images = src.dest("checkpoints", NAME, ".incoming-migrate-1", "images")
    assert os.path.getsize(os.path.join(images, "pages-1.img")) == 8192
    with open(src.dest("containers", NAME, "upper", "etc", "late")) as handle:
        assert handle.read() == "written while it still ran\n"
    assert os.path.exists(src.dest("containers", NAME, "upper", "etc", "motd"))
    assert out["rootfs_delta"] is True and out["stats"]["transfer"]["rootfs_entries"] == 2
    assert out["stats"]["transfer"]["pages_bytes"] == 8192  # sent while the dump wrote them
    assert src.run.link.requests == ["prepare", "ready", "restore", "commit"]
    assert src.run.link.closed


def test_a_small_container_sends_every_image_by_the_tar_stream(src):
    out = src.move()
    assert out["where"] == "dest" and src.run.link.requests == ["prepare", "ready", "restore", "commit"]
    assert out["stats"]["transfer"]["pages_bytes"] == 0 and out["stats"]["transfer"]["bytes"] > 8192
    images = src.dest("checkpoints", NAME, ".incoming-migrate-1", "images")
    assert os.path.getsize(os.path.join(images, "pages-1.img")) == 8192


def test_a_live_move_streams_a_pre_dump_and_dumps_only_the_rest(src):
    out = src.move(mode="live")
    assert out["where"] == "dest" and out["mode"] == "live"
    assert out["precopy"]["stop"] == "converged" and len(out["iterations"]) == 1
    assert src.calls().count("checkpoint") == 2  # one pre-dump, then the final dump
    images = src.dest("checkpoints", NAME, ".incoming-migrate-1", "images")
    assert os.readlink(os.path.join(images, "parent")) == "pre-1"  # the chain resolves there
    assert os.path.getsize(os.path.join(images, "parent", "pages-1.img")) == 8192
    # every field a run ever had is declared in its class (nothing is made up on the way)
    assert set(vars(src.run)) == {f.name for f in dataclasses.fields(Run)}


# -- before the freeze: it never stopped running here ------------------------------------
@pytest.mark.parametrize("how, why", [
    (dict(hooks=dict(staged=fail)), "injected failure"),
    (dict(answers=dict(prepare=dict(ok=False, error="no space"))), "prepare failed on dest: no space"),
    (dict(answers=dict(ready=dict(ok=False, fenced=True))), "not ready (fenced=True)"),
])
def test_a_failure_before_the_freeze_leaves_it_running_here(src, how, why):
    with pytest.raises(MigrationError) as err:
        src.move(**how)
    assert "failed before the freeze" in err.value.msg and why in err.value.msg
    assert err.value.details["where"] == "source" and err.value.details["changed"] is False
    assert err.value.details["fence"] == "fenced"  # the destination's copy is gone
    assert src.status() == "running" and "pause" not in src.calls()
    assert not os.path.exists(src.run.images)
    assert src.run.link.requests[-2:] == ["(dropped)", "fence"]


# -- inside the frozen window: thawed here once the destination is fenced -----------------
@pytest.mark.parametrize("how, why", [
    (dict(hooks=dict(dumped=fail)), "injected failure"),
    (dict(answers=dict(restore=dict(ok=False, error="bad image", cause="image"))),
     "restore failed on dest: bad image"),
    (dict(answers=dict(commit=dict(ok=False, error="fenced"))), "commit refused: fenced"),
])
def test_a_failure_in_the_frozen_window_thaws_it_here(src, how, why):
    with pytest.raises(MigrationError) as err:
        src.move(**how)
    details = err.value.details
    assert why in err.value.msg and "the container runs on source" in err.value.msg
    assert details["where"] == "source" and details["fence"] == "fenced"
    assert src.status() == "running" and src.calls()[-3:] == ["state", "resume", "state"]
    assert "delete" not in src.calls()
    assert src.steps()[-1] == "fenced" and "freeze" in src.steps()
    assert not os.path.exists(src.run.images)  # the local images: dropped, it runs
    assert "fence" in src.run.link.requests


def test_a_page_stream_cut_during_the_dump_thaws_it_here(src, big):
    def cut(run):  # the destination's images directory goes: its page receiver fails
        shutil.rmtree(os.path.join(run.incoming, "images"))
    with pytest.raises(MigrationError) as err:
        src.move(hooks=dict(freeze=cut))
    assert "page stream to dest" in err.value.msg and "runs on source" in err.value.msg
    assert err.value.details["where"] == "source" and src.status() == "running"
    assert "restore" not in src.run.link.requests and "delete" not in src.calls()


def test_a_failed_dump_keeps_its_log_and_resumes_it(src):
    src.runtime.fail_checkpoint(src.layout)
    with pytest.raises(MigrationError) as err:
        src.move()
    assert "dump for migration of container web1 failed" in err.value.msg
    assert err.value.details["where"] == "source" and src.status() == "running"
    with open(err.value.details["dump_log"]) as log:
        assert "Dumping FAILED" in log.read()
    assert "dumped" not in src.steps()


def test_a_commit_whose_answer_was_lost_counts_as_done(src):
    lost = dict(commit=lambda req: (_ for _ in ()).throw(CommandError("connection lost", ["commit"], -1)),
                fence=dict(ok=True, state="committed"))
    out = src.move(answers=lost)
    assert out["where"] == "dest" and out["pid"] is None
    assert src.status() == "absent" and not os.path.exists(src.layout.container_dir(NAME))
    assert src.steps()[-3:] == ["fenced", "committed", "source_removed"]


def test_processes_gone_and_no_images_to_restore_says_nowhere_and_keeps_them(src):
    def killed_from_outside(run):
        src.runtime.set_status(src.layout, NAME, "stopped")
        os.unlink(os.path.join(run.images, "inventory.img"))
        raise CommandError("injected failure", ["inject"], 1)
    with pytest.raises(MigrationError) as err:
        src.move(hooks=dict(dumped=killed_from_outside))
    where = err.value.details["where"]
    assert where.startswith("nowhere: container web1 is stopped") and src.run.images in where
    assert err.value.details["images"] == src.run.images and os.path.isdir(src.run.images)
    assert err.value.details["fallback_errors"][0]["step"] == "thaw"
    assert "resume" not in src.calls()
