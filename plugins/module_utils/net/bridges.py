# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host side of container networking: bridges, forwarding, NAT, static routes.

Bridges, their addresses and routes go through pyroute2 (netlink). Forwarding
is the ``net.ipv4.ip_forward`` / ``net.ipv6.conf.all.forwarding`` sysctls of
the current network namespace. NAT is nftables: one dedicated table
``inet ctrhost`` that this library owns as a whole; its rules are derived from
every bridge with ``nat: true``, compared with what ``nft -j`` reports, and the
table is replaced in one atomic ``nft -f`` transaction when they differ.

Each managed bridge has a pinned MAC (``mac``, default ``stable_mac``): a
bridge left alone takes the lowest MAC of its ports, so every port that
joins or leaves (a container created, removed, migrated) could change it,
and the containers' ARP/neighbour entries for their gateway would point at
a MAC that is gone until they expire. An address set explicitly is one the
kernel never recalculates.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re

from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import links as _netlink
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import (
    ConflictError,
    ValidationError,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils.net.ifaces import kind as _kind

NFT_TABLE = "ctrhost"
NFT_FAMILY = "inet"
SYSCTL = {"ipv4": "/proc/sys/net/ipv4/ip_forward", "ipv6": "/proc/sys/net/ipv6/conf/all/forwarding"}
IFA_F_NODAD = 0x02
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
MACHINE_ID = "/etc/machine-id"


def stable_mac(bridge, machine_id=None, hostname=None):
    """Locally administered unicast MAC of ``bridge`` on this machine: a digest of the
    machine id, the host name and the bridge name, so the same on every run and boot,
    and different on two hosts whose bridges share a segment (also clones that kept
    the machine id)."""
    if machine_id is None:
        try:
            with open(MACHINE_ID) as handle:
                machine_id = handle.read().strip()
        except OSError:
            machine_id = ""
    hostname = os.uname().nodename if hostname is None else hostname
    digest = hashlib.sha256(("ctrhost-bridge/%s/%s/%s" % (machine_id, hostname, bridge)).encode()).digest()
    octets = bytearray(digest[:6])
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join("%02x" % b for b in octets)


def _link_addrs(ipr, index):
    out = {"ipv4": [], "ipv6": []}
    for msg in ipr.get_addr(index=index):
        iface = ipaddress.ip_interface("%s/%d" % (msg.get_attr("IFA_ADDRESS"), msg["prefixlen"]))
        if iface.version == 6 and iface.ip.is_link_local:
            continue
        out["ipv%d" % iface.version].append(str(iface))
    return {k: sorted(v) for k, v in out.items()}


def read_bridges(ipr=None):
    """name -> {name, ipv4, ipv6, mtu, stp, ports} for every bridge of this netns."""
    own = ipr is None
    ipr = ipr or _netlink.ipr()
    try:
        links = list(ipr.get_links())
        out = {}
        for link in links:
            if _kind(link) != "bridge":
                continue
            data = link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
            stp = data.get_attr("IFLA_BR_STP_STATE") if data else 0
            out[link.get_attr("IFLA_IFNAME")] = dict(
                name=link.get_attr("IFLA_IFNAME"), mtu=link.get_attr("IFLA_MTU"), stp=bool(stp),
                index=link["index"], up=bool(link["flags"] & 1), mac=link.get_attr("IFLA_ADDRESS"),
                ports=sorted(p.get_attr("IFLA_IFNAME") for p in links
                             if p.get_attr("IFLA_MASTER") == link["index"]),
                **_link_addrs(ipr, link["index"]))
        return out
    finally:
        if own:
            ipr.close()


def bridge_addresses():
    """name -> list of CIDRs (IPv4 and IPv6) for the bridges of this host."""
    return {name: b["ipv4"] + b["ipv6"] for name, b in read_bridges().items()}


# -- validation -------------------------------------------------------------

def _cidrs(values, field, version):
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    out = []
    for i, value in enumerate(values):
        try:
            iface = ipaddress.ip_interface(str(value).strip())
        except ValueError:
            raise ValidationError("%s[%d]" % (field, i), "expected an IPv%d CIDR, got %r" % (version, value))
        if iface.version != version or "/" not in str(value):
            raise ValidationError("%s[%d]" % (field, i), "expected an IPv%d CIDR such as %s, got %r"
                                  % (version, "10.10.0.1/24" if version == 4 else "fd10::1/64", value))
        out.append(str(iface))
    return sorted(set(out))


def normalize_bridges(bridges):
    out, seen = [], set()
    for i, raw in enumerate(bridges or []):
        field = "bridges[%d]" % i
        name = raw.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValidationError(field + ".name", "expected an interface name of 1-15 characters "
                                  "[A-Za-z0-9_.-], got %r" % (name,))
        if name in seen:
            raise ValidationError(field + ".name", "bridge %s is listed twice" % name)
        seen.add(name)
        state = raw.get("state") or "present"
        if state not in ("present", "absent"):
            raise ValidationError(field + ".state", "expected present or absent, got %r" % state)
        mtu = raw.get("mtu")
        if mtu is not None and not (isinstance(mtu, int) and 68 <= mtu <= 65535):
            raise ValidationError(field + ".mtu", "expected an integer between 68 and 65535, got %r" % (mtu,))
        mac = raw.get("mac")
        if mac is not None:
            mac = str(mac).strip().lower().replace("-", ":")
            if not _MAC_RE.match(mac) or int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
                raise ValidationError(field + ".mac", "expected a unicast MAC like 02:00:00:00:00:01, got %r"
                                      % (raw.get("mac"),))
        b = dict(name=name, state=state, mtu=mtu, stp=bool(raw.get("stp", False)),
                 mac=mac or stable_mac(name),
                 nat=bool(raw.get("nat", False)),
                 ipv4=_cidrs(raw.get("ipv4"), field + ".ipv4", 4),
                 ipv6=_cidrs(raw.get("ipv6"), field + ".ipv6", 6))
        if b["nat"] and state == "present" and not (b["ipv4"] or b["ipv6"]):
            raise ValidationError(field + ".nat", "NAT needs the bridge's subnet: give ipv4 and/or ipv6")
        out.append(b)
    return out


def normalize_routes(routes):
    out = []
    for i, raw in enumerate(routes or []):
        field = "routes[%d]" % i
        try:
            dest = ipaddress.ip_network(str(raw.get("dest")).strip(), strict=True)
        except ValueError as exc:
            raise ValidationError(field + ".dest", "expected a network in CIDR form (e.g. 10.20.2.0/24): %s" % exc)
        try:
            via = ipaddress.ip_address(str(raw.get("via")).strip())
        except ValueError:
            raise ValidationError(field + ".via", "expected the address of the next hop, got %r" % (raw.get("via"),))
        if via.version != dest.version:
            raise ValidationError(field + ".via", "%s and %s are not of the same IP version" % (via, dest))
        state = raw.get("state") or "present"
        if state not in ("present", "absent"):
            raise ValidationError(field + ".state", "expected present or absent, got %r" % state)
        out.append(dict(dest=str(dest), via=str(via), state=state))
    return out


# -- NAT (nftables) -----------------------------------------------------------

def nat_subnets(bridges):
    """Sorted ``"ip 10.10.0.0/24"`` / ``"ip6 fd10::/64"`` for every NAT bridge."""
    out = set()
    for b in bridges:
        if b["state"] == "present" and b["nat"]:
            for key, proto in (("ipv4", "ip"), ("ipv6", "ip6")):
                for cidr in b[key] or []:
                    out.add("%s %s" % (proto, ipaddress.ip_interface(cidr).network))
    return sorted(out)


def nft_script(subnets):
    rules = "".join("    %s saddr %s %s daddr != %s masquerade\n" % (s.split()[0], s.split()[1], s.split()[0],
                                                                     s.split()[1]) for s in subnets)
    return ("table %s %s {}\ndelete table %s %s\n" % (NFT_FAMILY, NFT_TABLE, NFT_FAMILY, NFT_TABLE)
            + ("table %s %s {\n  chain postrouting {\n    type nat hook postrouting priority 100; policy accept;\n"
               "%s  }\n}\n" % (NFT_FAMILY, NFT_TABLE, rules) if subnets else ""))


def _prefix(expr):
    right = expr.get("right")
    if isinstance(right, dict) and "prefix" in right:
        return "%s/%s" % (right["prefix"]["addr"], right["prefix"]["len"])
    return str(right)


def read_nat(recorder=None):
    """Subnets masqueraded by table inet ctrhost (None when the table is absent)."""
    if not _cli.which("nft"):
        return None
    res = _cli.run(["nft", "-j", "list", "table", NFT_FAMILY, NFT_TABLE], check=False)
    if res.rc != 0:
        return None
    out, hook_ok = [], False
    for item in json.loads(res.stdout).get("nftables", []):
        chain = item.get("chain")
        if chain and chain.get("hook") == "postrouting" and chain.get("type") == "nat":
            hook_ok = True
        rule = item.get("rule")
        if not rule:
            continue
        saddr = daddr = None
        masq = False
        for expr in rule.get("expr", []):
            match = expr.get("match")
            if match and "payload" in match.get("left", {}):
                payload = match["left"]["payload"]
                key = (payload.get("protocol"), payload.get("field"), match.get("op"))
                if key[1] == "saddr" and key[2] == "==":
                    saddr = (key[0], _prefix(match))
                elif key[1] == "daddr" and key[2] == "!=":
                    daddr = (key[0], _prefix(match))
            if "masquerade" in expr:
                masq = True
        if masq and saddr and saddr == daddr:
            out.append("%s %s" % saddr)
        else:
            out.append("unknown rule %d" % rule.get("handle", 0))
    return sorted(out) if hook_ok else ["no nat chain"] + sorted(out)


def apply_nat(subnets, current, recorder=None, check_mode=False):
    """Make table inet ctrhost masquerade exactly ``subnets``; return changed."""
    if (current or []) == subnets and (current is not None or not subnets):
        return False
    if check_mode:
        if recorder is not None:
            recorder.add(["nft", "-f", "-"])
        return True
    _cli.require("nft", "NAT masquerade of container subnets")
    _cli.run(["nft", "-f", "-"], input=nft_script(subnets), recorder=recorder, msg="nft (table inet ctrhost)")
    return True


# -- forwarding, routes ---------------------------------------------------------

def read_forwarding():
    out = {}
    for key, path in SYSCTL.items():
        try:
            with open(path) as handle:
                out[key] = handle.read().strip() == "1"
        except OSError:
            out[key] = None
    return out


def _routes(ipr):
    out = {}
    for msg in ipr.get_routes(table=254):
        if msg["dst_len"] == 0 or not msg.get_attr("RTA_GATEWAY"):
            continue
        dest = "%s/%d" % (msg.get_attr("RTA_DST"), msg["dst_len"])
        out[str(ipaddress.ip_network(dest, strict=False))] = msg.get_attr("RTA_GATEWAY")
    return out


# -- the whole host ------------------------------------------------------------

def _bridge_view(b):
    if b is None:
        return None
    return {k: b[k] for k in ("mtu", "stp", "mac", "ipv4", "ipv6")}


def _want_view(want, have):
    view = _bridge_view(have) or dict(mtu=None, stp=False, mac=None, ipv4=[], ipv6=[])
    view["stp"] = want["stp"]
    view["mac"] = want["mac"]
    for key in ("mtu", "ipv4", "ipv6"):
        if want[key] is not None:
            view[key] = want[key]
    return view


def _apply_bridge(ipr, want, have, check_mode):
    name = want["name"]
    if want["state"] == "absent":
        if have is None:
            return False
        if not check_mode:
            ipr.link("del", index=have["index"])
        return True
    after = _want_view(want, have)
    if have is not None and after == _bridge_view(have) and have["up"]:
        return False
    if check_mode:
        return True
    if have is None:
        ipr.link("add", ifname=name, kind="bridge", br_stp_state=int(want["stp"]), address=want["mac"])
        have = read_bridges(ipr)[name]
    index = have["index"]
    args = dict(index=index, kind="bridge", br_stp_state=int(want["stp"]), state="up")
    if have["mac"] != want["mac"]:
        args["address"] = want["mac"]
    if want["mtu"]:
        args["mtu"] = want["mtu"]
    ipr.link("set", **args)
    for key in ("ipv4", "ipv6"):
        if want[key] is None:
            continue
        for cidr in sorted(set(have[key]) - set(want[key])):
            ip = ipaddress.ip_interface(cidr)
            ipr.addr("del", index=index, address=str(ip.ip), prefixlen=ip.network.prefixlen)
        for cidr in sorted(set(want[key]) - set(have[key])):
            ip = ipaddress.ip_interface(cidr)
            extra = dict(flags=IFA_F_NODAD) if ip.version == 6 else {}
            ipr.addr("add", index=index, address=str(ip.ip), prefixlen=ip.network.prefixlen, **extra)
    return True


def apply(bridges=None, forwarding=None, routes=None, force=False, check_mode=False):
    """Converge bridges, forwarding, NAT and static routes; return the module result.

    ``bridges``/``routes`` as the module options; ``forwarding`` a dict with
    ``ipv4``/``ipv6`` booleans (None: leave as is). The NAT table is managed
    as a whole from the bridges given here.
    """
    want_bridges = normalize_bridges(bridges)
    want_routes = normalize_routes(routes)
    forwarding = {k: v for k, v in (forwarding or {}).items() if v is not None}
    recorder = _cli.Recorder()
    ipr = _netlink.ipr()
    try:
        have_bridges = read_bridges(ipr)
        for i, b in enumerate(want_bridges):
            have = have_bridges.get(b["name"])
            if b["state"] == "absent" and have and have["ports"] and not force:
                raise ConflictError("bridges[%d]: bridge %s still has ports (%s); detach the containers first "
                                    "or set force" % (i, b["name"], ", ".join(have["ports"])), bridge=b["name"])
        if any(b["nat"] for b in want_bridges):
            _cli.require("nft", "NAT masquerade of container subnets")
        have_nat = read_nat()
        have_fwd = read_forwarding()
        have_routes = _routes(ipr)
        before = dict(bridges={}, forwarding={k: have_fwd[k] for k in forwarding}, nat=have_nat or [], routes={})
        after = dict(bridges={}, forwarding=dict(forwarding), nat=nat_subnets(want_bridges), routes={})
        changed = False
        for b in want_bridges:
            have = have_bridges.get(b["name"])
            before["bridges"][b["name"]] = _bridge_view(have)
            after["bridges"][b["name"]] = None if b["state"] == "absent" else _want_view(b, have)
            changed |= _apply_bridge(ipr, b, have, check_mode)
        for key, value in sorted(forwarding.items()):
            if have_fwd[key] != bool(value):
                changed = True
                if not check_mode:
                    with open(SYSCTL[key], "w") as handle:
                        handle.write("1" if value else "0")
        changed |= apply_nat(after["nat"], have_nat, recorder, check_mode)
        for r in want_routes:
            current = have_routes.get(r["dest"])
            before["routes"][r["dest"]] = current
            after["routes"][r["dest"]] = r["via"] if r["state"] == "present" else None
            if r["state"] == "present" and current != r["via"]:
                changed = True
                if not check_mode:
                    ipr.route("replace", dst=r["dest"], gateway=r["via"])
            elif r["state"] == "absent" and current:
                changed = True
                if not check_mode:
                    ipr.route("del", dst=r["dest"], gateway=current)
        state = {n: _bridge_view(b) for n, b in read_bridges(ipr).items() if n in after["bridges"]}
    finally:
        ipr.close()
    return dict(changed=changed, diff=dict(before=before, after=after), commands=recorder.commands,
                bridges=state if not check_mode else after["bridges"], nat=after["nat"],
                forwarding=read_forwarding(), routes=after["routes"])
