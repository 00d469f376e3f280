"""_netlink with pyroute2 replaced at the boundary (``ipr``): what would be
sent to the kernel, and that check mode and bad input send nothing.
Real netlink is exercised in tests/integration/test_network.py."""

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.net import links as _netlink
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import NotFoundError, ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.net.spec import normalize

from .boundaries import Msg


def link(index, name, kind=None, **attrs):
    info = Msg({"IFLA_INFO_KIND": kind}) if kind else None
    return Msg(dict(IFLA_IFNAME=name, IFLA_LINKINFO=info, **attrs), index=index, flags=1)


class FakeIPR:
    """Answers reads from a link table; records every write."""

    def __init__(self, links=()):
        self.links = {lk["index"]: lk for lk in links}
        self.writes = []

    def link_lookup(self, ifname):
        return [i for i, lk in self.links.items() if lk.get_attr("IFLA_IFNAME") == ifname]

    def get_links(self, *index):
        return [self.links[i] for i in index if i in self.links] if index else list(self.links.values())

    def get_addr(self, index):
        return []

    def get_classes(self, index):
        return []

    def get_filters(self, index, parent=0):
        return []

    def get_default_routes(self, family):
        return []

    def close(self):
        pass

    def __getattr__(self, name):  # link/addr/route/tc writes
        return lambda *a, **kw: self.writes.append((name, a, kw))


@pytest.fixture
def fake(monkeypatch):
    host = FakeIPR([link(1, "lo"), link(2, "br0", "bridge")])
    ns = FakeIPR([link(1, "lo")])
    monkeypatch.setattr(_netlink, "ipr", lambda netns=None: ns if netns else host)
    monkeypatch.setattr(_netlink.os.path, "exists", lambda p: True)
    return host, ns


IFACES = normalize([dict(bridge="br0", ipv4="10.1.0.2/24", gateway="10.1.0.1", rate="10mbit")], "web1")


def test_attach_creates_the_veth_peer_inside_the_netns(fake):
    host, _ns = fake
    _netlink.attach("web1", "/run/netns/ctrhost-web1", IFACES)
    name, _args, kw = host.writes[0]
    assert name == "link" and kw["kind"] == "veth" and kw["ifname"] == IFACES[0]["host_veth"]
    assert kw["peer"] == {"ifname": "eth0", "net_ns_fd": "/run/netns/ctrhost-web1"}


def test_check_mode_plans_and_writes_nothing(fake):
    host, ns = fake
    res = _netlink.attach("web1", "/run/netns/ctrhost-web1", IFACES, check_mode=True)
    assert res["changed"] and any("create veth" in a for a in res["actions"])
    assert any("rate 10000000bit" in a for a in res["actions"])
    assert host.writes == [] and ns.writes == []


def test_missing_bridge_fails_before_any_write(fake):
    host, ns = fake
    bad = normalize([dict(bridge="br7")], "web1")
    with pytest.raises(ValidationError, match=r"network\[0\].bridge: bridge 'br7' does not exist"):
        _netlink.attach("web1", "/run/netns/ctrhost-web1", bad)
    assert host.writes == [] and ns.writes == []


def test_attach_needs_the_netns(fake, monkeypatch):
    monkeypatch.setattr(_netlink.os.path, "exists", lambda p: False)
    with pytest.raises(NotFoundError, match="ctrhost-web1"):
        _netlink.attach("web1", "/run/netns/ctrhost-web1", IFACES)


def test_detach_deletes_the_host_veth_and_ifb(fake):
    host, _ns = fake
    veth = IFACES[0]["host_veth"]
    host.links[5] = link(5, veth, "veth")
    host.links[6] = link(6, _netlink.ifb_name(veth), "ifb")
    res = _netlink.detach("web1", IFACES)
    assert res["changed"]
    deleted = [kw["index"] for name, _a, kw in host.writes if name == "link" and _a == ("del",)]
    assert deleted == [6, 5]
    assert _netlink.detach("web1", []) == dict(changed=False, actions=[])
