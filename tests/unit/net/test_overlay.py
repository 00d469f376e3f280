"""The overlay fleet network (``_overlay``, ``_fleet`` mode overlay) with pyroute2 replaced at
the boundary: what is validated, the peer plan, what would be sent to the kernel for the
VXLAN device and its flood list, and the announcement of a moved container. Real netlink,
VXLAN and traffic: tests/integration/test_fleet_overlay.py."""

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.host import network as _hostnetwork
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import fleet as _fleet
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import overlay as _overlay

from .boundaries import Msg

LOCAL = "192.0.2.11"
PEERS = ["192.0.2.11", "192.0.2.12", "192.0.2.13"]


def overlay(**extra):
    raw = dict(mode="overlay", bridge="ctr0", uplink="eth0", vni=4242, peers=list(PEERS))
    raw.update(extra)
    return _fleet.normalize(raw)


def link(index, name, kind=None, alias=None, mtu=1500, master=None, data=None, up=True):
    info = Msg({"IFLA_INFO_KIND": kind, "IFLA_INFO_DATA": Msg(data or {})}) if kind else None
    return Msg(dict(IFLA_IFNAME=name, IFLA_LINKINFO=info, IFLA_IFALIAS=alias, IFLA_MTU=mtu,
                    IFLA_MASTER=master), index=index, flags=1 if up else 0)


def vxlan(index=4, vni=4242, port=4789, local=LOCAL, uplink=1, master=2, mtu=1450):
    return link(index, _overlay.device_name(vni), "vxlan", mtu=mtu, master=master,
                data=dict(IFLA_VXLAN_ID=vni, IFLA_VXLAN_PORT=port, IFLA_VXLAN_LOCAL=local,
                          IFLA_VXLAN_LINK=uplink))


class FakeIPR:
    """Links, the uplink's address and the VXLAN device's FDB to read; every write recorded."""

    def __init__(self, links, fdb=(), addrs=(LOCAL,)):
        self.links = {lk["index"]: lk for lk in links}
        self.fdb_entries = [Msg(dict(NDA_LLADDR=mac, NDA_DST=dst), ifindex=index) for index, mac, dst in fdb]
        self.addrs = list(addrs)
        self.writes = []

    def link_lookup(self, ifname):
        return [i for i, lk in self.links.items() if lk.get_attr("IFLA_IFNAME") == ifname]

    def get_links(self, *index):
        return [self.links[i] for i in index if i in self.links] if index else list(self.links.values())

    def get_addr(self, index, family):
        return [Msg(dict(IFA_ADDRESS=a)) for a in self.addrs] if index == 1 else []

    def fdb(self, op, **kwargs):
        if op == "dump":
            return list(self.fdb_entries)
        self.writes.append(("fdb", op, kwargs.get("dst")))
        return None

    def link(self, op, **kwargs):
        self.writes.append(("link", op, kwargs))
        if op == "add":
            made = vxlan(index=9, vni=kwargs["vxlan_id"], port=kwargs["vxlan_port"], local=kwargs["vxlan_local"],
                         uplink=kwargs["vxlan_link"], master=None, mtu=kwargs["mtu"])
            self.links[9] = made


def host(*extra, fdb=(), alias=None):
    return FakeIPR([link(1, "eth0"), link(2, "ctr0", "bridge", alias, mtu=1450), *extra], fdb=fdb)


