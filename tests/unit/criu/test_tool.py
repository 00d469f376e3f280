"""CRIU as one object (_criutool.Criu): its binary, version, ``criu check`` and features, all
through one probe cache, with a fake CRIU binary (a shell script counting its runs: the
command boundary) so that every real probe is visible."""

import os
import shutil
import stat

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.criu import reports as _criu
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import probecache as _probecache
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import sysinfo as _sysinfo
from ansible_collections.ctrhost.fleet.plugins.module_utils.criu.tool import Criu, criu_for
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CommandError, MissingToolError
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout

pytestmark = pytest.mark.skipif(not shutil.which("sh"), reason="needs sh")

CRIU = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/calls"
case "$1 $2 $3" in
  "--version  ") echo "Version: 4.2.1"; echo "GitID: v4.2.1" ;;
  "check  ") %(check)s ;;
  "check --feature uffd"|"check --feature uffd-noncoop") echo "$3 is supported" ;;
  "check --feature mem_dirty_track")
     echo "Warn  (criu/cr-check.c:824): Dirty tracking is OFF. Memory snapshot will not work." >&2; exit 1 ;;
  "check --feature timens") echo "Error (criu/cr-check.c:1901): Unknown feature timens" >&2; exit 1 ;;
  *) echo "$3 is supported" ;;
esac
"""


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(_probecache, "_MEMO", {})
    _sysinfo.clear_cache()


def fake(tmp_path, check='echo "Looks good."'):
    path = tmp_path / "bin" / "criu"
    path.parent.mkdir(exist_ok=True)
    path.write_text(CRIU % dict(check=check))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def calls(criu):
    try:
        with open(os.path.join(os.path.dirname(criu), "calls")) as handle:
            return handle.read().splitlines()
    except FileNotFoundError:
        return []


def host(tmp_path, name, pipe_max):
    base = tmp_path / name
    for rel, text in {"proc/self/status": "CapEff:\t000001fffeffffff\n",
                      "proc/sys/fs/pipe-max-size": "%d\n" % pipe_max}.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text(text)
    return str(base)


def test_version_check_and_features(tmp_path):
    criu = fake(tmp_path)
    tool = Criu(criu, str(tmp_path / "cache"))
    assert tool.binary == criu and tool.version == "4.2.1"
    assert tool.check() == (True, "Looks good.")
    assert tool.feature("uffd")[0] is True
    dirty, message = tool.feature("mem_dirty_track")
    assert dirty is False and "Dirty tracking is OFF" in message
    assert tool.feature("timens")[0] is None
    assert tool.nft_lock_usable() is True  # 4.2.1 and the feature


def test_one_probe_cache_for_every_object_and_process(tmp_path):
    criu = fake(tmp_path)
    cache = str(tmp_path / "cache")
    Criu(criu, cache).facts(probe=False)
    first = sorted(calls(criu))
    features = ("uffd", "uffd-noncoop", "mem_dirty_track", "pidfd_store", "timens", "network_lock_nftables")
    assert first == sorted(["--version", "check"] + ["check --feature %s" % f for f in features])
    Criu(criu, cache).facts(probe=False)  # another object: memoised in this process
    _criu.require(criu, cache)
    _probecache._MEMO.clear()  # a new process: read back from the disk
    assert Criu(criu, cache).require() == dict(path=criu, version="4.2.1")
    Criu(criu, cache).host_features(probe=False)
    assert sorted(calls(criu)) == first


def test_facts_say_why_pre_dump_and_lazy_pages_are_unusable(tmp_path):
    criu = fake(tmp_path)
    tool = Criu(criu, str(tmp_path / "cache"))
    info = tool.host_features(host(tmp_path, "tight", 1048576), probe=False)
    features = info["features"]
    assert features["uffd"] and features["uffd_noncoop"] and features["lazy_pages"]
    assert features["mem_dirty_track"] is False and not features["pre_dump"]
    assert features["timens"] is None
    assert info["cap_sys_resource"] is False and info["pipe_max_size"] == 1048576
    assert features["lazy_pages_usable"] is False and "CAP_SYS_RESOURCE" in info["lazy_pages_reason"]
    roomy = tool.host_features(host(tmp_path, "roomy", 16 << 20), probe=False)
    assert roomy["features"]["lazy_pages_usable"] is True and roomy["lazy_pages_reason"] is None

    facts = _criu.discover(criu, probe=False, cache_dir=str(tmp_path / "cache"))
    assert (facts["path"], facts["version"], facts["check"]) == (criu, "4.2.1", True)
    assert facts["pre_dump"] is False and "dirty memory" in facts["pre_dump_reason"]


def test_require_fails_clearly(tmp_path):
    with pytest.raises(MissingToolError, match="criu: not found on this host"):
        Criu(str(tmp_path / "none" / "criu"), str(tmp_path / "cache")).require()
    criu = fake(tmp_path, check="echo 'Error (criu/cr-check.c:1): vDSO mismatch' >&2; exit 1")
    with pytest.raises(MissingToolError, match="fails 'criu check': Error .*vDSO mismatch"):
        Criu(criu, str(tmp_path / "cache")).require()
    assert not [leaf for leaf in os.listdir(tmp_path / "cache") if leaf.startswith("criu-check")]


def test_criu_for_caches_under_the_run_dir(tmp_path):
    criu = fake(tmp_path)
    tool = criu_for(Layout(str(tmp_path / "root"), str(tmp_path / "run")), criu)
    tool.require()
    assert sorted(os.listdir(tmp_path / "run" / "cache")) == [
        "criu-check-%s.json" % _probecache.leaf(criu), "criu-version-%s.json" % _probecache.leaf(criu)]


def test_a_feature_probe_that_could_not_run_is_not_stored(tmp_path, monkeypatch):
    criu = fake(tmp_path)
    cache = str(tmp_path / "cache")
    real_run = _cli.run

    def timing_out(cmd, **kw):
        if "--feature" in cmd:
            raise CommandError("%s timed out after 60s" % " ".join(cmd), cmd, -1)
        return real_run(cmd, **kw)

    monkeypatch.setattr(_cli, "run", timing_out)
    assert Criu(criu, cache).feature("uffd") == (False, "%s check --feature uffd timed out after 60s" % criu)
    assert not os.path.exists(os.path.join(cache, "criu-feature-%s-uffd.json" % _probecache.leaf(criu)))
    monkeypatch.setattr(_cli, "run", real_run)
    assert Criu(criu, cache).feature("uffd")[0] is True
    assert Criu(criu, cache).feature("mem_dirty_track")[0] is False  # a verdict: stored
    assert sorted(os.listdir(cache)) == sorted("criu-feature-%s-%s.json" % (_probecache.leaf(criu), f)
                                               for f in ("uffd", "mem_dirty_track"))


def test_kdat_cache_needs_a_tmpfs_run(tmp_path):
    table = tmp_path / "mountinfo"
    table.write_text("30 1 0:40 / / rw - ext4 /dev/vda rw\n")
    kept, why = Criu("/nonexistent/criu").kdat_cache(str(table))
    assert kept is False and "/run is on ext4, not tmpfs" in why and "/run/criu.kdat" in why
    table.write_text("30 1 0:40 / / rw - ext4 /dev/vda rw\n31 30 0:41 / /run rw - tmpfs tmpfs rw\n")
    assert Criu("/nonexistent/criu").kdat_cache(str(table)) == (True, None)
