# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host's boot declaration: what host_network persists and how calls merge."""

import json

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.host import network as _hostnetwork
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CtrhostError
from ansible_collections.ctrhost.fleet.plugins.module_utils.host import boot as _hostboot

BR0 = dict(name="br0", ipv4=["10.1.0.1/24"], ipv6=None, mtu=None, stp=False, nat=True, state="present")
BR1 = dict(name="br1", ipv4=["10.2.0.1/24"], ipv6=None, mtu=None, stp=False, nat=False, state="present")
ROUTE = dict(dest="10.9.0.0/24", via="192.0.2.9", state="present")


def saved(root):
    with open(root / _hostnetwork.NETWORK_FILE) as handle:
        return json.load(handle)


def test_first_call_writes_the_declaration_root_only(tmp_path):
    assert _hostnetwork.persist_network(str(tmp_path), [BR0], {"ipv4": True, "ipv6": None}, [ROUTE])
    data = saved(tmp_path)
    assert data["bridges"] == {"br0": {k: v for k, v in BR0.items() if v is not None}}
    assert data["forwarding"] == {"ipv4": True}
    assert data["routes"] == {"10.9.0.0/24": ROUTE}
    assert (tmp_path / _hostnetwork.NETWORK_FILE).stat().st_mode & 0o777 == 0o600


def test_same_call_again_changes_nothing(tmp_path):
    _hostnetwork.persist_network(str(tmp_path), [BR0], {"ipv4": True}, [])
    before = (tmp_path / _hostnetwork.NETWORK_FILE).stat().st_mtime_ns
    assert not _hostnetwork.persist_network(str(tmp_path), [BR0], {"ipv4": True}, [])
    assert (tmp_path / _hostnetwork.NETWORK_FILE).stat().st_mtime_ns == before


def test_calls_merge_by_name_and_absent_removes(tmp_path):
    root = str(tmp_path)
    _hostnetwork.persist_network(root, [BR0], None, [ROUTE])
    _hostnetwork.persist_network(root, [BR1], {"ipv6": False}, [])
    assert sorted(saved(tmp_path)["bridges"]) == ["br0", "br1"]
    assert _hostnetwork.persist_network(root, [dict(BR0, state="absent")],
                                        None, [dict(ROUTE, state="absent")])
    data = saved(tmp_path)
    assert sorted(data["bridges"]) == ["br1"] and data["routes"] == {}
    assert data["forwarding"] == {"ipv6": False}


def test_check_mode_reports_without_writing(tmp_path):
    assert _hostnetwork.persist_network(str(tmp_path), [BR0], None, [], check_mode=True)
    assert not (tmp_path / _hostnetwork.NETWORK_FILE).exists()


@pytest.mark.parametrize("content", ["", "{}"])
def test_nothing_declared_restores_nothing(tmp_path, content):
    if content:
        (tmp_path / _hostnetwork.NETWORK_FILE).write_text(content)
    assert _hostnetwork.restore_network(str(tmp_path)) is None


def test_boot_and_shutdown_with_no_containers_keep_reports(tmp_path):
    (tmp_path / "containers").mkdir()
    assert _hostboot.boot(str(tmp_path)) == ([], 0)
    assert _hostboot.shutdown(str(tmp_path)) == ([], 0)
    for kind in ("boot", "shutdown"):
        report = json.loads((tmp_path / _hostboot.REPORT_FILES[kind]).read_text())
        assert report["failed"] == 0 and report["steps"] == []


ROUTED = dict(mode="routed", bridge="br0", uplink="eth0")


def test_the_fleet_mode_is_kept_replaced_and_removed(tmp_path):
    root = str(tmp_path)
    assert _hostnetwork.persist_network(root, [BR0], None, [], dict(ROUTED, state="present"))
    assert saved(tmp_path)["fleet"] == ROUTED
    assert not _hostnetwork.persist_network(root, [], None, [], dict(ROUTED, state="present"))
    assert _hostnetwork.persist_network(root, [BR1], None, [], None)  # br1 added
    assert saved(tmp_path)["fleet"] == ROUTED  # a call without fleet keeps it
    assert _hostnetwork.persist_network(root, [], None, [], dict(ROUTED, state="absent"))
    assert saved(tmp_path)["fleet"] is None
    assert _hostnetwork.load_network(str(tmp_path / "nowhere"))["fleet"] is None


class _Link(dict):
    def __init__(self, index, name, alias=None):
        super().__init__(index=index)
        self.attrs = dict(IFLA_IFNAME=name, IFLA_IFALIAS=alias,
                          IFLA_LINKINFO=_Info() if name.startswith("br") else None)

    def get_attr(self, name):
        return self.attrs.get(name)


class _Info:
    def get_attr(self, name):
        return "bridge"


class _IPR:
    def __init__(self, links):
        self.links = links

    def get_links(self, *index):
        return self.links

    def link_lookup(self, ifname):
        return [lk["index"] for lk in self.links if lk.get_attr("IFLA_IFNAME") == ifname]

    def close(self):
        pass


@pytest.fixture
def network(monkeypatch):
    """apply_network with netlink and the two appliers it composes replaced."""
    calls = {}
    links = [_Link(1, "eth0"), _Link(2, "br0"), _Link(3, "br1", "ctrhost-fleet routed uplink=eth0")]
    monkeypatch.setattr(_hostnetwork._netlink, "ipr", lambda: _IPR(links))

    def hostnet(**kwargs):
        calls["bridges"] = kwargs["bridges"]
        return dict(changed=False, diff=dict(before={}, after={}))

    monkeypatch.setattr(_hostnetwork._hostnet, "apply", hostnet)
    monkeypatch.setattr(_hostnetwork._fleet, "apply", lambda ipr, want, check_mode: (
        calls.setdefault("fleet", want) and True, dict(mode=None), dict(mode=want["mode"])))
    return calls


def test_a_fleet_bridge_gets_the_fleets_mac_unless_one_is_given(network):
    from ansible_collections.ctrhost.fleet.plugins.module_utils.net import fleet as _fleet

    result = _hostnetwork.apply_network([dict(name="br0"), dict(name="br1"), dict(name="br2")], None, [],
                                        dict(ROUTED))
    macs = {b["name"]: b.get("mac") for b in network["bridges"]}
    # br0 is named by the call, br1 is routed already (its mark): both get the fleet's MAC
    assert macs == dict(br0=_fleet.fleet_mac("br0"), br1=_fleet.fleet_mac("br1"), br2=None)
    assert result["changed"] and result["fleet"] == dict(mode="routed")
    assert result["diff"]["after"]["fleet"] == dict(mode="routed")
    _hostnetwork.apply_network([dict(name="br0", mac="02:00:00:00:00:01")], None, [], dict(ROUTED))
    assert network["bridges"][0]["mac"] == "02:00:00:00:00:01"


def test_a_bad_fleet_changes_nothing(network):
    with pytest.raises(CtrhostError, match="fleet.uplink.*eth7"):
        _hostnetwork.apply_network([dict(name="br0")], None, [], dict(ROUTED, uplink="eth7"))
    with pytest.raises(CtrhostError, match="fleet.mode"):
        _hostnetwork.apply_network([dict(name="br0")], None, [], dict(ROUTED, mode="mesh"))
    assert network == {}  # neither the bridges nor the fleet were applied
