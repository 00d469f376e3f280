"""_fleet (the routed fleet network) with pyroute2 replaced at the boundary: what is
validated, what would be sent to the kernel for a container's addresses, and the
announcement frames. Real netlink and ARP: tests/integration/test_fleet_routed.py."""

import ipaddress
import pathlib

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import bridges as _hostnet
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import duplicate_address as _dad
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import fleet as _fleet

from .boundaries import Msg

ROUTED = dict(mode="routed", bridge="ctr0", uplink="eth0", state="present")


def link(index, name, kind=None, alias=None):
    info = Msg({"IFLA_INFO_KIND": kind}) if kind else None
    return Msg(dict(IFLA_IFNAME=name, IFLA_LINKINFO=info, IFLA_IFALIAS=alias), index=index, flags=1)


class FakeIPR:
    """Links and routes to read; every write recorded."""

    def __init__(self, links, routes=()):
        self.links = {lk["index"]: lk for lk in links}
        self.routes = list(routes)
        self.writes = []

    def link_lookup(self, ifname):
        return [i for i, lk in self.links.items() if lk.get_attr("IFLA_IFNAME") == ifname]

    def get_links(self, *index):
        return [self.links[i] for i in index if i in self.links] if index else list(self.links.values())

    def get_routes(self, **kwargs):
        return self.routes

    def route(self, op, **kwargs):
        self.writes.append(("route", op, kwargs))

    def neigh(self, op, **kwargs):
        self.writes.append(("neigh", op, kwargs))

    def link(self, op, **kwargs):
        self.writes.append(("link", op, kwargs))


MARK = _fleet.alias(ROUTED)


def host(alias=MARK, routes=()):
    return FakeIPR([link(1, "eth0"), link(2, "ctr0", "bridge", alias), link(3, "ctr1", "bridge")], routes)


@pytest.fixture
def announced(monkeypatch):
    sent = []
    monkeypatch.setattr(_fleet, "garp", lambda ifname, address: sent.append((ifname, address)))
    return sent


IFACES = [dict(ifname="eth0", bridge="ctr0", ipv4="192.0.2.50/24", ipv6="fd00::50/64"),
          dict(ifname="eth1", bridge="ctr1", ipv4="10.1.0.5/24")]


def test_normalize_names_the_field_and_what_was_expected():
    assert _fleet.normalize(None) is None
    assert _fleet.normalize(dict(bridge="ctr0", uplink="eth0")) == ROUTED
    with pytest.raises(ValidationError, match="fleet.mode.*routed.*'vxlan9'"):
        _fleet.normalize(dict(mode="vxlan9", bridge="ctr0", uplink="eth0"))
    with pytest.raises(ValidationError, match="fleet.uplink.*interface name"):
        _fleet.normalize(dict(bridge="ctr0", uplink="a" * 16))
    with pytest.raises(ValidationError, match="fleet.bridge"):
        _fleet.normalize(dict(uplink="eth0"))
    with pytest.raises(ValidationError, match="fleet.uplink.*another interface"):
        _fleet.normalize(dict(bridge="ctr0", uplink="ctr0"))
    with pytest.raises(ValidationError, match="fleet.state"):
        _fleet.normalize(dict(bridge="ctr0", uplink="eth0", state="gone"))


def test_alias_round_trip_and_foreign_aliases():
    assert _fleet.parse_alias(_fleet.alias(ROUTED)) == ("routed", "eth0")
    for other in (None, "", "uplink to the LAN", "ctrhost-fleet nosuch uplink=eth0", "ctrhost-fleet routed"):
        assert _fleet.parse_alias(other) is None


def test_fleet_mac_is_one_per_bridge_name_unicast_and_local():
    mac = _fleet.fleet_mac("ctr0")
    assert mac == _fleet.fleet_mac("ctr0") != _fleet.fleet_mac("ctr1")
    first = int(mac[:2], 16)
    assert first & 1 == 0 and first & 2 == 2
    assert mac != _hostnet.stable_mac("ctr0", machine_id="x", hostname="h")


def test_sysctls_of_the_mode():
    paths = _fleet.sysctls(ROUTED)
    assert paths["/proc/sys/net/ipv4/ip_forward"] == "1"
    assert paths["/proc/sys/net/ipv4/conf/ctr0/proxy_arp"] == "1"
    assert paths["/proc/sys/net/ipv4/neigh/ctr0/proxy_delay"] == "0"
    assert paths["/proc/sys/net/ipv4/neigh/eth0/proxy_delay"] == "0"


