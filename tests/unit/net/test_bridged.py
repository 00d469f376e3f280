"""The bridged fleet network (``_bridged``, ``_fleet`` mode bridged) and its "commit confirmed"
(``_confirm``) with pyroute2 replaced at the boundary: what is validated, what a snapshot keeps,
the plan of steps and its idempotence, the way back, and the watchdog's race with a confirmation.
Real netlink, SSH and a rollback that brings a host back: tests/integration/test_fleet_bridged.py."""

import json
import socket

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.host import netconfirm as _confirm
from ansible_collections.ctrhost.fleet.plugins.module_utils.host import network as _hostnetwork
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import bridged as _bridged
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import fleet as _fleet

from .boundaries import Msg

MAC = "52:54:00:12:34:56"
ALIAS = "ctrhost-fleet bridged uplink=eth0"


def bridged(**extra):
    raw = dict(mode="bridged", bridge="vmbr0", uplink="eth0")
    raw.update(extra)
    return _fleet.normalize(raw)


def link(index, name, kind=None, mac=MAC, master=None, alias=None):
    info = Msg({"IFLA_INFO_KIND": kind}) if kind else None
    return Msg(dict(IFLA_IFNAME=name, IFLA_LINKINFO=info, IFLA_ADDRESS=mac, IFLA_MASTER=master,
                    IFLA_IFALIAS=alias), index=index, flags=1)


def addr(address, prefixlen, family=socket.AF_INET, scope=0):
    return Msg(dict(IFA_ADDRESS=address), family=family, prefixlen=prefixlen, scope=scope)


def route(oif, dst=None, dst_len=0, gateway=None, proto=3, family=socket.AF_INET):
    return Msg(dict(RTA_OIF=oif, RTA_DST=dst, RTA_GATEWAY=gateway), family=family, dst_len=dst_len,
               proto=proto, scope=0, type=1)


class FakeIPR:
    """Links, addresses and routes to read; every write recorded."""

    def __init__(self, links, addrs=None, routes=()):
        self.links = {lk["index"]: lk for lk in links}
        self.addrs, self.routes, self.writes = addrs or {}, list(routes), []

    def link_lookup(self, ifname):
        return [i for i, lk in self.links.items() if lk.get_attr("IFLA_IFNAME") == ifname]

    def get_links(self, *index):
        return [self.links[i] for i in index if i in self.links] if index else list(self.links.values())

    def get_addr(self, index):
        return list(self.addrs.get(index, []))

    def get_routes(self, family, table):
        return [r for r in self.routes if r["family"] == family]

    def link(self, op, **kwargs):
        self.writes.append(("link", op, kwargs))

    def addr(self, op, **kwargs):
        self.writes.append(("addr", op, kwargs["index"], kwargs["address"]))

    def route(self, op, **kwargs):
        self.writes.append(("route", op, kwargs["oif"], kwargs.get("dst"), kwargs.get("gateway")))

    def close(self):
        pass


def plain_host(bridge_alias=None):
    """eth0 with the host's addresses and routes; vmbr0 an empty bridge of another MAC."""
    return FakeIPR(
        [link(1, "eth0"), link(2, "vmbr0", "bridge", mac="02:00:00:00:00:02", alias=bridge_alias)],
        addrs={1: [addr("192.0.2.11", 24), addr("2001:db8::11", 64, socket.AF_INET6),
                   addr("fe80::5054:ff:fe12:3456", 64, socket.AF_INET6, scope=253)]},
        routes=[route(1, gateway="192.0.2.1"), route(1, "198.51.100.0", 24, "192.0.2.5"),
                route(1, "192.0.2.0", 24, proto=2),  # the kernel's, for the address: not moved
                route(1, "fe80::", 64, proto=2, family=socket.AF_INET6)])


def bridged_host():
    return FakeIPR([link(1, "eth0", master=2), link(2, "vmbr0", "bridge", alias=ALIAS)],
                   addrs={2: [addr("192.0.2.11", 24), addr("2001:db8::11", 64, socket.AF_INET6)]},
                   routes=[route(2, gateway="192.0.2.1"), route(2, "198.51.100.0", 24, "192.0.2.5")])


