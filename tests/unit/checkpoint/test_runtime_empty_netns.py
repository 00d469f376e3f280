"""Which runtime may dump which container: an unprivileged container's dump and restore
need ``--empty-ns network``, which only runc passes on to CRIU (crun 1.21 has no such
option); crun is refused for it before anything is frozen, and keeps privileged ones."""

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import dump as _checkpoint
from ansible_collections.ctrhost.fleet.plugins.module_utils.criu import tool as _criutool
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ConflictError

_LOADABLE = _criutool.libcriu_loadable  # before the fixture replaces it
IDMAP = dict(uid=1000000000, gid=1000000000, size=65536)


@pytest.fixture(autouse=True)
def libcriu(monkeypatch):
    """The dynamic loader's answer (a boundary): found, unless a test says otherwise."""
    answer = {"value": (True, None)}
    monkeypatch.setattr(_criutool, "libcriu_loadable", lambda name=_criutool.LIBCRIU: answer["value"])
    return answer


class Rt:
    def __init__(self, name, features=("CRIU",)):
        self.name = name
        self.binary = "/usr/bin/" + name
        self.features = list(features)

    def base_cmd(self):
        return [self.binary]

    def info(self):
        return {"version": "1.21", "build_features": self.features}


def test_crun_refuses_an_unprivileged_container_naming_the_reason():
    unpriv = _checkpoint.criu_options({"idmap": IDMAP})
    with pytest.raises(ConflictError) as caught:
        _checkpoint.dump_command(Rt("crun"), "/usr/sbin/criu", "c1", "/i", "/w", unpriv)
    msg = str(caught.value)
    assert caught.value.details["field"] == "runtime" and msg.startswith("runtime: crun")
    assert "unprivileged" in msg and "--empty-ns network" in msg and "c1" in msg
    assert "runc" in msg and "the container is running" in msg


def test_crun_dumps_a_privileged_container_without_empty_ns():
    priv = _checkpoint.criu_options({"privileged": True}, tcp_established=True)
    cmd = _checkpoint.dump_command(Rt("crun"), "/usr/sbin/criu", "c1", "/i", "/w", priv)
    assert cmd[0] == "/usr/bin/crun" and cmd[1] == "checkpoint" and cmd[-1] == "c1"
    assert "--tcp-established" in cmd
    assert not any(arg.startswith("--empty-ns") or arg == "--criu" for arg in cmd)


def test_runc_keeps_empty_ns_for_an_unprivileged_container():
    unpriv = _checkpoint.criu_options({"idmap": IDMAP})
    cmd = _checkpoint.dump_command(Rt("runc"), "/usr/sbin/criu", "c1", "/i", "/w", unpriv)
    assert cmd[:3] == ["/usr/bin/runc", "--criu", "/usr/sbin/criu"] and "--empty-ns=network" in cmd


def test_a_crun_without_criu_is_refused_for_that_first():
    unpriv = _checkpoint.criu_options({"idmap": IDMAP})
    with pytest.raises(ConflictError, match="built without CRIU"):
        _checkpoint.dump_command(Rt("crun", ()), "/usr/sbin/criu", "c1", "/i", "/w", unpriv)


def test_a_crun_that_cannot_load_libcriu_is_refused_naming_the_library(libcriu):
    libcriu["value"] = (False, "libcriu.so.2: cannot open shared object file")
    priv = _checkpoint.criu_options({"privileged": True})
    with pytest.raises(ConflictError) as caught:
        _checkpoint.dump_command(Rt("crun"), "/usr/sbin/criu", "c1", "/i", "/w", priv)
    msg = str(caught.value)
    assert "libcriu.so.2" in msg and "libcriu2" in msg and "cannot open shared object" in msg
    assert caught.value.details["field"] == "runtime"


def test_runc_does_not_need_libcriu(libcriu):
    libcriu["value"] = (False, "absent")
    priv = _checkpoint.criu_options({"privileged": True})
    assert "--criu" in _checkpoint.dump_command(Rt("runc"), "/usr/sbin/criu", "c1", "/i", "/w", priv)


def test_libcriu_loadable_asks_the_dynamic_loader():
    """The real loader (no fixture here: the function under test is the unpatched one)."""
    assert _LOADABLE("libc.so.6") == (True, None)
    found, why = _LOADABLE("libctrhost-absent.so.9")
    assert found is False and "libctrhost-absent.so.9" in why
