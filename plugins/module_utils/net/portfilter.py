# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Anti-spoofing on the containers' bridge ports (nftables, bridge family).

What a container sends enters the bridge through its host-side veth. One
table, ``bridge ctrhost_ports``, holds a base chain on the bridge
``prerouting`` hook (before forwarding, local delivery and FDB learning)
that looks the input port up in the verdict map ``ports`` and jumps to that
port's chain ``port_<host veth>``. A port chain drops:

- a frame whose source MAC is not the interface's ``mac``;
- ARP whose sender MAC is not ``mac`` or whose sender IP is neither a
  declared ``ipv4`` nor 0.0.0.0 (an RFC 5227 probe); all IPv4 from another
  source (all of it when no ``ipv4`` is declared);
- IPv6 from a source other than a declared ``ipv6``, the link-local
  address the kernel derives from ``mac`` (EUI-64) and ``::`` (duplicate
  address detection); neighbour advertisements for any other target; router
  advertisements and redirects;
- every other ether type (VLAN tags, 802.3 frames such as STP BPDUs), so a
  tag cannot carry a packet past the checks above.

Ports of other devices (uplinks, interfaces with ``filtering: false``) are
not in the map and pass untouched. The chains match by port name, so they
are in place before a veth exists and do not depend on what runs inside
the container (privileged or not). "Declared" is any address of the
container's interfaces on the same bridge (see ``wanted``). The first rule's comment carries the
container name and a digest of the chain, which is how a converge finds the
chains of a container and sees whether they are current. Every drop rule
counts what it dropped (``nft list chain bridge ctrhost_ports port_<veth>``).
"""

from __future__ import annotations

import hashlib
import ipaddress

from ansible_collections.ctrhost.fleet.plugins.module_utils.net import nftables as _nftables

FAMILY = "bridge"
TABLE = "ctrhost_ports"
MAP = "ports"
PRIORITY = -300
TAG = "ctrhost"


def chain_name(host_veth):
    return "port_" + host_veth


def link_local(mac):
    """The EUI-64 link-local IPv6 address of ``mac`` (what the kernel makes by default)."""
    octets = [int(x, 16) for x in mac.split(":")]
    octets[0] ^= 0x02
    eui = octets[:3] + [0xFF, 0xFE] + octets[3:]
    return str(ipaddress.IPv6Address(bytes([0xFE, 0x80] + [0] * 6 + eui)))


def _hex6(address):
    return "0x%032x" % int(ipaddress.IPv6Address(address))


def _host(cidr):
    return str(ipaddress.ip_interface(cidr).ip)


def wanted(interfaces):
    """host veth -> rule list for every interface with filtering on (pure).

    A port may send from the addresses of every interface of the container on the
    same bridge (with two interfaces in one subnet, Linux answers and routes for
    either address through either interface; both are the container's own), and
    only from its own MAC."""
    own = {}
    for iface in interfaces or []:
        for key in ("ipv4", "ipv6"):
            if iface.get(key):
                own.setdefault((iface["bridge"], key), []).append(_host(iface[key]))
    out = {}
    for iface in interfaces or []:
        if iface.get("filtering") is False:
            continue
        mac = iface["mac"]
        v4 = sorted(set(own.get((iface["bridge"], "ipv4"), [])))
        v6 = [link_local(mac)] + sorted(set(own.get((iface["bridge"], "ipv6"), [])))
        rules = ["ether saddr != %s drop" % mac,
                 "arp saddr ether != %s drop" % mac,
                 "arp saddr ip != { %s } drop" % ", ".join(["0.0.0.0"] + v4),
                 "ether type ip ip saddr != { %s } drop" % ", ".join(v4) if v4 else "ether type ip drop",
                 "ether type ip6 ip6 saddr != { %s } drop" % ", ".join(["::"] + v6),
                 "icmpv6 type nd-neighbor-advert @th,64,128 != { %s } drop"
                 % ", ".join(_hex6(a) for a in v6),
                 "icmpv6 type { nd-router-advert, nd-redirect } drop",
                 "ether type != { arp, ip, ip6 } drop"]
        out[iface["host_veth"]] = [r.replace(" drop", " counter drop") for r in rules]
    return out


def digest(rules):
    return hashlib.sha256("\n".join(rules).encode()).hexdigest()[:16]


def _comment(name, rules):
    return "%s %s %s" % (TAG, name, digest(rules))


def read():
    """host veth -> (container name, digest) of every port chain in the table."""
    out = {}
    for item in _nftables.listing("table %s %s" % (FAMILY, TABLE)):
        rule = item.get("rule")
        if not rule or not rule.get("chain", "").startswith("port_"):
            continue
        parts = (rule.get("comment") or "").split()
        if len(parts) == 3 and parts[0] == TAG:
            out.setdefault(rule["chain"][len("port_"):], (parts[1], parts[2]))
    return out


def _base():
    return ["add table %s %s" % (FAMILY, TABLE),
            "add map %s %s %s { type ifname : verdict; }" % (FAMILY, TABLE, MAP),
            "add chain %s %s prerouting { type filter hook prerouting priority %d; policy accept; }"
            % (FAMILY, TABLE, PRIORITY),
            "flush chain %s %s prerouting" % (FAMILY, TABLE),
            "add rule %s %s prerouting iifname vmap @%s" % (FAMILY, TABLE, MAP)]


def _install(name, veth, rules):
    chain = chain_name(veth)
    first, rest = rules[0], rules[1:]
    return (["add chain %s %s %s" % (FAMILY, TABLE, chain),
             "flush chain %s %s %s" % (FAMILY, TABLE, chain),
             "add rule %s %s %s %s comment \"%s\"" % (FAMILY, TABLE, chain, first, _comment(name, rules))]
            + ["add rule %s %s %s %s" % (FAMILY, TABLE, chain, r) for r in rest]
            + ["add element %s %s %s { \"%s\" : jump %s }" % (FAMILY, TABLE, MAP, veth, chain)])


def _uninstall(veth):
    chain = chain_name(veth)  # added first so that the deletes cannot fail on absence
    return ["add chain %s %s %s" % (FAMILY, TABLE, chain),
            "add element %s %s %s { \"%s\" : jump %s }" % (FAMILY, TABLE, MAP, veth, chain),
            "delete element %s %s %s { \"%s\" }" % (FAMILY, TABLE, MAP, veth),
            "delete chain %s %s %s" % (FAMILY, TABLE, chain)]


def plan(name, interfaces, current):
    """(install: {veth: rules}, remove: [veth]) to bring ``current`` (``read()``) to
    the chains ``interfaces`` of container ``name`` want (pure)."""
    want = wanted(interfaces)
    install = {veth: rules for veth, rules in want.items()
               if current.get(veth) != (name, digest(rules))}
    remove = sorted(veth for veth, (owner, _d) in current.items() if owner == name and veth not in want)
    return install, remove


def converge(name, interfaces, act, check_mode=False):
    """Make the port chains of container ``name`` exactly those its ``interfaces`` want."""
    current = read() if wanted(interfaces) else read_if_possible()
    install, remove = plan(name, interfaces, current)
    for veth in remove:
        act("remove port filter of %s" % veth)
    for veth in sorted(install):
        act("filter port %s (source MAC and addresses)" % veth)
    if check_mode or not (install or remove):
        return
    script = _base()
    for veth in remove:
        script += _uninstall(veth)
    for veth, rules in sorted(install.items()):
        script += _install(name, veth, rules)
    _nftables.run("\n".join(script) + "\n", "port filters of container %s" % name)


def repair(name, interfaces, check_mode=False):
    """``converge`` for an unchanged network: the chains put back where they are missing
    or stale (a container from before filtering, a flushed table); True when needed."""
    acts = []
    converge(name, interfaces, acts.append, check_mode)
    return bool(acts)


def read_if_possible():
    """``read()``, or {} where nftables cannot be used (then nothing can be installed)."""
    try:
        return read()
    except Exception:  # no binding, no libnftables, no nf_tables: there is nothing to remove
        return {}


def remove(name, act=None):
    """Remove every port chain of container ``name``; return the veths whose chain went."""
    current = read_if_possible()
    gone = sorted(veth for veth, (owner, _d) in current.items() if owner == name)
    if gone:
        script = _base()
        for veth in gone:
            script += _uninstall(veth)
            if act:
                act("remove port filter of %s" % veth)
        _nftables.run("\n".join(script) + "\n", "remove the port filters of container %s" % name)
    return gone
