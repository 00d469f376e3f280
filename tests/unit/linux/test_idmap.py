"""Unprivileged containers: the host's subordinate range, the OCI user namespace, the
shifted template tree, the stored default of old containers."""

import os
import stat
import struct

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.container import spec as _ctrspec
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import idmap as _idmap
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import bundle as _oci
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError

IDMAP = dict(uid=1000000000, gid=1000000000, size=65536)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to other owners needs root")


def subids(tmp_path, uid_text, gid_text=None):
    (tmp_path / "subuid").write_text(uid_text)
    (tmp_path / "subgid").write_text(uid_text if gid_text is None else gid_text)
    return str(tmp_path / "subuid"), str(tmp_path / "subgid")


def test_parse_takes_roots_lines_only():
    text = "alice:100000:65536\nroot:1000000000:65536\n0:2000000000:70000\nroot:x:1\n#c\n"
    assert _idmap.parse_subids(text) == [(1000000000, 65536), (2000000000, 70000)]


def test_host_range_first_root_range_large_enough(tmp_path):
    uid, gid = subids(tmp_path, "root:200000:1000\nroot:1000000000:131072\n", "root:3000000000:65536\n")
    assert _idmap.host_range(uid, gid) == dict(uid=1000000000, gid=3000000000, size=65536)


def test_host_range_missing_names_field_files_and_the_way_out(tmp_path):
    uid, gid = subids(tmp_path, "alice:100000:65536\n", "root:1000000000:65536\n")
    with pytest.raises(ValidationError) as err:
        _idmap.host_range(uid, gid)
    assert err.value.field == "privileged"
    assert uid in err.value.msg and gid not in err.value.msg
    assert "host role" in err.value.msg and "privileged: true" in err.value.msg
    with pytest.raises(ValidationError):
        _idmap.host_range(str(tmp_path / "absent"), gid)


def test_missing_on_host_checks_the_whole_range(tmp_path):
    uid, gid = subids(tmp_path, "root:1000000000:65536\n", "root:1000000000:65535\n")
    problems = _idmap.missing_on_host(IDMAP, uid, gid)
    assert len(problems) == 1 and gid in problems[0] and "1000000000-1000065535" in problems[0]


def test_oci_config_joins_the_containers_user_namespace_with_its_maps():
    spec = dict(template="t", command=["/bin/sh"], hostname="c1", idmap=IDMAP)
    cfg = _oci.build_config("c1", spec, "/run/netns/ctrhost-c1", cgroups="/x", cgroupns=True,
                            machine="x86_64")
    ns = {n["type"]: n.get("path") for n in cfg["linux"]["namespaces"]}
    assert ns["user"] == "/run/ctrhost/userns/c1"
    assert cfg["linux"]["uidMappings"] == [dict(containerID=0, hostID=1000000000, size=65536)]
    assert cfg["linux"]["gidMappings"] == [dict(containerID=0, hostID=1000000000, size=65536)]
    privileged = _oci.build_config("c1", dict(spec, idmap=None), "/n", cgroups="/x", cgroupns=True,
                                   machine="x86_64")
    assert "user" not in {n["type"] for n in privileged["linux"]["namespaces"]}
    assert "uidMappings" not in privileged["linux"]


def test_old_container_without_the_field_stays_privileged(monkeypatch):
    monkeypatch.setattr(_idmap, "host_range", lambda: dict(IDMAP))
    assert _ctrspec.norm_privileged(None, {"template": "t"}) == (True, None)
    assert _ctrspec.norm_privileged(None, None) == (_ctrspec.DEFAULT_PRIVILEGED,
                                                    None if _ctrspec.DEFAULT_PRIVILEGED else IDMAP)
    assert _ctrspec.norm_privileged(False, {"template": "t"}) == (False, IDMAP)
    kept = dict(uid=5000000, gid=5000000, size=65536)  # chosen at creation, never re-read
    assert _ctrspec.norm_privileged(None, {"privileged": False, "idmap": kept}) == (False, kept)
    assert _ctrspec.needs_recreate({"template": "t"}, {"template": "t", "privileged": True}) == []
    assert _ctrspec.needs_recreate({"template": "t"}, {"template": "t", "privileged": False}) == \
        ["privileged"]


def test_an_unprivileged_containers_dumps_and_restores_make_its_netns_empty():
    from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import dump as _checkpoint
    from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import restore_config as _restorecfg

    class Rt:
        name = "runc"

        def base_cmd(self):
            return ["runc"]

    priv = _checkpoint.criu_options({"privileged": True}, tcp_established=True)
    unpriv = _checkpoint.criu_options({"idmap": IDMAP}, tcp_established=True)
    assert priv["empty_netns"] is False and unpriv["empty_netns"] is True
    dump = _checkpoint.dump_command(Rt(), "/usr/sbin/criu", "c1", "/i", "/w", unpriv)
    assert "--empty-ns=network" in dump and "--tcp-established" in dump
    assert "--empty-ns=network" not in _checkpoint.dump_command(Rt(), "/usr/sbin/criu", "c1", "/i",
                                                                "/w", priv)
    back = _restorecfg.restore_command(Rt(), "/usr/sbin/criu", "c1", "/i", "/w", "/b", unpriv)
    assert "--empty-ns=network" in back and back[-1] == "c1"


