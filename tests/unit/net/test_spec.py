"""The container network option: validation, defaults, derived names, conflicts, diff."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.net.spec import (
    IFNAMSIZ,
    check_conflicts,
    derive_mac,
    diff,
    host_veth_name,
    normalize,
)

BRIDGES = {"br0": ["10.1.0.1/24", "fd01::1/64"], "br1": []}


def one(**kw):
    raw = dict(bridge="br0")
    raw.update(kw)
    return normalize([raw], "web1")[0]


def test_defaults():
    out = normalize([dict(bridge="br0", ipv4="10.1.0.2/24"), dict(bridge="br1")], "web1")
    assert [i["ifname"] for i in out] == ["eth0", "eth1"]
    assert out[0] == dict(ifname="eth0", bridge="br0", ipv4="10.1.0.2/24", gateway=None, ipv6=None,
                          gateway6=None, mac=derive_mac("web1", "eth0"), mtu=None, rate=None, filtering=True,
                          host_veth=host_veth_name("web1", 0))
    assert out[1]["host_veth"] != out[0]["host_veth"]


def test_full_interface_is_canonical_and_renormalizes_to_itself():
    out = normalize([dict(ifname="net0", bridge="br0", ipv4="10.1.0.2/24", gateway="10.1.0.1",
                          ipv6="FD01::0002/64", gateway6="fd01::1", mac="02-AA-BB-CC-DD-EE",
                          mtu="1400", rate="10mbit")], "db")
    assert out[0]["ipv6"] == "fd01::2/64" and out[0]["mac"] == "02:aa:bb:cc:dd:ee"
    assert out[0]["mtu"] == 1400 and out[0]["rate"] == 10_000_000
    assert normalize(out, "db") == out


@pytest.mark.parametrize("kw, field, text", [
    (dict(ipv4="10.1.0.300/24"), "network[0].ipv4", "not a valid IPv4"),
    (dict(ipv4="10.1.0.2"), "network[0].ipv4", "CIDR"),
    (dict(ipv4="fd01::2/64"), "network[0].ipv4", "not an IPv4"),
    (dict(ipv4="10.1.0.0/24"), "network[0].ipv4", "network or broadcast"),
    (dict(ipv6="fe80::2/64"), "network[0].ipv6", "link-local"),
    (dict(ipv4="10.1.0.2/24", gateway="10.2.0.1"), "network[0].gateway", "outside the subnet 10.1.0.0/24"),
    (dict(ipv4="10.1.0.2/24", gateway="10.1.0.2"), "network[0].gateway", "own address"),
    (dict(gateway="10.1.0.1"), "network[0].gateway", "needs an ipv4"),
    (dict(ipv6="fd01::2/64", gateway6="fd02::1"), "network[0].gateway6", "outside the subnet"),
    (dict(bridge=None), "network[0].bridge", "required"),
    (dict(bridge="a-bridge-name-too-long"), "network[0].bridge", "bridge name"),
    (dict(ifname="eth0-with-a-long-name"), "network[0].ifname", "1-15 characters"),
    (dict(ifname="lo"), "network[0].ifname", "reserved"),
    (dict(mac="01:00:5e:00:00:01"), "network[0].mac", "multicast"),
    (dict(mac="zz"), "network[0].mac", "expected a MAC"),
    (dict(mtu=10), "network[0].mtu", "between 68 and 65535"),
    (dict(rate="fast"), "network[0].rate", "rate"),
    (dict(rate="-5mbit"), "network[0].rate", "rate"),
    (dict(color="red"), "network[0]", "unknown key"),
])
def test_bad_input_names_the_field(kw, field, text):
    with pytest.raises(ValidationError) as err:
        one(**kw)
    assert err.value.field == field
    assert text in str(err.value) and str(err.value).startswith(field)


def test_duplicates_inside_one_container():
    with pytest.raises(ValidationError, match=r"network\[1\].ipv4: 10.1.0.2 is already used by network\[0\]"):
        normalize([dict(bridge="br0", ipv4="10.1.0.2/24"), dict(bridge="br1", ipv4="10.1.0.2/16")], "a")
    with pytest.raises(ValidationError, match=r"network\[1\].ifname"):
        normalize([dict(bridge="br0", ifname="x"), dict(bridge="br1", ifname="x")], "a")
    with pytest.raises(ValidationError, match=r"network\[1\].gateway: only one interface"):
        normalize([dict(bridge="br0", ipv4="10.1.0.2/24", gateway="10.1.0.1"),
                   dict(bridge="br1", ipv4="10.2.0.2/24", gateway="10.2.0.1")], "a")
    with pytest.raises(ValidationError, match="^network: expected a list"):
        normalize({"bridge": "br0"}, "a")


def test_mac_is_stable_unicast_and_locally_administered():
    mac = derive_mac("web1", "eth0")
    assert mac == derive_mac("web1", "eth0") != derive_mac("web2", "eth0") != derive_mac("web1", "eth1")
    first = int(mac.split(":")[0], 16)
    assert first & 0b10 and not first & 0b01


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=64),
       st.integers(min_value=0, max_value=63))
def test_host_veth_fits_ifnamsiz_and_is_a_valid_name(name, index):
    veth = host_veth_name(name, index)
    assert 1 < len(veth) <= IFNAMSIZ and veth.isalnum() and veth.startswith("v")
    assert "i" + veth[1:] != veth  # the IFB twin differs


def test_host_veth_names_of_long_names_with_a_shared_prefix_differ():
    names = ["production-database-%d" % i for i in range(200)]
    veths = {host_veth_name(n, 0) for n in names}
    assert len(veths) == len(names)
    assert len({host_veth_name("web", i) for i in range(64)}) == 64


def test_conflicts_with_other_containers_on_the_same_bridge():
    mine = normalize([dict(bridge="br0", ipv4="10.1.0.5/24", ipv6="fd01::5/64")], "new")
    other = normalize([dict(bridge="br0", ipv4="10.1.0.5/24")], "old1")
    with pytest.raises(ValidationError) as err:
        check_conflicts(mine, {"old1": {"network": other}}, bridges=BRIDGES)
    assert err.value.field == "network[0].ipv4" and "'old1'" in err.value.msg and "br0" in err.value.msg
    # the same for a list of specs and for a bare interface list; IPv6 too
    other6 = normalize([dict(bridge="br0", ipv6="fd01::5/120")], "old2")
    with pytest.raises(ValidationError, match=r"network\[0\].ipv6: fd01::5 is already used by container 'old2'"):
        check_conflicts(mine, [{"name": "old2", "network": other6}], bridges=BRIDGES)
    # another bridge is another L2 segment: no conflict
    elsewhere = normalize([dict(bridge="br1", ipv4="10.1.0.5/24")], "old3")
    check_conflicts(mine, {"old3": elsewhere}, bridges=BRIDGES)


def test_conflicts_with_the_host():
    with pytest.raises(ValidationError, match=r"network\[0\].bridge: bridge 'br9' does not exist"):
        check_conflicts(normalize([dict(bridge="br9")], "a"), {}, bridges=BRIDGES)
    with pytest.raises(ValidationError, match=r"network\[0\].ipv4: 10.1.0.1 is the address of bridge br0"):
        check_conflicts(normalize([dict(bridge="br0", ipv4="10.1.0.1/24")], "a"), {}, bridges=BRIDGES)


def test_conflicting_derived_veth_name():
    mine = normalize([dict(bridge="br0")], "a")
    fake = dict(mine[0], bridge="br1")
    with pytest.raises(ValidationError, match=r"network\[0\].host_veth: .* container 'b'"):
        check_conflicts(mine, {"b": [fake]}, bridges=BRIDGES)


def test_diff():
    old = normalize([dict(bridge="br0", ipv4="10.1.0.2/24"), dict(bridge="br1", ifname="x")], "c")
    assert diff(old, old) == {}
    new = normalize([dict(bridge="br0", ipv4="10.1.0.3/24", rate="1mbit"), dict(bridge="br1", ifname="y")], "c")
    d = diff(old, new)
    assert [i["ifname"] for i in d["add"]] == ["y"] and [i["ifname"] for i in d["remove"]] == ["x"]
    assert d["change"][0]["ifname"] == "eth0" and d["change"][0]["fields"] == ["ipv4", "rate"]
    assert diff([], new)["add"] == new and diff(None, None) == {}