def test_publish_routes_proxies_and_announces_only_routed_ipv4(announced):
    ipr = host()
    actions = []
    assert _fleet.publish(ipr, IFACES, actions.append) == ["192.0.2.50"]
    assert ("route", "replace", dict(dst="192.0.2.50/32", oif=2, scope=253, proto=242)) in ipr.writes
    assert ("neigh", "replace", dict(dst="192.0.2.50", ifindex=1, flags=_fleet.NTF_PROXY)) in ipr.writes
    assert len(ipr.writes) == 2  # nothing for ctr1 (not routed) nor for the IPv6 address
    assert announced == [("eth0", "192.0.2.50")]
    assert len(actions) == 1 and "192.0.2.50" in actions[0]


def test_publish_is_idempotent_and_check_mode_sends_nothing(announced):
    have = Msg({"RTA_DST": "192.0.2.50", "RTA_OIF": 2}, dst_len=32)
    ipr = host(routes=[have])
    actions = []
    assert _fleet.publish(ipr, IFACES, actions.append) == []
    assert ipr.writes == [] and actions == [] and announced == []
    ipr = host()
    assert _fleet.publish(ipr, IFACES, actions.append, check_mode=True) == ["192.0.2.50"]
    assert ipr.writes == [] and announced == [] and len(actions) == 1


def test_nothing_is_published_on_a_bridge_that_is_not_routed(announced):
    ipr = host(alias=None)
    assert _fleet.publish(ipr, IFACES) == [] and _fleet.withdraw(ipr, IFACES) == []
    assert ipr.writes == [] and announced == []


def test_withdraw_removes_both_and_tells_the_bridge(announced):
    ipr = host()
    assert _fleet.withdraw(ipr, IFACES) == ["192.0.2.50"]
    assert ipr.writes[0] == ("route", "del", dict(dst="192.0.2.50/32", oif=2, scope=253, proto=242))
    assert [w[:2] for w in ipr.writes] == [("route", "del"), ("neigh", "del")]
    assert ipr.writes[1][2]["flags"] == _fleet.NTF_PROXY
    assert announced == [("ctr0", "192.0.2.50")]


def test_apply_sets_the_mark_and_the_sysctls_and_absent_removes_the_mark(monkeypatch, tmp_path):
    files = {}
    for i, (_path, value) in enumerate(sorted(_fleet.sysctls(ROUTED).items())):
        files[str(tmp_path / str(i))] = value
        (tmp_path / str(i)).write_text("0\n")
    monkeypatch.setattr(_fleet, "sysctls", lambda fleet: files)  # the /proc/sys boundary
    ipr = host(alias=None)
    changed, before, after = _fleet.apply(ipr, ROUTED, check_mode=True)
    assert changed and before["mode"] is None and after["mode"] == "routed"
    assert ipr.writes == [] and all(pathlib.Path(p).read_text() == "0\n" for p in files)
    changed, _b, _a = _fleet.apply(ipr, ROUTED)
    assert changed and ("link", "set", dict(index=2, ifalias=_fleet.alias(ROUTED))) in ipr.writes
    assert {p: pathlib.Path(p).read_text().strip() for p in files} == files
    assert not _fleet.apply(host(), ROUTED)[0]  # marked, sysctls right: nothing to do
    ipr = host()
    changed, before, after = _fleet.apply(ipr, dict(ROUTED, state="absent"))
    assert changed and before["mode"] == "routed" and after["mode"] is None
    assert ipr.writes == [("link", "set", dict(index=2, ifalias=""))]


def test_check_refuses_a_missing_uplink_or_bridge_before_anything():
    ipr = host()
    _fleet.check(ipr, ROUTED)
    with pytest.raises(ValidationError, match="fleet.uplink.*eth9"):
        _fleet.check(ipr, dict(ROUTED, uplink="eth9"))
    with pytest.raises(ValidationError, match="fleet.bridge.*ctr7"):
        _fleet.check(ipr, dict(ROUTED, bridge="ctr7"))
    _fleet.check(ipr, dict(ROUTED, bridge="ctr7"), declared=["ctr7"])  # made by the same call
    assert ipr.writes == []


def test_gratuitous_arp_frame_says_where_the_address_is():
    frame = _fleet.garp_frame("02:00:00:00:00:07", "192.0.2.50")
    assert frame[:6] == b"\xff" * 6 and len(frame) == 42
    assert _dad.parse_answer(frame) == ("192.0.2.50", "02:00:00:00:00:07")
    assert frame[38:42] == ipaddress.IPv4Address("192.0.2.50").packed  # target IP = sender IP


def test_a_probe_with_a_sender_is_an_ordinary_request():
    rfc5227 = _dad.arp_probe("02:00:00:00:00:07", "192.0.2.50")
    asked = _dad.arp_probe("02:00:00:00:00:07", "192.0.2.50", sender="192.0.2.11")
    assert rfc5227[28:32] == b"\0" * 4
    assert asked[28:32] == ipaddress.IPv4Address("192.0.2.11").packed
    assert asked[38:42] == rfc5227[38:42]