def test_acl_named_ids_shift_and_back():
    acl = struct.pack("<I", 2) + struct.pack("<HHI", 0x01, 7, 0xFFFFFFFF) + \
        struct.pack("<HHI", 0x02, 6, 33) + struct.pack("<HHI", 0x08, 4, 70000)
    out = _idmap.shift_acl(acl, IDMAP)
    ids = [struct.unpack_from("<HHI", out, 4 + 8 * i)[2] for i in range(3)]
    assert ids == [0xFFFFFFFF, 1000000033, 1000000000 + 65534]
    assert _idmap.shift_acl(out, IDMAP, back=True)[:20] == acl[:20]


def test_file_capabilities_v2_become_v3_owned_by_the_ranges_root():
    v2 = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)  # cap_net_raw+ep
    v3 = _idmap.shift_caps(v2, IDMAP)
    assert struct.unpack("<IIIIII", v3) == (0x03000001, 1 << 13, 0, 0, 0, 1000000000)
    assert _idmap.shift_caps(v3, IDMAP, back=True) == v2


def test_blocked_ancestor(tmp_path):
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    above = _idmap.blocked_ancestor(str(tmp_path))  # the test's own parents (may be 0700)
    os.chmod(tmp_path / "a", 0o700)
    try:
        blocked = _idmap.blocked_ancestor(str(inner))
        assert blocked == (above if above else (str(tmp_path / "a"), 0o700))
        os.chmod(tmp_path / "a", 0o711)
        assert _idmap.blocked_ancestor(str(inner)) == above
    finally:
        os.chmod(tmp_path / "a", 0o755)


@needs_root
def test_shift_copy_keeps_modes_links_and_xattrs_and_moves_owners(tmp_path):
    src = tmp_path / "rootfs"
    (src / "bin").mkdir(parents=True)
    (src / "etc").mkdir()
    tool = src / "bin" / "tool"
    tool.write_bytes(b"#!/bin/sh\n")
    os.chmod(tool, 0o4755)
    os.link(tool, src / "bin" / "alias")
    os.symlink("tool", src / "bin" / "link")
    shadow = src / "etc" / "shadow"
    shadow.write_text("x")
    os.chown(shadow, 0, 42)
    os.chmod(shadow, 0o640)
    os.chown(src / "etc", 100, 100)
    os.setxattr(tool, "user.note", b"kept")
    big = src / "etc" / "big"
    big.write_text("y")
    os.chown(big, 70000, 0)
    os.utime(shadow, ns=(1, 2_000_000_000))
    target = _idmap.ensure_shifted(str(src), IDMAP)
    assert target == str(src) + ".1000000000-1000000000-65536"
    dst = tmp_path / os.path.basename(target)
    st = os.lstat(dst / "bin" / "tool")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000000000, 1000000000, 0o4755)
    assert os.lstat(dst / "bin" / "alias").st_ino == st.st_ino
    assert os.readlink(dst / "bin" / "link") == "tool"
    assert os.lstat(dst / "bin" / "link").st_uid == 1000000000
    sh = os.lstat(dst / "etc" / "shadow")
    assert (sh.st_uid, sh.st_gid, stat.S_IMODE(sh.st_mode), sh.st_mtime_ns) == \
        (1000000000, 1000000042, 0o640, 2_000_000_000)
    assert os.lstat(dst / "etc").st_uid == 1000000100
    assert os.lstat(dst / "etc" / "big").st_uid == 1000000000 + 65534
    assert os.getxattr(dst / "bin" / "tool", "user.note") == b"kept"
    assert os.lstat(dst).st_uid == 1000000000
    assert os.lstat(src / "bin" / "tool").st_uid == 0  # the source is never changed
    os.chown(dst / "bin" / "tool", 0, 0)  # a second call keeps the tree it made
    assert _idmap.ensure_shifted(str(src), IDMAP) == target
    assert os.lstat(dst / "bin" / "tool").st_uid == 0
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


@needs_root
def test_shift_in_place_and_back(tmp_path):
    upper = tmp_path / "upper"
    (upper / "root").mkdir(parents=True)
    (upper / "root" / "f").write_text("x")
    os.chmod(upper / "root" / "f", 0o2750)
    _idmap.shift_in_place(str(upper), IDMAP)
    st = os.lstat(upper / "root" / "f")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000000000, 1000000000, 0o2750)
    _idmap.shift_in_place(str(upper), IDMAP, back=True)
    st = os.lstat(upper / "root" / "f")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o2750)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_images_open_to_the_ranges_group_and_only_the_way_to_them_opens(tmp_path):
    root = tmp_path / "lib"
    images = root / "checkpoints" / "c1" / "one"
    images.mkdir(parents=True)
    (images / "pages-1.img").write_bytes(b"x")
    os.chmod(images / "pages-1.img", 0o600)
    for d in (root / "checkpoints", root / "checkpoints" / "c1", images):
        os.chmod(d, 0o700)
    os.chmod(tmp_path, 0o700)  # above the layout: left as it is
    _idmap.give_images(str(images), IDMAP, within=(str(root),))
    img = os.stat(images / "pages-1.img")  # root's still, the range's root's group reads it
    assert (img.st_uid, img.st_gid, stat.S_IMODE(img.st_mode)) == (0, IDMAP["gid"], 0o640)
    top = os.stat(images)
    assert (top.st_uid, top.st_gid, stat.S_IMODE(top.st_mode)) == (0, IDMAP["gid"], 0o750)
    assert stat.S_IMODE(os.stat(root / "checkpoints" / "c1").st_mode) == 0o701
    assert stat.S_IMODE(os.stat(root / "checkpoints").st_mode) == 0o701
    assert stat.S_IMODE(os.stat(tmp_path).st_mode) == 0o700
