"""Isolation pieces that need no root: port filter rules, probe frames, address guard,
secret environment, file modes, bridge MACs. The boundaries (nftables, the probe's
socket, the runtime) are replaced; the container lifecycle is the real one
(``test_container_plan``'s fake runc)."""

import ipaddress
import json
import os
import stat
import struct

import pytest
from ..container.test_lifecycle import LOOP, env  # noqa: F401  (fixture)

from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import oci as _ocifile
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import addrguard as _addrguard
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import lifecycle as _container
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import spec as _ctrspec
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import duplicate_address as _dad
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import bridges as _hostnet
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import portfilter as _portfilter
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.args import CONTAINER_OPTIONS
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.net.spec import normalize
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.store import ContainerStore


# -- port filters -------------------------------------------------------------

def test_link_local_is_the_kernels_eui64():
    assert _portfilter.link_local("02:00:00:00:77:10") == "fe80::ff:fe00:7710"
    assert _portfilter.link_local("52:54:00:12:34:56") == "fe80::5054:ff:fe12:3456"


def test_rules_pin_mac_and_declared_addresses_only():
    iface = normalize([dict(bridge="br0", ipv4="10.1.0.2/24", ipv6="fd01::2/64")], "web1")[0]
    rules = _portfilter.wanted([iface])[iface["host_veth"]]
    text = "\n".join(rules)
    assert "ether saddr != %s counter drop" % iface["mac"] in rules
    assert "arp saddr ip != { 0.0.0.0, 10.1.0.2 } counter drop" in rules
    assert "ether type ip ip saddr != { 10.1.0.2 } counter drop" in rules
    assert "ip6 saddr != { ::, %s, fd01::2 } counter drop" % _portfilter.link_local(iface["mac"]) in text
    assert "0x%032x" % int(ipaddress.IPv6Address("fd01::2")) in text  # NA target check
    assert rules[-1] == "ether type != { arp, ip, ip6 } counter drop"
    # no IPv4 declared: all IPv4 dropped; filtering off: no chain at all
    bare = normalize([dict(bridge="br0"), dict(bridge="br0", filtering=False)], "web1")
    want = _portfilter.wanted(bare)
    assert list(want) == [bare[0]["host_veth"]] and "ether type ip counter drop" in want[bare[0]["host_veth"]]


def test_a_port_may_use_the_containers_other_addresses_on_the_same_bridge():
    ifaces = normalize([dict(bridge="br0", ipv4="10.1.0.2/24"), dict(bridge="br0", ipv4="10.1.0.3/24"),
                        dict(bridge="br1", ipv4="10.2.0.2/24")], "web1")
    want = _portfilter.wanted(ifaces)
    for iface in ifaces[:2]:
        assert "ether type ip ip saddr != { 10.1.0.2, 10.1.0.3 } counter drop" in want[iface["host_veth"]]
        assert "ether saddr != %s counter drop" % iface["mac"] in want[iface["host_veth"]]
    assert "ether type ip ip saddr != { 10.2.0.2 } counter drop" in want[ifaces[2]["host_veth"]]


def test_plan_installs_changed_and_removes_only_own_chains():
    a = normalize([dict(bridge="br0", ipv4="10.1.0.2/24")], "a")
    veth = a[0]["host_veth"]
    digest = _portfilter.digest(_portfilter.wanted(a)[veth])
    assert _portfilter.plan("a", a, {veth: ("a", digest)}) == ({}, [])
    install, remove = _portfilter.plan("a", a, {veth: ("a", "old"), "vgone0": ("a", "x"), "vb0": ("b", "y")})
    assert list(install) == [veth] and remove == ["vgone0"]


def test_converge_is_one_transaction_and_check_mode_runs_nothing(monkeypatch):
    scripts = []
    monkeypatch.setattr(_portfilter, "read", lambda: {})
    monkeypatch.setattr(_portfilter._nftables, "run", lambda script, what: scripts.append(script))
    a = normalize([dict(bridge="br0", ipv4="10.1.0.2/24")], "a")
    acts = []
    _portfilter.converge("a", a, acts.append, check_mode=True)
    assert acts and scripts == []
    _portfilter.converge("a", a, acts.append)
    assert len(scripts) == 1 and 'comment "ctrhost a ' in scripts[0]
    assert scripts[0].index("flush chain bridge ctrhost_ports prerouting") < scripts[0].index("iifname vmap")


