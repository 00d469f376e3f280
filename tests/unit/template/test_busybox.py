"""The ``busybox`` template source: built for real from this machine's static busybox
(Debian's busybox-static, which ``make setup`` installs), into a scratch root."""

import os
import shutil

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.template import busybox as _busybox
from ansible_collections.ctrhost.fleet.plugins.module_utils.template import lifecycle as _template

BUSYBOX = "/bin/busybox"
pytestmark = pytest.mark.skipif(not (os.path.isfile(BUSYBOX) and _busybox.is_static(BUSYBOX)),
                                reason="needs a static /bin/busybox (busybox-static)")


def test_static_and_dynamic_binaries_told_apart():
    assert _busybox.is_static(BUSYBOX)
    assert not _busybox.is_static(shutil.which("python3") or "/bin/sh")


def test_check_mode_then_build_then_idempotent_and_the_same_on_another_root(tmp_path):
    root, other = str(tmp_path / "a"), str(tmp_path / "b")
    check = _template.ensure(root, "bb", busybox={}, check_mode=True)
    assert check["changed"] is True and not os.path.exists(root)
    real = _template.ensure(root, "bb", busybox={})
    assert real["changed"] is True and real["sha256"] == check["diff"]["after"]["sha256"]
    rootfs = Layout(root).template_rootfs("bb")
    assert os.readlink(os.path.join(rootfs, "bin", "sh")) == "/bin/busybox"
    with open(os.path.join(rootfs, "etc", "passwd")) as handle:
        assert handle.read().startswith("root:x:0:0:")
    assert oct(os.stat(os.path.join(rootfs, "tmp")).st_mode & 0o7777) == "0o1777"
    with open(os.path.join(rootfs, "bin", "busybox"), "rb") as a, open(BUSYBOX, "rb") as b:
        assert a.read() == b.read()
    assert _template.ensure(root, "bb", busybox={})["changed"] is False
    assert _template.ensure(other, "bb", busybox={"path": BUSYBOX})["sha256"] == real["sha256"]


def test_a_dynamic_or_missing_binary_is_refused_and_leaves_nothing(tmp_path):
    root = str(tmp_path / "r")
    dynamic = shutil.which("python3") or "/bin/sh"
    with pytest.raises(ValidationError, match="busybox.path: .* dynamically linked; a static busybox"):
        _template.ensure(root, "bb", busybox={"path": dynamic})
    with pytest.raises(ValidationError, match="busybox.path: /nonexistent/busybox does not exist"):
        _template.ensure(root, "bb", busybox={"path": "/nonexistent/busybox"})
    with pytest.raises(ValidationError, match="checksum"):
        _template.ensure(root, "bb", busybox={}, checksum="sha256:" + "0" * 64)
    templates = Layout(root).templates_dir
    assert not os.path.isdir(templates) or os.listdir(templates) == []
