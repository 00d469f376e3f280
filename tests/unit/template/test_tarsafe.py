"""Safe extraction with crafted tarballs: nothing is ever written outside the destination,
and a refused archive writes nothing at all."""

import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import procfs as _procfs
from ansible_collections.ctrhost.fleet.plugins.module_utils.template import tarsafe as _tarsafe
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.template.tarsafe import UnsafeArchiveError

ROOT = os.geteuid() == 0


def _info(name, kind=tarfile.REGTYPE, data=b"", mode=0o644, linkname="", uid=0, gid=0, mtime=1000):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.mtime = mtime
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def make_tar(path, entries, mode="w"):
    """entries: (name, kind, kwargs) -> a tarball at ``path``."""
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tar:
        for name, kind, kw in entries:
            info, data = _info(name, kind, **kw)
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return str(path)


def F(name, data=b"x", **kw):
    return (name, tarfile.REGTYPE, dict(data=data, **kw))


def D(name, **kw):
    return (name, tarfile.DIRTYPE, dict(mode=kw.pop("mode", 0o755), **kw))


def S(name, target, **kw):
    return (name, tarfile.SYMTYPE, dict(linkname=target, mode=0o777, **kw))


def H(name, target, **kw):
    return (name, tarfile.LNKTYPE, dict(linkname=target, **kw))


@pytest.fixture
def dest(tmp_path):
    path = tmp_path / "tp-rootfs"
    path.mkdir()
    return path


def _refused(tmp_path, dest, entries, member, words):
    tarball = make_tar(tmp_path / "tp-bad.tar", entries)
    with pytest.raises(UnsafeArchiveError) as err:
        _tarsafe.extract(tarball, str(dest))
    assert err.value.member == member
    assert err.value.field == "src"
    assert repr(member) in err.value.msg and words in err.value.msg
    assert "nothing was extracted" in err.value.msg
    assert os.listdir(dest) == [], "a refused archive must write nothing"
    return err.value


def test_absolute_path_is_refused(tmp_path, dest):
    victim = tmp_path / "tp-abs-victim"
    _refused(tmp_path, dest, [F("ok"), F(str(victim))], str(victim), "absolute path")
    assert not victim.exists()


def test_dotdot_component_is_refused(tmp_path, dest):
    _refused(tmp_path, dest, [F("ok"), F("../tp-x")], "../tp-x", "'..' path component")
    _refused(tmp_path, dest, [F("a/b/../../../tp-x")], "a/b/../../../tp-x", "'..'")
    assert not (tmp_path / "tp-x").exists()


def test_symlink_to_etc_then_a_file_through_it(tmp_path, dest):
    probe = "/etc/tp-tarsafe-probe"
    err = _refused(tmp_path, dest, [S("etc", "/etc"), F("etc/tp-tarsafe-probe", b"owned")],
                   "etc/tp-tarsafe-probe", "written through the symbolic link 'etc' (-> /etc)")
    assert "tp-tarsafe-probe" in str(err)
    assert not os.path.exists(probe)


def test_file_through_a_relative_symlink_to_outside(tmp_path, dest):
    outside = tmp_path / "tp-outside"
    outside.mkdir()
    _refused(tmp_path, dest, [S("d", "../tp-outside"), F("d/f")], "d/f", "symbolic link 'd'")
    assert os.listdir(outside) == []


@pytest.mark.parametrize("target", ["../../etc/passwd", "/etc/passwd", "missing", "dir"])
def test_hardlink_to_outside_or_to_a_non_member_is_refused(tmp_path, dest, target):
    entries = [D("dir"), F("ok"), H("link", target)]
    tarball = make_tar(tmp_path / "tp-hl.tar", entries)
    with pytest.raises(UnsafeArchiveError) as err:
        _tarsafe.extract(tarball, str(dest))
    assert err.value.member == "link" and ("hard link to %r" % target) in err.value.msg
    assert os.listdir(dest) == []


@pytest.mark.parametrize("entries, member", [
    ([S("up", "../../etc")], "up"),
    ([D("a"), S("a/up", "../../x")], "a/up"),
    ([S("root", "/../etc")], "root"),
    # Only escapes through another link of the archive: d/a -> root, then root/.. is outside.
    ([D("d"), S("d/a", ".."), S("d/b", "a/..")], "d/b"),
])
def test_symlink_climbing_out_of_the_tree_is_refused(tmp_path, dest, entries, member):
    _refused(tmp_path, dest, entries, member, "resolves outside the template root")


def test_type_changes_are_refused(tmp_path, dest):
    _refused(tmp_path, dest, [D("x"), F("x")], "x", "replaces an earlier directory")
    _refused(tmp_path, dest, [F("y"), D("y")], "y", "replaces an earlier non-directory")
    _refused(tmp_path, dest, [F("f"), F("f/g")], "f/g", "its parent 'f' is not a directory")


