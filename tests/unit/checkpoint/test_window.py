"""A dump's frozen window made short: where the images go (a tmpfs stage when they fit,
read from a sample mount table and the real free space of a directory), how they are
moved to disk, and the cgroup freezer driven directly (sample v1 and v2 trees)."""

import os

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import window as _dumpwindow
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import procfs as _procfs
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.cgroups import Cgroup
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout

M = 1024 * 1024
G = 1024 * M
PATH = "/ctrhost/dwhost/dw1"
PLENTY = dict(available=64 * G)


def table(tmp_path, points):
    """A mountinfo file: ``points`` {mount point: fstype}."""
    path = tmp_path / ("mountinfo-%d" % len(list(tmp_path.glob("mountinfo-*"))))
    path.write_text("".join("%d 1 0:%d / %s rw - %s src rw\n" % (30 + i, 40 + i, point, fstype)
                            for i, (point, fstype) in enumerate(points.items())))
    return str(path)


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_the_deepest_mount_holding_a_path_names_its_type(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    mounts = table(tmp_path, {"/": "ext4", str(tmp_path): "xfs", str(run): "tmpfs",
                              str(run) + "x": "ext4"})
    assert _procfs.fs_type(str(run / "ctrhost" / "images"), mounts) == "tmpfs"
    assert _procfs.fs_type(str(tmp_path / "other"), mounts) == "xfs"
    assert _procfs.fs_type(str(run) + "xy", mounts) == "xfs"  # a prefix is no parent
    assert _procfs.fs_type("/", str(tmp_path / "missing")) is None


def test_images_are_staged_only_on_tmpfs_with_room_and_memory_to_spare(tmp_path):
    where = str(tmp_path)
    tmpfs = table(tmp_path, {"/": "ext4", where: "tmpfs"})
    assert _dumpwindow.verdict(where, 100 * M, tmpfs, PLENTY) == (True, None)
    ok, why = _dumpwindow.verdict(where, 100 * M, table(tmp_path, {"/": "ext4", where: "ext4"}),
                                  PLENTY)
    assert not ok and "is on ext4, not tmpfs" in why
    ok, why = _dumpwindow.verdict(where, None, tmpfs, PLENTY)
    assert not ok and "memory use is unknown" in why
    too_big = free_bytes(where) - _dumpwindow.MARGIN + 1
    ok, why = _dumpwindow.verdict(where, too_big, tmpfs, dict(available=too_big * 4))
    assert not ok and "bytes free" in why
    need = 100 * M  # fits the directory, not the host's memory beside its reserve
    ok, why = _dumpwindow.verdict(where, need, tmpfs,
                                  dict(available=need + _dumpwindow.MARGIN + _dumpwindow.RESERVE - 1))
    assert not ok and "memory available" in why
    ok, why = _dumpwindow.verdict(where, need, tmpfs, PLENTY, reserved=free_bytes(where))
    assert not ok and "bytes free" in why  # what other dumps are about to write counts


def test_a_plan_not_allowed_or_not_fitting_writes_to_disk(tmp_path, monkeypatch):
    layout = Layout(str(tmp_path / "root"), str(tmp_path / "run"))
    assert _dumpwindow.plan(layout, "c1", "x", 10 * M, allowed=False) == (None, _dumpwindow.NOT_ALLOWED)
    monkeypatch.setattr(_dumpwindow, "verdict", lambda base, need, reserved: (False, "no room"))
    assert _dumpwindow.plan(layout, "c1", "x", 100 * M) == (None, "no room")
    seen = []
    monkeypatch.setattr(_dumpwindow, "verdict",
                        lambda base, need, reserved: seen.append(reserved) or (True, None))
    path, why = _dumpwindow.plan(layout, "c1", "x", _dumpwindow.STAGE_MIN - 1)
    assert path is None and "written in place" in why
    stale = tmp_path / "run" / "images" / "c1" / "x"
    stale.mkdir(parents=True)
    (stale / "pages-1.img").write_text("from a dump that died")
    path, why = _dumpwindow.plan(layout, "c1", "x", 100 * M)
    assert path == str(stale) and why is None and os.listdir(path) == []  # fresh, empty
    assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
    assert _dumpwindow.staged(path) and not _dumpwindow.staged(layout.checkpoint_dir("c1", "x"))
    other, _why = _dumpwindow.plan(layout, "c2", "x", 200 * M)  # another move at the same time
    assert seen[-1] == 100 * M + _dumpwindow.MARGIN  # counts what the first may write
    _dumpwindow.remove(path)
    _dumpwindow.remove(other)
    _dumpwindow.plan(layout, "c3", "x", 100 * M)
    assert seen[-1] == 0  # released with their stages
    _dumpwindow.remove(os.path.join(str(tmp_path / "run"), "images", "c3", "x"))


def test_unstage_moves_files_and_links_and_removes_the_stage(tmp_path):
    stage = tmp_path / "run" / "images" / "c1" / "ck"
    stage.mkdir(parents=True)
    (stage / "pages-1.img").write_bytes(b"p" * 70000)
    (stage / "inventory.img").write_bytes(b"i")
    os.symlink("../pre-1", str(stage / "parent"))
    dst = tmp_path / "disk" / "ck"
    dst.mkdir(parents=True)
    (dst / "dump.log").write_text("the work directory's log stays")
    assert _dumpwindow.unstage(str(stage), str(dst)) == 70001
    assert sorted(os.listdir(dst)) == ["dump.log", "inventory.img", "pages-1.img", "parent"]
    assert (dst / "pages-1.img").read_bytes() == b"p" * 70000
    assert os.readlink(str(dst / "parent")) == "../pre-1"
    assert os.stat(str(dst / "pages-1.img")).st_mode & 0o777 == 0o600
    assert not (tmp_path / "run" / "images" / "c1").exists()  # the container's stage dir too


def test_a_move_that_fails_keeps_the_source_unless_unstaged(tmp_path):
    stage = tmp_path / "images" / "c1" / "ck"
    stage.mkdir(parents=True)
    (stage / "pages-1.img").write_bytes(b"p")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError):
        _dumpwindow.move_tree(str(stage), str(blocker / "ck"))
    assert (stage / "pages-1.img").exists()  # the images are all there is: kept
    with pytest.raises(OSError):
        _dumpwindow.unstage(str(stage), str(blocker / "ck"))
    assert not stage.exists()  # a checkpoint's stage goes: the container still runs


