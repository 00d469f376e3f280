"""CRIU probe cache on disk and the runc.conf CRIU reads (_criuconf), with a fake CRIU
binary (a shell script counting its runs) so that every real probe is visible."""

import json
import os
import shutil
import stat

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.criu import reports as _criu
from ansible_collections.ctrhost.fleet.plugins.module_utils.criu import config as _criuconf
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import probecache as _probecache
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import sysinfo as _sysinfo
from ansible_collections.ctrhost.fleet.plugins.module_utils.criu.tool import Criu
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import MissingToolError

pytestmark = pytest.mark.skipif(not shutil.which("sh"), reason="needs sh")

FAKE = """#!/bin/sh
echo "$*" >> "%(log)s"
case "$1 $2 $3" in
  "--version  ") echo "Version: %(version)s";;
  "check  ") %(check)s;;
  "check --feature network_lock_nftables") %(nft)s;;
  *) exit 1;;
esac
"""


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(_probecache, "_MEMO", {})
    _sysinfo.clear_cache()
    yield
    _sysinfo.clear_cache()


def fake_criu(tmp_path, nft=True, check="echo 'Looks good.'", version="9.9.9"):
    path = tmp_path / "bin" / "criu"
    path.parent.mkdir(exist_ok=True)
    log = tmp_path / "runs.log"
    path.write_text(FAKE % dict(log=log, check=check, nft="echo ok" if nft else "echo no; exit 1",
                                version=version))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path), log


def runs(log):
    return log.read_text().splitlines() if log.exists() else []


def load(path):
    with open(path) as handle:
        return json.load(handle)


def forget():
    """A new process: nothing memoised, only the disk cache left."""
    _probecache._MEMO.clear()
    _sysinfo.clear_cache()


def test_require_probes_once_then_reads_the_disk_cache(tmp_path):
    criu, log = fake_criu(tmp_path)
    cache = str(tmp_path / "cache")
    assert _criu.require(criu, cache) == dict(path=criu, version="9.9.9")
    assert sorted(runs(log)) == ["--version", "check"]
    forget()
    assert _criu.require(criu, cache) == dict(path=criu, version="9.9.9")
    assert len(runs(log)) == 2  # cache hit: no new run
    saved = [load(os.path.join(cache, leaf)) for leaf in sorted(os.listdir(cache))]
    assert all(s["key"] == _probecache.probe_key(criu) for s in saved)
    assert _sysinfo.kernel_release() in saved[0]["key"]