def test_normalize_checks_each_option_and_names_the_field():
    want = overlay(peers=["192.0.2.13", " 192.0.2.12", "192.0.2.13"])
    assert want == dict(mode="overlay", bridge="ctr0", uplink="eth0", state="present", vni=4242,
                        port=4789, peers=["192.0.2.12", "192.0.2.13"])
    assert overlay(port="8472", peers=None)["port"] == 8472 and overlay(peers=None)["peers"] == []
    for bad, match in ((dict(vni=0), r"fleet\.vni.*1-16777215.*0"), (dict(vni=2 ** 24), r"fleet\.vni"),
                       (dict(vni=None), r"fleet\.vni.*None"), (dict(vni=True), r"fleet\.vni"),
                       (dict(vni="x"), r"fleet\.vni.*'x'"), (dict(port=0), r"fleet\.port.*UDP port"),
                       (dict(peers="192.0.2.12"), r"fleet\.peers.*a list"),
                       (dict(peers=["192.0.2.12", "host-c"]), r"fleet\.peers\[1\].*IPv4.*'host-c'"),
                       (dict(peers=["239.1.1.1"]), r"fleet\.peers\[0\].*unicast"),
                       (dict(peers=["2001:db8::1"]), r"fleet\.peers\[0\]")):
        with pytest.raises(ValidationError, match=match):
            overlay(**bad)
    with pytest.raises(ValidationError, match=r"fleet\.vni.*only mode overlay.*routed"):
        _fleet.normalize(dict(mode="routed", bridge="ctr0", uplink="eth0", vni=7))
    with pytest.raises(ValidationError, match=r"fleet\.peers.*only mode overlay"):
        _fleet.normalize(dict(bridge="ctr0", uplink="eth0", peers=[LOCAL]))
    # turning it off needs no VNI (the bridge's alias has it)
    assert _fleet.normalize(dict(mode="overlay", bridge="ctr0", uplink="eth0", state="absent"))["state"] == "absent"


def test_alias_carries_the_vni_and_routed_bridges_leave_overlay_ones_out():
    mark = _fleet.alias(overlay())
    assert mark == "ctrhost-fleet overlay uplink=eth0 vni=4242"
    assert _fleet.alias_fields(mark) == dict(mode="overlay", uplink="eth0", vni=4242)
    assert _fleet.parse_alias(mark) == ("overlay", "eth0")
    assert _fleet.alias_fields("ctrhost-fleet overlay uplink=eth0") is None  # no VNI: not ours
    ipr = FakeIPR([link(1, "eth0"), link(2, "ctr0", "bridge", mark), vxlan(),
                   link(3, "ctr1", "bridge", "ctrhost-fleet routed uplink=eth0")])
    assert _fleet.routed_bridges(ipr) == {"ctr1": (3, "eth0")}
    assert _fleet.overlay_tunnels(ipr) == {"ctr0": "ctrvx4242"}


def test_peer_plan_is_a_difference_without_this_host():
    assert _overlay.peer_plan([], PEERS, [LOCAL]) == (["192.0.2.12", "192.0.2.13"], [])
    assert _overlay.peer_plan(["192.0.2.12", "192.0.2.14"], PEERS, [LOCAL]) == (["192.0.2.13"], ["192.0.2.14"])
    assert _overlay.peer_plan(["192.0.2.12"], ["192.0.2.12"]) == ([], [])
    assert _overlay.tunnel_mtu(1500) == 1450 and _overlay.tunnel_mtu(9000) == 8950


def test_apply_creates_the_device_and_floods_to_the_other_hosts():
    ipr = host()
    changed, before, after = _fleet.apply(ipr, overlay())
    assert changed and before["mode"] is None
    assert after == dict(mode="overlay", bridge="ctr0", uplink="eth0", vni=4242, port=4789,
                         peers=["192.0.2.12", "192.0.2.13"], mtu=1450)
    add = [w for w in ipr.writes if w[:2] == ("link", "add")][0][2]
    assert add["kind"] == "vxlan" and add["vxlan_id"] == 4242 and add["vxlan_local"] == LOCAL
    assert add["vxlan_link"] == 1 and add["vxlan_port"] == 4789 and add["mtu"] == 1450
    assert ("link", "set", dict(index=9, mtu=1450, master=2, state="up")) in ipr.writes
    floods = [("fdb", "append", "192.0.2.12"), ("fdb", "append", "192.0.2.13")]
    assert [w for w in ipr.writes if w[0] == "fdb"] == floods