def write_tree(base, files):
    for rel, content in files.items():
        path = os.path.join(str(base), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(content + "\n")


def test_freeze_and_thaw_write_the_freezer_v1(tmp_path):
    leaf = PATH.lstrip("/")
    write_tree(tmp_path, {"freezer/%s/freezer.state" % leaf: "THAWED",
                          "memory/%s/memory.usage_in_bytes" % leaf: "0"})
    cg = Cgroup(PATH, base=str(tmp_path))
    assert cg.freeze(timeout=0.5) is True  # the sample file reads back what was written
    assert cg.freezer_state() == "frozen"
    cg.thaw()
    assert cg.freezer_state() == "thawed"


def test_a_freezer_that_does_not_settle_is_thawed_back_v2(tmp_path):
    leaf = PATH.lstrip("/")
    write_tree(tmp_path, {"cgroup.controllers": "cpu memory pids",
                          leaf + "/cgroup.freeze": "0",
                          leaf + "/cgroup.events": "populated 1\nfrozen 0"})
    cg = Cgroup(PATH, base=str(tmp_path))
    assert cg.v2
    assert cg.freeze(timeout=0.05) is False  # cgroup.events never says frozen 1
    assert cg.read(None, "cgroup.freeze") == "0"
    write_tree(tmp_path, {leaf + "/cgroup.events": "populated 1\nfrozen 1"})
    assert cg.freeze(timeout=0.05) is True and cg.read(None, "cgroup.freeze") == "1"


class Rt:
    def __init__(self, name):
        self.name = name
        self.resumed = []

    def resume(self, cid):
        self.resumed.append(cid)


def test_freeze_first_only_freezes_a_running_runc_container(tmp_path):
    assert _dumpwindow.freeze_first(Rt("crun"), PATH, dict(status="running")) is None
    assert _dumpwindow.freeze_first(Rt("runc"), PATH, dict(status="paused")) is None
    assert _dumpwindow.freeze_first(Rt("runc"), PATH, None) is None


def test_thaw_after_falls_back_to_the_runtime(tmp_path):
    cg = Cgroup(PATH, base=str(tmp_path / "nothing"), mode="hybrid")  # no freezer mounted
    rt = Rt("runc")
    _dumpwindow.thaw_after(rt, "dw1", cg)
    assert rt.resumed == ["dw1"]


def test_the_follower_copies_pages_while_they_grow_then_the_rest(tmp_path):
    stage = tmp_path / "run" / "images" / "c1" / "ck"
    stage.mkdir(parents=True)
    dst = tmp_path / "disk"
    dst.mkdir()
    (dst / "pages-1.img").write_bytes(b"stale bytes of an earlier attempt, longer than the new")
    follower = _dumpwindow.Follower(str(stage), str(dst))
    follower.stop()  # its steps driven here
    pages = stage / "pages-1.img"
    with open(str(pages), "ab") as handle:
        handle.write(b"a" * 5000)
        handle.flush()
        follower.step()
        assert follower.done == {"pages-1.img": 5000}
        assert (dst / "pages-1.img").read_bytes() == b"a" * 5000  # the stale copy truncated
        handle.write(b"b" * 3000)
    (stage / "pages-2.img").write_bytes(b"c" * 10)  # a later process's pages
    (stage / "pagemap-1.img").write_bytes(b"map")
    os.symlink("../pre-1", str(stage / "parent"))
    assert follower.finish() == 8000 + 10 + 3
    assert (dst / "pages-1.img").read_bytes() == b"a" * 5000 + b"b" * 3000
    assert (dst / "pages-2.img").read_bytes() == b"c" * 10
    assert (dst / "pagemap-1.img").read_bytes() == b"map"
    assert os.readlink(str(dst / "parent")) == "../pre-1"
    assert not stage.exists()


def test_a_stopped_follower_leaves_the_stage_to_its_caller(tmp_path):
    stage = tmp_path / "images" / "c1" / "ck"
    stage.mkdir(parents=True)
    (stage / "pages-1.img").write_bytes(b"a" * 100)
    follower = _dumpwindow.Follower(str(stage), str(tmp_path), interval=0.001)
    follower.stop()
    assert follower.error is None and (stage / "pages-1.img").exists()