def test_bad_filtering_value_names_the_field():
    with pytest.raises(ValidationError) as err:
        normalize([dict(bridge="br0", filtering="maybe")], "a")
    assert err.value.field == "network[0].filtering"


# -- probe frames -------------------------------------------------------------

def test_arp_probe_is_rfc5227():
    frame = _dad.arp_probe("02:00:00:00:00:01", "10.1.0.9")
    assert frame[:6] == b"\xff" * 6 and struct.unpack("!H", frame[12:14])[0] == 0x0806
    op, spa, tpa = struct.unpack("!H", frame[20:22])[0], frame[28:32], frame[38:42]
    assert op == 1 and spa == b"\0\0\0\0" and tpa == bytes([10, 1, 0, 9])
    reply = frame[:20] + struct.pack("!H6s4s", 2, bytes.fromhex("02aa00000001"), bytes([10, 1, 0, 9])) + frame[32:]
    assert _dad.parse_answer(reply) == ("10.1.0.9", "02:aa:00:00:00:01")
    assert _dad.parse_answer(frame) is None  # a probe (sender 0.0.0.0) holds nothing


def test_ns_probe_checksum_and_solicited_node_group():
    frame = _dad.ns_probe("02:00:00:00:00:01", "fd01::abcd:1234")
    assert frame[:6] == bytes.fromhex("3333ffcd1234")
    src, dst = frame[22:38], frame[38:54]
    assert src == b"\0" * 16 and ipaddress.IPv6Address(dst) == ipaddress.IPv6Address("ff02::1:ffcd:1234")
    body = frame[54:]
    pseudo = src + dst + struct.pack("!I3xB", len(body), 58)
    assert _dad._checksum(pseudo + body) == 0  # a correct checksum sums to zero
    na = frame[:54] + bytes([136]) + body[1:]
    assert _dad.parse_answer(na) == ("fd01::abcd:1234", "02:00:00:00:00:01")


# -- address guard --------------------------------------------------------------

def _store(tmp_path, **specs):
    layout = Layout(str(tmp_path))
    for name, net in specs.items():
        ContainerStore(layout).save(name, dict(network=normalize(net, name)))
    return layout


def test_guard_names_the_container_that_holds_the_address(tmp_path, monkeypatch):
    layout = _store(tmp_path, web1=[dict(bridge="br0", ipv4="10.1.0.2/24")])
    monkeypatch.setattr(_dad, "probe", lambda *a, **kw: {})
    mine = normalize([dict(bridge="br0", ipv4="10.1.0.2/24")], "web2")
    with pytest.raises(ValidationError) as err:
        _addrguard.check(layout, "web2", mine, bridges={"br0": []})
    assert err.value.field == "network[0].ipv4" and "web1" in err.value.msg


def test_guard_probes_only_new_addresses_and_names_the_mac(tmp_path, monkeypatch):
    layout = _store(tmp_path)
    asked = []

    def probe(bridge, addresses, ignore_macs=()):
        asked.append((bridge, sorted(addresses), sorted(ignore_macs)))
        return {"fd01::9": "02:99:00:00:00:01"} if "fd01::9" in addresses else {}

    monkeypatch.setattr(_dad, "probe", probe)
    monkeypatch.setattr(_hostnet, "bridge_addresses", lambda: {"br0": ["10.1.0.1/24"]})
    old = normalize([dict(bridge="br0", ipv4="10.1.0.2/24")], "web2")
    new = normalize([dict(bridge="br0", ipv4="10.1.0.2/24", ipv6="fd01::9/64")], "web2")
    with pytest.raises(ValidationError) as err:
        _addrguard.check_change(layout, "web2", old, new, created=False)
    assert err.value.field == "network[0].ipv6" and "02:99:00:00:00:01" in err.value.msg
    assert asked == [("br0", ["fd01::9"], [old[0]["mac"]])]
    # the preflight form lists it
    assert _addrguard.problems(layout, "web2", new) and _addrguard.check_change(
        layout, "web2", new, new, created=False) is None