def test_bad_member_at_the_end_means_nothing_is_written(tmp_path, dest):
    entries = [D("bin"), F("bin/sh", b"#!" * 1000)] + [F("f%d" % i) for i in range(50)]
    _refused(tmp_path, dest, entries + [F("/abs")], "/abs", "absolute path")


def test_devices_skipped_by_default_refused_or_created_on_request(tmp_path, dest):
    entries = [D("dev"), ("dev/null", tarfile.CHRTYPE, dict(mode=0o666)), F("ok")]
    tarball = make_tar(tmp_path / "tp-dev.tar", entries)
    stats = _tarsafe.extract(tarball, str(dest))
    assert stats["skipped"] == ["dev/null"] and stats["devices"] == 0
    assert not os.path.lexists(dest / "dev" / "null") and (dest / "ok").exists()
    with pytest.raises(UnsafeArchiveError, match="device node"):
        _tarsafe.validate(tarball, devices="refuse")
    with pytest.raises(ValidationError, match="devices: expected one of skip, create, refuse"):
        _tarsafe.validate(tarball, devices="maybe")


@pytest.mark.skipif(not ROOT, reason="mknod needs root")
def test_devices_created_when_asked(tmp_path):
    tarball = make_tar(tmp_path / "tp-dev.tar", [("null", tarfile.CHRTYPE, dict(mode=0o666))])
    with tarfile.open(tarball) as tar:
        assert tar.getmember("null").devmajor == 0
    tarball = tmp_path / "tp-dev2.tar"
    with tarfile.open(tarball, "w") as tar:
        info = tarfile.TarInfo("null")
        info.type, info.mode, info.devmajor, info.devminor = tarfile.CHRTYPE, 0o666, 1, 3
        tar.addfile(info)
    out = tmp_path / "tp-out"
    out.mkdir()
    stats = _tarsafe.extract(str(tarball), str(out), devices="create")
    st = os.lstat(out / "null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert stats["devices"] == 1


GOOD = [
    D("."),
    D("bin"),
    F("bin/busybox", b"\x7fELF" + b"b" * 5000, mode=0o4755, uid=0, gid=0, mtime=12345),
    S("bin/sh", "/bin/busybox"),
    S("bin/ls", "busybox"),
    D("usr"),
    D("usr/lib"),
    S("usr/lib/up", "../../bin/busybox"),
    F("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", uid=1234, gid=4321),
    H("etc/passwd-hardlink", "etc/passwd"),
    ("run/fifo", tarfile.FIFOTYPE, dict(mode=0o600)),
    D("ro", mode=0o555),
    F("ro/inside", b"written before ro became read-only"),
    D("tmp", mode=0o1777),
    # the same name again: the later member wins, as with tar
    F("etc/motd", b"first"),
    F("etc/motd", b"second"),
]


def _check_good(dest):
    assert (dest / "bin" / "busybox").read_bytes().startswith(b"\x7fELF")
    assert stat.S_IMODE(os.stat(dest / "bin" / "busybox").st_mode) == 0o4755
    assert os.stat(dest / "bin" / "busybox").st_mtime == 12345
    assert os.readlink(dest / "bin" / "sh") == "/bin/busybox"
    assert os.readlink(dest / "bin" / "ls") == "busybox"
    assert os.readlink(dest / "usr" / "lib" / "up") == "../../bin/busybox"
    assert os.stat(dest / "etc" / "passwd").st_ino == os.stat(dest / "etc" / "passwd-hardlink").st_ino
    assert stat.S_ISFIFO(os.lstat(dest / "run" / "fifo").st_mode)
    assert stat.S_IMODE(os.stat(dest / "ro").st_mode) == 0o555
    assert (dest / "ro" / "inside").read_bytes().startswith(b"written")
    assert stat.S_IMODE(os.stat(dest / "tmp").st_mode) == 0o1777
    assert (dest / "etc" / "motd").read_bytes() == b"second"
    if ROOT:
        st = os.stat(dest / "etc" / "passwd")
        assert (st.st_uid, st.st_gid) == (1234, 4321)


@pytest.mark.parametrize("suffix, mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".tar.xz", "w:xz"),
                                          (".tar.bz2", "w:bz2")])
