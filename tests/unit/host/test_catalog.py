# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""template_info / checkpoint_info on a real layout root (files written as the modules
that own them write them): sizes against os.stat, users, outdated users, restorability,
age, and a tree checksum that follows content and names, not the directory's place."""

import datetime
import json
import os
import shutil

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.host import catalog as _catalog
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError

NOW = datetime.datetime(2026, 12, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(data if isinstance(data, str) else json.dumps(data))


@pytest.fixture
def root(tmp_path):
    r = str(tmp_path)
    for name, sha in (("deb", "a" * 64), ("alp", "b" * 64)):
        write(os.path.join(r, "templates", name, "rootfs", "etc", "hostname"), name * 100)
        write(os.path.join(r, "templates", name, "template.json"),
              dict(name=name, sha256=sha, size=1234, files=3, source=dict(type="src", src="/x.tar"),
                   created="2026-12-01T11:00:00+00:00"))
    write(os.path.join(r, "templates", ".deb.work", "junk"), "x")  # a half install is not listed
    write(os.path.join(r, "containers", "web1", "spec.json"), dict(template="deb", template_sha256="a" * 64))
    write(os.path.join(r, "containers", "web2", "spec.json"), dict(template="deb", template_sha256="c" * 64))
    for cid, created in (("c1", "2026-12-01T10:00:00+00:00"), ("c2", "2026-12-01T11:59:00+00:00")):
        base = os.path.join(r, "checkpoints", "web1", cid)
        write(os.path.join(base, "pages-1.img"), "p" * 4096)
        write(os.path.join(base, "checkpoint.json"),
              dict(id=cid, name="web1", created=created, template="deb", template_sha256="a" * 64, size=4096))
    base = os.path.join(r, "checkpoints", "gone", "c9")
    write(os.path.join(base, "checkpoint.json"),
          dict(id="c9", name="gone", created="2026-11-01T12:00:00+00:00", template="deb",
               template_sha256="d" * 64, size=10))
    write(os.path.join(r, "checkpoints", "web1", ".c3.tmp", "pages-1.img"), "partial")
    return r


def test_templates_sizes_age_users_and_checkpoints(root):
    out = _catalog.templates(root, now=NOW)
    assert [t["name"] for t in out["templates"]] == ["alp", "deb"] and out["count"] == 2
    deb = out["templates"][1]
    assert deb["sha256"] == "a" * 64 and deb["size"] == 1234
    assert deb["disk_usage"] == os.stat(os.path.join(root, "templates", "deb", "rootfs", "etc", "hostname")).st_size
    assert deb["age_seconds"] == 3600
    assert deb["users"] == ["web1", "web2"] and deb["users_outdated"] == ["web2"] and deb["in_use"]
    assert deb["checkpoints"] == ["gone/c9", "web1/c1", "web1/c2"]
    assert out["templates"][0]["users"] == [] and not out["templates"][0]["in_use"]


def test_templates_by_name_missing_and_bad_name(root):
    out = _catalog.templates(root, names=["deb", "nope", "deb"], disk_usage=False)
    assert [t["name"] for t in out["templates"]] == ["deb"] and out["missing"] == ["nope"]
    assert out["templates"][0]["disk_usage"] is None
    with pytest.raises(ValidationError, match=r"name\[1\]"):
        _catalog.templates(root, names=["deb", "../etc"])


def test_checkpoints_listing(root):
    out = _catalog.checkpoints(root, now=NOW)
    assert [(c["name"], c["id"]) for c in out["checkpoints"]] == [("gone", "c9"), ("web1", "c1"), ("web1", "c2")]
    gone, c1, c2 = out["checkpoints"]
    assert c2["latest"] and not c1["latest"] and gone["latest"]
    assert c1["age_seconds"] == 7200 and c2["age_seconds"] == 60
    assert c1["restorable_here"] and c1["container_exists"]
    assert gone["template_installed"] and not gone["restorable_here"] and not gone["container_exists"]
    on_disk = sum(os.stat(os.path.join(dp, f)).st_size
                  for dp, _d, fs in os.walk(c1["path"]) for f in fs)
    assert c1["disk_usage"] == on_disk and c1["sha256"] is None
    assert out["total_size"] == sum(c["disk_usage"] for c in out["checkpoints"])
    only = _catalog.checkpoints(root, names=["web1"])
    assert [c["id"] for c in only["checkpoints"]] == ["c1", "c2"]


def test_checkpoint_checksum_follows_content_not_place(root, tmp_path_factory):
    first = {c["id"]: c["sha256"] for c in _catalog.checkpoints(root, checksum=True)["checkpoints"]}
    copy = str(tmp_path_factory.mktemp("copy"))
    shutil.copytree(os.path.join(root, "checkpoints"), os.path.join(copy, "checkpoints"))
    again = {c["id"]: c["sha256"] for c in _catalog.checkpoints(copy, checksum=True)["checkpoints"]}
    assert first == again and len(set(first.values())) == 3  # c1 and c2 differ by checkpoint.json
    write(os.path.join(copy, "checkpoints", "web1", "c1", "pages-1.img"), "q" + "p" * 4095)
    changed = {c["id"]: c["sha256"] for c in _catalog.checkpoints(copy, checksum=True)["checkpoints"]}
    assert changed["c1"] != first["c1"] and changed["c2"] == first["c2"]
    os.rename(os.path.join(copy, "checkpoints", "web1", "c2", "pages-1.img"),
              os.path.join(copy, "checkpoints", "web1", "c2", "pages-2.img"))
    renamed = {c["id"]: c["sha256"] for c in _catalog.checkpoints(copy, checksum=True)["checkpoints"]}
    assert renamed["c2"] != first["c2"]


@pytest.mark.parametrize("created, expected", [
    ("2026-12-01T11:59:30+00:00", 30), ("2026-12-01T11:59:30Z", 30), ("2026-12-01T11:59:30", 30),
    ("later", None), (None, None), ("2027-01-01T00:00:00+00:00", 0)])
def test_age_seconds(created, expected):
    assert _catalog.age_seconds(created, NOW) == expected
