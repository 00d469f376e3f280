"""The frozen window's transfer: the tar stream into a receiver, and the rootfs delta.

The boundary is SSH: ``LocalLink`` runs the receiver's remote command here, so a real
``tar -x`` unpacks what ``Receiver`` writes into a directory standing for the destination,
and the files are read back from there.
"""

from __future__ import annotations

import os

import pytest
from .boundaries import LocalLink

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CommandError
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.stream import Receiver, delta
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.window import tree_state


def write(path, data=b"x", mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


@pytest.fixture
def ends(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    os.makedirs(src)
    os.makedirs(dst)
    return str(src), str(dst), LocalLink(dst)


def test_files_dirs_links_and_image_directories_arrive_whole(ends):
    src, dst, link = ends
    write(os.path.join(src, "upper", "etc", "app.conf"), b"port=80\n", 0o600)
    write(os.path.join(src, "upper", "empty"), b"")
    os.symlink("etc/app.conf", os.path.join(src, "upper", "conf"))
    write(os.path.join(src, "images", "pages-1.img"), os.urandom(70000))
    write(os.path.join(src, "images", "inventory.img"), b"inv")
    os.symlink("../pre-1", os.path.join(src, "images", "parent"))
    os.makedirs(os.path.join(src, "images", "not-a-file"))
    recv = Receiver(link, dst)
    try:
        recv.wait_ready()
        for rel in ("etc", "etc/app.conf", "empty", "conf"):
            recv.add(os.path.join(src, "upper", rel), os.path.join(dst, "upper", rel))
        recv.add_dir_files(os.path.join(src, "images"), os.path.join(dst, "incoming", "images"))
        sent = recv.finish(10)
    finally:
        recv.close()
    assert sent >= 70000 + 8 + 3 and sent % 512 == 0
    with open(os.path.join(dst, "upper", "etc", "app.conf"), "rb") as handle:
        assert handle.read() == b"port=80\n"
    assert os.stat(os.path.join(dst, "upper", "etc", "app.conf")).st_mode & 0o777 == 0o600
    assert os.readlink(os.path.join(dst, "upper", "conf")) == "etc/app.conf"
    assert os.path.getsize(os.path.join(dst, "upper", "empty")) == 0
    images = os.path.join(dst, "incoming", "images")
    with open(os.path.join(src, "images", "pages-1.img"), "rb") as a, \
            open(os.path.join(images, "pages-1.img"), "rb") as b:
        assert a.read() == b.read()
    assert os.readlink(os.path.join(images, "parent")) == "../pre-1"
    assert sorted(os.listdir(images)) == ["inventory.img", "pages-1.img", "parent"]  # flat: no dirs


def test_a_path_outside_the_receivers_base_is_refused(ends):
    src, dst, link = ends
    recv = Receiver(link, os.path.join(dst, "base"))
    try:
        with pytest.raises(ValueError):
            recv.arcname(os.path.join(dst, "elsewhere", "x"))
    finally:
        recv.close()


def test_a_receiver_that_cannot_start_fails_before_the_freeze(ends):
    _src, dst, link = ends
    recv = Receiver(link, os.path.join(dst, "missing"))  # its `cd` fails: no "ready"
    with pytest.raises(CommandError) as err:
        recv.wait_ready(timeout=5)
    assert "did not start" in err.value.msg and "missing" in err.value.msg


def test_a_destination_whose_tar_fails_is_an_error_naming_it(ends):
    src, dst, link = ends
    write(os.path.join(src, "f"), b"data")
    write(os.path.join(dst, "sub"), b"a file where the stream needs a directory")
    recv = Receiver(link, dst)
    try:
        recv.wait_ready()
        recv.add(os.path.join(src, "f"), os.path.join(dst, "sub", "f"))
        with pytest.raises(CommandError) as err:
            recv.finish(10)
    finally:
        recv.close()
    assert "tar stream to dest failed (rc=2)" in err.value.msg and "sub/f" in err.value.stderr


# -- the rootfs delta after the pre-sync ---------------------------------------------------
@pytest.fixture
def upper(tmp_path):
    root = str(tmp_path / "upper")
    write(os.path.join(root, "etc", "hosts"), b"127.0.0.1 localhost\n")
    write(os.path.join(root, "var", "log", "app.log"), b"one\n")
    return root


def test_nothing_changed_is_an_empty_delta(upper):
    before = tree_state(upper)
    assert delta(upper, before, tree_state(upper)) == []


def test_changed_and_new_entries_are_sent_parents_first(upper):
    before = tree_state(upper)
    with open(os.path.join(upper, "var", "log", "app.log"), "ab") as handle:
        handle.write(b"two\n")
    write(os.path.join(upper, "srv", "new", "file"), b"new")
    assert delta(upper, before, tree_state(upper)) == ["srv", "srv/new", "srv/new/file",
                                                       "var/log/app.log"]


@pytest.mark.parametrize("change", ["delete", "hard link", "xattr"])
def test_what_tar_cannot_carry_exactly_goes_by_rsync(upper, change):
    before = tree_state(upper)
    target = os.path.join(upper, "etc", "hosts")
    if change == "delete":
        os.unlink(target)
    elif change == "hard link":
        os.link(target, os.path.join(upper, "etc", "hosts.bak"))
    else:
        try:
            os.setxattr(target, "user.ctrhost.test", b"1")
        except OSError as exc:
            pytest.skip("no user xattrs here: %s" % exc)
    assert delta(upper, before, tree_state(upper)) is None