def test_create_refused_on_conflict_leaves_nothing(env, monkeypatch):  # noqa: F811
    layout, fake, base = env
    monkeypatch.setattr(_addrguard, "other_specs", lambda layout, name: {})
    monkeypatch.setattr(_dad, "probe", lambda bridge, addresses, ignore_macs=(): {a: "02:77:00:00:00:01"
                                                                                  for a in addresses})
    monkeypatch.setattr(_addrguard._netconf, "check_conflicts", lambda *a, **kw: None)
    with pytest.raises(ValidationError) as err:
        _container.ensure(dict(base, network=[dict(bridge="br0", ipv4="10.1.0.5/24")]))
    assert err.value.field == "network[0].ipv4" and "02:77:00:00:00:01" in err.value.msg
    assert fake.mutating() == [] and not os.path.exists(layout.container_dir(base["name"]))


# -- secrets and modes ----------------------------------------------------------

def test_secret_env_is_no_log_and_defined_once():
    assert CONTAINER_OPTIONS["secret_env"] == dict(type="dict", no_log=True)


def test_secret_env_masked_in_diff_and_info_but_in_config(env):  # noqa: F811
    layout, fake, base = env
    res = _container.ensure(dict(base, env=dict(A="1"), secret_env=dict(DB_PASS="hunter2")))
    assert "hunter2" not in json.dumps(res)
    assert res["diff"]["after"]["secret_env"] == {"DB_PASS": "********"}
    bundle = layout.container_dir(base["name"])
    cfg = _ocifile.load_config(bundle)
    assert "DB_PASS=hunter2" in cfg["process"]["env"] and "A=1" in cfg["process"]["env"]
    # modes: the directory and the files holding the secret are root's only
    assert stat.S_IMODE(os.stat(bundle).st_mode) == 0o700
    for leaf in ("spec.json", "config.json"):
        assert stat.S_IMODE(os.stat(os.path.join(bundle, leaf)).st_mode) == 0o600
    # a change is refused without recreate, and shown masked but marked when allowed
    with pytest.raises(Exception) as err:
        _container.ensure(dict(base, secret_env=dict(DB_PASS="other")))
    assert "secret_env" in str(err.value) and "other" not in str(err.value)
    res = _container.ensure(dict(base, secret_env=dict(DB_PASS="other"), recreate=True))
    assert res["diff"]["after"]["secret_env"] == {"DB_PASS": "******** (changed)"}
    assert res["diff"]["before"]["secret_env"] == {"DB_PASS": "********"}
    assert "other" not in json.dumps(res) and "hunter2" not in json.dumps(res)


def test_secret_env_name_also_in_env_is_refused(env):  # noqa: F811
    layout, fake, base = env
    with pytest.raises(ValidationError) as err:
        _ctrspec.normalize(layout, base["name"], dict(base, env=dict(X="1"), secret_env=dict(X="2")))
    assert err.value.field == "secret_env.X" and "2" not in err.value.msg.split(":", 1)[1]


def test_secret_values_never_in_validation_messages(env):  # noqa: F811
    layout, fake, base = env
    with pytest.raises(ValidationError) as err:
        _ctrspec.normalize(layout, base["name"], dict(base, secret_env=dict(K=["s3cr3t"])))
    assert "s3cr3t" not in err.value.msg


def test_mask_marks_only_changed_values():
    masked = _ctrspec.mask({"A": "1", "B": "2"}, {"A": "1", "B": "3"})
    assert masked == {"A": "********", "B": "******** (changed)"}
    assert _ctrspec.mask(None) == {}


# -- bridge MAC -------------------------------------------------------------------

def test_stable_bridge_mac_is_unicast_local_and_per_machine():
    one = _hostnet.stable_mac("ctr0", "m1", "h1")
    assert one == _hostnet.stable_mac("ctr0", "m1", "h1")
    assert len({one, _hostnet.stable_mac("ctr1", "m1", "h1"), _hostnet.stable_mac("ctr0", "m2", "h1"),
                _hostnet.stable_mac("ctr0", "m1", "h2")}) == 4
    first = int(one[:2], 16)
    assert first & 0x02 and not first & 0x01


def test_bridge_mac_given_or_derived_and_validated():
    [b] = _hostnet.normalize_bridges([dict(name="ctr0", mac="02-AA-00-00-00-01")])
    assert b["mac"] == "02:aa:00:00:00:01"
    assert _hostnet.normalize_bridges([dict(name="ctr0")])[0]["mac"] == _hostnet.stable_mac("ctr0")
    with pytest.raises(ValidationError) as err:
        _hostnet.normalize_bridges([dict(name="ctr0", mac="01:00:5e:00:00:01")])
    assert err.value.field == "bridges[0].mac"


assert LOOP  # the fixture's command, imported with it