def test_normalize_takes_a_rollback_timeout_and_names_the_field():
    assert bridged() == dict(mode="bridged", bridge="vmbr0", uplink="eth0", state="present", rollback_timeout=120)
    assert bridged(rollback_timeout=0)["rollback_timeout"] == 0
    assert bridged(rollback_timeout="30")["rollback_timeout"] == 30
    for bad in (-1, 3601, "soon", True):
        with pytest.raises(ValidationError, match=r"fleet\.rollback_timeout.*0-3600"):
            bridged(rollback_timeout=bad)
    with pytest.raises(ValidationError, match=r"fleet\.rollback_timeout.*only mode bridged.*routed"):
        _fleet.normalize(dict(mode="routed", bridge="ctr0", uplink="eth0", rollback_timeout=10))
    with pytest.raises(ValidationError, match=r"fleet\.vni.*only mode overlay.*bridged"):
        bridged(vni=10)
    with pytest.raises(ValidationError, match=r"fleet\.uplink.*another interface"):
        bridged(uplink="vmbr0")
    assert _fleet.alias(bridged()) == ALIAS and _fleet.alias_fields(ALIAS) == dict(mode="bridged", uplink="eth0")


def test_snapshot_keeps_what_moves_and_the_plan_moves_it_in_a_safe_order():
    snap = _bridged.snapshot(plain_host(), bridged())
    nic = snap["nic"]
    assert [a["address"] for a in nic["addrs"]] == ["192.0.2.11", "2001:db8::11"]  # not link-local
    assert [(r["dst"], r["gateway"]) for r in nic["routes"]] == [(None, "192.0.2.1"), ("198.51.100.0", "192.0.2.5")]
    assert snap["bridge_existed"] and nic["master"] is None and nic["mac"] == MAC
    assert json.loads(json.dumps(snap)) == snap  # plain data: it goes into the pending record
    steps = [s for s, _a in _bridged.plan(snap, ALIAS)]
    # the bridge ready (MAC, addresses) before the NIC joins it; the routes before the NIC's addresses go
    assert steps == ["mac", "add_addr", "add_addr", "enslave", "move_route", "move_route",
                     "del_addr", "del_addr", "alias"], steps
    assert _bridged.plan(snap, ALIAS)[0] == ("mac", MAC)


def test_a_bridged_host_plans_nothing_and_check_mode_writes_nothing():
    ipr = bridged_host()
    assert _bridged.plan(_bridged.snapshot(ipr, bridged()), ALIAS) == []
    changed, before, after, steps = _bridged.apply(ipr, bridged(), ALIAS)
    assert (changed, steps, ipr.writes) == (False, [], [])
    assert before == after and after["addresses"] == ["192.0.2.11/24", "2001:db8::11/64"], after
    plain = plain_host()
    changed, before, after, steps = _bridged.apply(plain, bridged(), ALIAS, check_mode=True)
    assert changed and steps and plain.writes == [] and before["mode"] is None and after["mode"] == "bridged"
    assert after["routes"] == ["198.51.100.0/24 via 192.0.2.5", "default via 192.0.2.1"], after


def test_apply_moves_addresses_and_routes_to_the_bridge():
    ipr = plain_host()
    changed, _b, _a, _s = _bridged.apply(ipr, bridged(), ALIAS)
    assert changed
    assert ("link", "set", dict(index=1, master=2)) in ipr.writes
    assert [w for w in ipr.writes if w[0] == "route"] == [
        ("route", "replace", 2, None, "192.0.2.1"), ("route", "replace", 2, "198.51.100.0", "192.0.2.5")]
    assert [w[1:] for w in ipr.writes if w[0] == "addr"] == [
        ("replace", 2, "192.0.2.11"), ("replace", 2, "2001:db8::11"), ("del", 1, "192.0.2.11"),
        ("del", 1, "2001:db8::11")]


def test_absent_gives_everything_back_to_the_nic_of_the_alias():
    ipr = bridged_host()
    changed, before, after, steps = _bridged.apply(ipr, bridged(state="absent", uplink="eth9"), ALIAS)
    assert changed and steps[0] == ("release", "eth0") and after["mode"] is None and before["mode"] == "bridged"
    assert ("link", "set", dict(index=1, master=0)) in ipr.writes
    assert ("route", "replace", 1, None, "192.0.2.1") in ipr.writes and ("addr", "del", 2, "192.0.2.11") in ipr.writes
    assert ("link", "set", dict(index=2, ifalias="")) in ipr.writes
    plain = plain_host()
    assert _bridged.apply(plain, bridged(state="absent"), ALIAS)[0] is False and plain.writes == []


def test_an_uplink_that_cannot_be_bridged_is_refused():
    for links, match in (([link(2, "vmbr0", "bridge")], r"fleet\.uplink.*eth0 does not exist"),
                         ([link(1, "eth0", "bridge"), link(2, "vmbr0", "bridge")], r"fleet\.uplink.*\(bridge\)"),
                         ([link(1, "eth0", master=3), link(3, "br9", "bridge"), link(2, "vmbr0", "bridge")],
                          r"fleet\.uplink.*port of br9"),
                         ([link(1, "eth0"), link(2, "vmbr0", "veth")], r"fleet\.bridge.*not a bridge")):
        with pytest.raises(ValidationError, match=match):
            _bridged.check(_bridged.snapshot(FakeIPR(links), bridged()))