def test_a_changed_binary_invalidates_the_cache(tmp_path):
    criu, log = fake_criu(tmp_path)
    cache = str(tmp_path / "cache")
    _criu.require(criu, cache)
    forget()
    st = os.stat(criu)
    os.utime(criu, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    _criu.require(criu, cache)
    assert len(runs(log)) == 4


def test_a_changed_kernel_invalidates_the_cache(tmp_path, monkeypatch):
    criu, log = fake_criu(tmp_path)
    cache = str(tmp_path / "cache")
    Criu(criu, cache).feature("network_lock_nftables")
    forget()
    Criu(criu, cache).feature("network_lock_nftables")
    assert len(runs(log)) == 1
    forget()
    monkeypatch.setattr(_sysinfo, "kernel_release", lambda base="/": "0.0.0-other")
    assert Criu(criu, cache).feature("network_lock_nftables")[0] is True
    assert len(runs(log)) == 2


def test_a_failed_check_is_not_kept(tmp_path):
    criu, log = fake_criu(tmp_path, check="echo 'Error: no'; exit 1")
    cache = str(tmp_path / "cache")
    for _ in range(2):
        forget()
        with pytest.raises(MissingToolError, match="fails 'criu check'"):
            _criu.require(criu, cache)
    assert runs(log).count("check") == 2  # probed again: a failure may be transient
    assert not [leaf for leaf in os.listdir(cache) if leaf.startswith("criu-check")]


def test_write_config_selects_nftables_when_criu_has_it(tmp_path):
    criu, _ = fake_criu(tmp_path, nft=True)
    run_dir = str(tmp_path / "run")
    assert _criuconf.write_config(run_dir, criu) == "network-lock nftables\n"
    with open(os.path.join(run_dir, "criu", "runc.conf")) as handle:
        assert handle.read() == "network-lock nftables\n"


@pytest.mark.parametrize("version", ["3.17.1", "4.0", "4.1.1"])
def test_no_nftables_lock_before_criu_4_2(tmp_path, version):
    """CRIU 3.17.1 and 4.1.1 report the feature but die (SIGSEGV) on a ``network-lock``
    line of the configuration file runc hands them: no such line is written for them."""
    criu, _ = fake_criu(tmp_path, nft=True, version=version)
    assert _criuconf.write_config(str(tmp_path / "run"), criu) is None
    assert not Criu(criu, str(tmp_path / "cache")).nft_lock_usable()


@pytest.mark.parametrize("version", ["4.2", "4.2.1", "5.0"])
def test_nftables_lock_from_criu_4_2(tmp_path, version):
    criu, _ = fake_criu(tmp_path, nft=True, version=version)
    assert _criuconf.write_config(str(tmp_path / "run"), criu) == "network-lock nftables\n"


def test_an_upgrade_to_a_crashing_criu_drops_the_line(tmp_path):
    """A host's file written for a CRIU that took the line loses it (and keeps its scan
    paths) once the CRIU found is one that would crash on it."""
    run_dir = str(tmp_path / "run")
    (tmp_path / "good").mkdir()
    (tmp_path / "bad").mkdir()
    good, _ = fake_criu(tmp_path / "good", nft=True, version="4.2.1")
    assert _criuconf.write_config(run_dir, good, ["/w"]) == (
        "network-lock nftables\nirmap-scan-path /w\n")
    bad, _ = fake_criu(tmp_path / "bad", nft=True, version="4.1.1")
    assert _criuconf.write_config(run_dir, bad) == "irmap-scan-path /w\n"
    with open(os.path.join(run_dir, "criu", "runc.conf")) as handle:
        assert "network-lock" not in handle.read()


def test_write_config_removes_the_file_without_nftables(tmp_path):
    criu, _ = fake_criu(tmp_path, nft=False)
    run_dir = str(tmp_path / "run")
    os.makedirs(os.path.join(run_dir, "criu"))
    with open(os.path.join(run_dir, "criu", "runc.conf"), "w") as handle:
        handle.write("network-lock nftables\n")
    assert _criuconf.write_config(run_dir, criu) is None
    assert not os.path.exists(os.path.join(run_dir, "criu", "runc.conf"))
    assert os.listdir(os.path.join(run_dir, "criu")) == []


def test_a_missing_binary_is_never_cached(tmp_path):
    cache = str(tmp_path / "cache")
    missing = str(tmp_path / "nope" / "criu")
    assert _probecache.probe_key(missing) is None
    for _ in range(2):
        with pytest.raises(MissingToolError, match="criu: not found on this host"):
            _criu.require(missing, cache)
    assert not os.path.exists(cache)


@pytest.mark.parametrize("mode,line", [("v2", True), ("hybrid", False), ("v1", False)])
def test_restore_config_names_the_cgroup_root_on_v2_only(tmp_path, monkeypatch, mode, line):
    """runc passes the new cgroup root to CRIU on v1 only; on v2 the file must."""
    criu, _ = fake_criu(tmp_path, nft=True)
    monkeypatch.setattr(_sysinfo, "cgroup_layout", lambda: {"mode": mode})
    run_dir = str(tmp_path / "run")
    path = _criuconf.write_restore_config(run_dir, criu, "web1", "/ctrhost/h2/web1")
    assert path == os.path.join(run_dir, "criu", "web1.conf")
    with open(path) as handle:
        text = handle.read()
    assert text.startswith("network-lock nftables\n")
    assert ("cgroup-root /ctrhost/h2/web1\n" in text) is line


def test_write_config_keeps_scan_paths_of_every_dump(tmp_path):
    criu, _ = fake_criu(tmp_path, nft=True)
    run_dir = str(tmp_path / "run")
    _criuconf.write_config(run_dir, criu, ["/usr/share/dbus-1"])
    text = _criuconf.write_config(run_dir, criu, ["/usr/share/zoneinfo/Etc", "/usr/share/dbus-1"])
    assert text == ("network-lock nftables\nirmap-scan-path /usr/share/dbus-1\n"
                    "irmap-scan-path /usr/share/zoneinfo/Etc\n")
    # a later dump without watches (another container) drops nobody's paths
    assert _criuconf.write_config(run_dir, criu) == text
    assert sorted(os.listdir(os.path.join(run_dir, "criu"))) == ["runc.conf"]


def test_lock_tables_removed_from_the_netns(tmp_path, monkeypatch):
    netns = tmp_path / "netns"
    netns.write_text("")
    calls = []

    def run(cmd, check=True, timeout=None, **_kw):
        calls.append(cmd[cmd.index("--") + 1:])
        out = "table inet CRIU-1234\ntable inet filter\ntable ip CRIU-9\n" if "list" in cmd else ""
        return _criuconf._cli.Result(cmd, 0, out, "", 0.0)

    monkeypatch.setattr(_criuconf._cli, "run", run)
    monkeypatch.setattr(_criuconf._cli, "which", lambda name: "/usr/sbin/" + name)
    assert _criuconf.remove_lock_tables(str(netns)) == ["inet CRIU-1234", "ip CRIU-9"]
    assert ["/usr/sbin/nft", "delete", "table", "inet", "CRIU-1234"] in calls
    assert not [c for c in calls if "filter" in c]
    assert _criuconf.remove_lock_tables(str(tmp_path / "gone")) == []


def test_a_restored_containers_file_follows_the_hosts_lines(tmp_path, monkeypatch):
    criu, _ = fake_criu(tmp_path, nft=True)
    monkeypatch.setattr(_sysinfo, "cgroup_layout", lambda: {"mode": "v2"})
    run_dir = str(tmp_path / "run")
    path = _criuconf.write_restore_config(run_dir, criu, "web1", "/ctrhost/h2/web1")
    host = _criuconf.write_config(run_dir, criu, ["/usr/share/zoneinfo/Etc"])
    assert _criuconf.refresh_container_config(run_dir, "web1", host) == (
        host + "cgroup-root /ctrhost/h2/web1\n")
    with open(path) as handle:
        assert "irmap-scan-path /usr/share/zoneinfo/Etc\n" in handle.read()
    assert _criuconf.refresh_container_config(run_dir, "other", host) is None