def test_good_archive_in_each_compression(tmp_path, dest, suffix, mode):
    tarball = make_tar(tmp_path / ("tp-good" + suffix), GOOD, mode)
    stats = _tarsafe.extract(tarball, str(dest))
    _check_good(dest)
    assert stats["symlinks"] == 3 and stats["hardlinks"] == 1 and stats["fifos"] == 1
    assert stats["files"] == 5 and stats["skipped"] == []


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd is not installed")
def test_good_archive_zstd(tmp_path, dest):
    plain = make_tar(tmp_path / "tp-good.tar", GOOD)
    subprocess.run(["zstd", "-q", plain, "-o", str(tmp_path / "tp-good.tar.zst")], check=True)
    assert _tarsafe.detect_compression(str(tmp_path / "tp-good.tar.zst")) == "zstd"
    _tarsafe.extract(str(tmp_path / "tp-good.tar.zst"), str(dest), workdir=str(tmp_path))
    _check_good(dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tp-good.tar", "tp-good.tar.zst", "tp-rootfs"]


def test_a_later_file_replaces_a_symlink_instead_of_writing_through_it(tmp_path, dest):
    victim = tmp_path / "tp-victim"
    victim.write_bytes(b"precious")
    tarball = make_tar(tmp_path / "tp-dup.tar", [S("x", str(victim)), F("x", b"overwritten?")])
    _tarsafe.extract(tarball, str(dest))
    assert victim.read_bytes() == b"precious"
    assert not os.path.islink(dest / "x") and (dest / "x").read_bytes() == b"overwritten?"


def test_member_path_normalisation():
    assert _tarsafe.member_path("./a//b/") == "a/b"
    assert _tarsafe.member_path("./") == ""
    with pytest.raises(UnsafeArchiveError, match="NUL"):
        _tarsafe.member_path("a\x00b")


def test_not_a_tarball(tmp_path, dest):
    junk = tmp_path / "tp-junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b" + os.urandom(64))
    with pytest.raises(ValidationError) as err:
        _tarsafe.extract(str(junk), str(dest), field="url")
    assert err.value.field == "url" and "tar archive" in err.value.msg
    assert os.listdir(dest) == []


def test_destination_must_be_empty(tmp_path, dest):
    (dest / "already").write_text("x")
    with pytest.raises(ValidationError, match="must be an existing empty directory"):
        _tarsafe.extract(make_tar(tmp_path / "tp.tar", [F("a")]), str(dest))


def test_tree_size_counts_hardlinks_once(tmp_path, dest):
    _tarsafe.extract(make_tar(tmp_path / "tp.tar", GOOD), str(dest))
    expected = sum(len(d["data"]) for n, k, d in GOOD if k == tarfile.REGTYPE and n != "etc/motd")
    assert _tarsafe.tree_size(str(dest)) == expected + len(b"second")


def test_exchange_paths_swaps_two_directories(tmp_path):
    a, b = tmp_path / "tp-a", tmp_path / "tp-b"
    a.mkdir()
    b.mkdir()
    (a / "from-a").write_text("a")
    assert _tarsafe.exchange_paths(str(a), str(b))
    assert os.listdir(b) == ["from-a"] and os.listdir(a) == []


@pytest.mark.skipif(not ROOT, reason="mounting needs root")
def test_safe_rmtree_detaches_mounts_instead_of_deleting_through_them(tmp_path):
    keep = tmp_path / "tp-keep"
    keep.mkdir()
    (keep / "precious").write_text("keep me")
    tree = tmp_path / "tp-tree"
    (tree / "sub" / "bound").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(keep), str(tree / "sub" / "bound")], check=True)
    try:
        assert _procfs.mounts_below(str(tree)) == [str(tree / "sub" / "bound")]
        _tarsafe.safe_rmtree(str(tree))
    finally:
        subprocess.run(["umount", "-l", str(tree / "sub" / "bound")], check=False,
                       stderr=subprocess.DEVNULL)
    assert not tree.exists()
    assert (keep / "precious").read_text() == "keep me"
    assert _procfs.mounts_below(str(tmp_path)) == []


def test_large_file_content_survives_extraction(tmp_path, dest):
    data = os.urandom(300000)
    tarball = make_tar(tmp_path / "tp.tar.gz", [F("big", data)], "w:gz")
    _tarsafe.extract(tarball, str(dest))
    assert hashlib.sha256((dest / "big").read_bytes()).digest() == hashlib.sha256(data).digest()


def test_pax_tarball_of_gnu_tar_xattrs_extracts_with_exact_mtimes(tmp_path, dest):
    """GNU tar --xattrs writes pax headers, mtimes with a fraction: tarfile reads a float."""
    if not shutil.which("tar"):
        pytest.skip("needs GNU tar")
    src = tmp_path / "tp-src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "hostname").write_text("x\n")
    os.utime(src / "etc" / "hostname", ns=(1700000000123456789,) * 2)
    tarball = str(tmp_path / "tp-pax.tar")
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", str(src),
                    "-cf", tarball, "."], check=True)
    with tarfile.open(tarball) as tar:
        member = tar.getmember("./etc/hostname")
        assert "mtime" in member.pax_headers and isinstance(member.mtime, float)
    _tarsafe.extract(tarball, str(dest))
    st = os.stat(dest / "etc" / "hostname")
    assert st.st_mtime_ns == 1700000000123456789
    assert (dest / "etc" / "hostname").read_text() == "x\n"


def test_mtime_ns_of_pax_and_plain_members():
    info = tarfile.TarInfo("a")
    info.mtime = 1000
    assert _tarsafe.mtime_ns(info) == 1000 * 10**9
    info.pax_headers = {"mtime": "1700000000.5"}
    assert _tarsafe.mtime_ns(info) == 1700000000500000000
    info.pax_headers = {"mtime": "-1.25"}
    assert _tarsafe.mtime_ns(info) == -1250000000