def test_the_bridged_bridge_takes_no_address_or_mac_of_its_own():
    for key, value in (("ipv4", ["10.0.0.1/24"]), ("mac", MAC)):
        with pytest.raises(ValidationError, match=r"bridges\[1\]\.%s.*expected none.*vmbr0.*eth0" % key):
            _hostnetwork._bridged_declared(bridged(), [dict(name="ctr0", ipv4=["10.1.0.1/24"]),
                                                       dict(name="vmbr0", **{key: value})])


def _record(tmp_path, deadline=0.0):
    (tmp_path / "host-network.json").write_text("NEW")
    record = dict(token="t1", deadline=deadline, snapshot=dict(bridge="vmbr0"),
                  network_file=str(tmp_path / "host-network.json"), previous="OLD")
    (tmp_path / _confirm.RECORD).write_text(json.dumps(record))
    return record


@pytest.fixture
def restored(monkeypatch):
    calls = []
    monkeypatch.setattr(_confirm._netlink, "ipr", lambda: FakeIPR([]))
    monkeypatch.setattr(_confirm._bridged, "restore", lambda ipr, snap: calls.append(snap) or [])
    return calls


def test_the_watchdog_rolls_back_at_its_deadline(tmp_path, restored):
    _record(tmp_path, deadline=100.0)
    clock = iter([10.0, 60.0, 100.0])
    assert _confirm.watch(str(tmp_path), "t1", clock=lambda: next(clock), sleep=lambda s: None) == "rolled back"
    assert restored == [dict(bridge="vmbr0")] and (tmp_path / "host-network.json").read_text() == "OLD"
    assert _confirm.pending(str(tmp_path)) is None
    assert json.loads((tmp_path / _confirm.LAST).read_text())["errors"] == []


def test_a_confirmation_calls_the_rollback_off(tmp_path, restored):
    _record(tmp_path, deadline=100.0)
    assert _confirm.confirm(str(tmp_path), "ctr0") is None  # another bridge's run confirms nothing
    assert _confirm.confirm(str(tmp_path), "vmbr0", check_mode=True)["token"] == "t1"
    assert _confirm.pending(str(tmp_path)) is not None
    assert _confirm.confirm(str(tmp_path), "vmbr0")["token"] == "t1"
    assert _confirm.watch(str(tmp_path), "t1", clock=lambda: 200.0, sleep=lambda s: None) == "confirmed"
    assert restored == [] and (tmp_path / "host-network.json").read_text() == "NEW"


def test_a_boot_before_the_confirmation_takes_the_previous_declaration(tmp_path, restored):
    _record(tmp_path, deadline=100.0)
    assert _confirm.at_boot(str(tmp_path)) is True
    assert (tmp_path / "host-network.json").read_text() == "OLD" and _confirm.pending(str(tmp_path)) is None
    assert _confirm.at_boot(str(tmp_path)) is False


def test_another_mode_on_a_bridged_bridge_is_refused_until_it_is_turned_off():
    ipr = bridged_host()
    routed = _fleet.normalize(dict(mode="routed", bridge="vmbr0", uplink="eth0"))
    with pytest.raises(ValidationError, match=r"fleet\.mode.*state absent first.*vmbr0 is bridged.*not routed"):
        _fleet.apply(ipr, routed)
    assert ipr.writes == []


def test_restore_puts_a_snapshot_back_on_a_bridge_that_existed():
    snap = _bridged.snapshot(plain_host(), bridged())
    ipr = bridged_host()  # the change made: the NIC a port, the addresses and routes on the bridge
    assert _bridged.restore(ipr, snap) == []
    assert ipr.writes[0] == ("link", "set", dict(index=1, master=0))
    assert ("addr", "del", 2, "192.0.2.11") in ipr.writes and ("addr", "del", 2, "2001:db8::11") in ipr.writes
    assert ("link", "set", dict(index=2, address="02:00:00:00:00:02")) in ipr.writes
    assert ("link", "set", dict(index=2, ifalias="")) in ipr.writes
    assert ("addr", "replace", 1, "192.0.2.11") in ipr.writes
    assert [w for w in ipr.writes if w[0] == "route"] == [
        ("route", "replace", 1, None, "192.0.2.1"), ("route", "replace", 1, "198.51.100.0", "192.0.2.5")]
    made = dict(snap, bridge_existed=False, br=None)  # a bridge the change made is deleted
    ipr = bridged_host()
    _bridged.restore(ipr, made)
    assert ("link", "del", dict(index=2)) in ipr.writes