def test_peers_converge_by_difference_and_check_mode_plans_the_same():
    mark = _fleet.alias(overlay())
    entries = [(4, "00:00:00:00:00:00", "192.0.2.12"), (4, "00:00:00:00:00:00", "192.0.2.14"),
               (4, "02:00:00:00:00:01", "192.0.2.14"), (5, "00:00:00:00:00:00", "192.0.2.99")]
    for check_mode in (True, False):
        ipr = host(vxlan(), fdb=entries, alias=mark)
        changed, before, after = _fleet.apply(ipr, overlay(), check_mode)
        assert changed and before["peers"] == ["192.0.2.12", "192.0.2.14"], before
        assert after["peers"] == ["192.0.2.12", "192.0.2.13"]
        if check_mode:
            assert ipr.writes == []
        else:  # the device stays: one entry appended, one deleted, nothing else
            assert ipr.writes == [("fdb", "append", "192.0.2.13"), ("fdb", "del", "192.0.2.14")]
    ipr = host(vxlan(), fdb=entries[:1] + [(4, "00:00:00:00:00:00", "192.0.2.13")], alias=mark)
    assert _fleet.apply(ipr, overlay())[0] is False and ipr.writes == []


def test_a_changed_port_makes_the_device_again_and_absent_deletes_it():
    mark = _fleet.alias(overlay())
    ipr = host(vxlan(port=8472), alias=mark)
    _fleet.apply(ipr, overlay())
    assert [w[:2] for w in ipr.writes][:2] == [("link", "del"), ("link", "add")]
    ipr = host(vxlan(), alias=mark)
    changed, before, after = _fleet.apply(ipr, _fleet.normalize(dict(mode="overlay", bridge="ctr0", uplink="eth0",
                                                                     state="absent")))
    assert changed and before["vni"] == 4242 and after["mode"] is None
    assert ipr.writes == [("link", "del", dict(index=4)), ("link", "set", dict(index=2, ifalias=""))]


def test_check_refuses_an_uplink_without_address_and_a_vni_of_another_bridge():
    ipr = host()
    ipr.addrs = []
    with pytest.raises(ValidationError, match=r"fleet\.uplink.*no IPv4 address"):
        _fleet.check(ipr, overlay())
    ipr = host(link(3, "ctr9", "bridge"), vxlan(master=3))
    with pytest.raises(ValidationError, match=r"fleet\.vni.*4242 already carries bridge ctr9"):
        _fleet.check(ipr, overlay())
    ipr = host(link(4, "ctrvx4242", "veth"))
    with pytest.raises(ValidationError, match=r"fleet\.vni.*no VXLAN device"):
        _fleet.check(ipr, overlay())


def test_bridge_mtu_follows_the_tunnel_and_a_larger_one_is_refused():
    ipr = host()
    bridges = [dict(name="ctr0"), dict(name="ctr1")]
    _hostnetwork._overlay_mtu(ipr, overlay(), bridges)
    assert bridges == [dict(name="ctr0", mtu=1450), dict(name="ctr1")]
    with pytest.raises(ValidationError, match=r"bridges\[1\]\.mtu.*at most 1450.*got 1500"):
        _hostnetwork._overlay_mtu(ipr, overlay(), [dict(name="ctr1"), dict(name="ctr0", mtu=1500)])


def test_announce_sends_a_gratuitous_arp_from_the_containers_mac_into_the_tunnel(monkeypatch):
    sent = []
    monkeypatch.setattr(_fleet, "send_frame", lambda ifname, frame: sent.append((ifname, frame)) or True)
    ifaces = [dict(bridge="ctr0", ipv4="10.78.0.11/24", mac="02:00:00:00:78:11"),
              dict(bridge="ctr1", ipv4="10.1.0.5/24", mac="02:00:00:00:78:12"),
              dict(bridge="ctr0", ipv6="fd00::5/64", mac="02:00:00:00:78:13")]
    assert _fleet.announce(ifaces, {"ctr0": "ctrvx4242"}) == ["10.78.0.11"]
    assert sent == [("ctrvx4242", _fleet.garp_frame("02:00:00:00:78:11", "10.78.0.11"))]
    assert sent[0][1][6:12] == bytes.fromhex("020000007811")  # the container's MAC as the source
