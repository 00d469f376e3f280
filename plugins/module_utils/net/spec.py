# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The container ``network`` option: validation, defaults, conflicts, diff.

Pure functions except ``check_conflicts``, which reads the host's bridges
through netlink unless it is given them. A normalised interface is a dict::

    {ifname, bridge, ipv4, gateway, ipv6, gateway6, mac, mtu, rate, filtering, host_veth}

``ipv4``/``ipv6`` are canonical CIDR strings (host address + prefix) or None,
``rate`` is an int in bits per second or None, ``mtu`` an int or None,
``filtering`` a bool (default true: the host-side port drops what the
container sends from another MAC or address, see ``_portfilter``),
``host_veth`` the host-side veth name derived from the container name and the
interface's index.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError

IFNAMSIZ = 15  # usable characters of a Linux interface name
MAX_INTERFACES = 64
KEYS = ("ifname", "bridge", "ipv4", "gateway", "ipv6", "gateway6", "mac", "mtu", "rate", "filtering")
FIELDS = KEYS + ("host_veth",)
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


def derive_mac(container_name, ifname):
    """Stable locally administered unicast MAC from container name + ifname."""
    digest = hashlib.sha256(("%s/%s" % (container_name, ifname)).encode()).digest()
    octets = bytearray(digest[:6])
    octets[0] = (octets[0] & 0xFC) | 0x02  # unicast, locally administered
    return ":".join("%02x" % b for b in octets)


def host_veth_name(container_name, index):
    """Host-side veth name: ``v`` + name prefix + 4 hex of a hash + index.

    Always within IFNAMSIZ; the hash of the full name keeps two containers
    whose names share a prefix apart (``check_conflicts`` catches the rest).
    """
    base = re.sub(r"[^A-Za-z0-9]", "", container_name)
    digest = hashlib.sha256(container_name.encode()).hexdigest()[:4]
    suffix = "%s%d" % (digest, index)
    room = IFNAMSIZ - 1 - len(suffix)
    return "v" + base[:room] + suffix


def _field(index, key):
    return "network[%d].%s" % (index, key)


def _cidr(value, index, key, version):
    field = _field(index, key)
    if not isinstance(value, str) or "/" not in value:
        raise ValidationError(field, "expected an IPv%d address in CIDR form (e.g. %s), got %r"
                              % (version, "10.0.0.2/24" if version == 4 else "fd00::2/64", value))
    try:
        iface = ipaddress.ip_interface(value.strip())
    except ValueError:
        raise ValidationError(field, "%r is not a valid IPv%d CIDR" % (value, version))
    if iface.version != version:
        raise ValidationError(field, "%r is not an IPv%d address" % (value, version))
    net = iface.network
    if version == 4 and net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address):
        raise ValidationError(field, "%s is the network or broadcast address of %s" % (iface.ip, net))
    if iface.ip.is_multicast or iface.ip.is_unspecified or iface.ip.is_loopback:
        raise ValidationError(field, "%s is not a usable host address" % iface.ip)
    return str(iface)


def _gateway(value, cidr, index, key, version):
    field = _field(index, key)
    if cidr is None:
        raise ValidationError(field, "a gateway needs an ipv%d address on the interface"
                              % (4 if version == 4 else 6))
    try:
        gw = ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise ValidationError(field, "%r is not a valid IPv%d address" % (value, version))
    if gw.version != version:
        raise ValidationError(field, "%r is not an IPv%d address" % (value, version))
    iface = ipaddress.ip_interface(cidr)
    if gw not in iface.network:
        raise ValidationError(field, "gateway %s is outside the subnet %s" % (gw, iface.network))
    if gw == iface.ip:
        raise ValidationError(field, "gateway %s is the interface's own address" % gw)
    return str(gw)


def _rate(value, index):
    field = _field(index, "rate")
    if isinstance(value, bool):
        raise ValidationError(field, "expected a rate such as '10mbit', got %r" % (value,))
    from ansible_collections.ctrhost.fleet.plugins.module_utils.core import units as _units

    try:
        bps = _units.parse_rate(value, field=field)
    except (TypeError, ValueError) as exc:
        raise ValidationError(field, "expected a rate such as '10mbit' or '1gbit', got %r (%s)"
                              % (value, exc))
    if bps is None or int(bps) <= 0:
        raise ValidationError(field, "expected a positive rate such as '10mbit', got %r" % (value,))
    return int(bps)


def _int(value, index, key, low, high):
    field = _field(index, key)
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValidationError(field, "expected an integer, got %r" % (value,))
    if isinstance(value, bool) or not low <= number <= high:
        raise ValidationError(field, "expected an integer between %d and %d, got %r" % (low, high, value))
    return number


def _one(raw, index, container_name):
    if not isinstance(raw, dict):
        raise ValidationError("network[%d]" % index, "expected a dict with bridge, ipv4, ... got %r" % (raw,))
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise ValidationError("network[%d]" % index, "unknown key(s) %s; expected some of %s"
                              % (", ".join(unknown), ", ".join(KEYS)))
    out = {}
    ifname = raw.get("ifname") or "eth%d" % index
    if not isinstance(ifname, str) or not _IFNAME_RE.match(ifname) or ifname in (".", ".."):
        raise ValidationError(_field(index, "ifname"), "expected an interface name of 1-%d characters "
                              "[A-Za-z0-9_.-], got %r" % (IFNAMSIZ, ifname))
    if ifname == "lo":
        raise ValidationError(_field(index, "ifname"), "'lo' is reserved")
    out["ifname"] = ifname
    bridge = raw.get("bridge")
    if not bridge:
        raise ValidationError(_field(index, "bridge"), "required: the host bridge to attach to")
    if not isinstance(bridge, str) or not _IFNAME_RE.match(bridge):
        raise ValidationError(_field(index, "bridge"), "expected a bridge name of 1-%d characters, got %r"
                              % (IFNAMSIZ, bridge))
    out["bridge"] = bridge
    out["ipv4"] = _cidr(raw["ipv4"], index, "ipv4", 4) if raw.get("ipv4") else None
    out["gateway"] = (_gateway(raw["gateway"], out["ipv4"], index, "gateway", 4)
                      if raw.get("gateway") else None)
    out["ipv6"] = _cidr(raw["ipv6"], index, "ipv6", 6) if raw.get("ipv6") else None
    if out["ipv6"] and ipaddress.ip_interface(out["ipv6"]).ip.is_link_local:
        raise ValidationError(_field(index, "ipv6"), "a link-local address is made by the kernel; "
                              "give a global or unique-local one")
    out["gateway6"] = (_gateway(raw["gateway6"], out["ipv6"], index, "gateway6", 6)
                       if raw.get("gateway6") else None)
    mac = raw.get("mac")
    if mac:
        mac = str(mac).strip().lower().replace("-", ":")
        if not _MAC_RE.match(mac):
            raise ValidationError(_field(index, "mac"), "expected a MAC like 02:00:00:00:00:01, got %r"
                                  % (raw.get("mac"),))
        if int(mac[:2], 16) & 1:
            raise ValidationError(_field(index, "mac"), "%s is a multicast address" % mac)
        if mac == "00:00:00:00:00:00":
            raise ValidationError(_field(index, "mac"), "the all-zero MAC is not usable")
    out["mac"] = mac or derive_mac(container_name, ifname)
    out["mtu"] = _int(raw["mtu"], index, "mtu", 68, 65535) if raw.get("mtu") not in (None, "") else None
    out["rate"] = _rate(raw["rate"], index) if raw.get("rate") not in (None, "", 0) else None
    filtering = raw.get("filtering", True)
    if filtering is None:
        filtering = True
    if not isinstance(filtering, bool):
        raise ValidationError(_field(index, "filtering"), "expected true or false, got %r" % (filtering,))
    out["filtering"] = filtering
    out["host_veth"] = host_veth_name(container_name, index)
    return out


def normalize(interfaces, container_name):
    """Validate the ``network`` list and fill defaults; raise ValidationError."""
    if interfaces is None:
        return []
    if not isinstance(interfaces, list):
        raise ValidationError("network", "expected a list of interfaces, got %r" % (interfaces,))
    if len(interfaces) > MAX_INTERFACES:
        raise ValidationError("network", "at most %d interfaces, got %d" % (MAX_INTERFACES, len(interfaces)))
    if not container_name or not isinstance(container_name, str):
        raise ValidationError("name", "a container name is needed to derive MAC and veth names")
    result = [_one(raw, i, container_name) for i, raw in enumerate(interfaces)]
    seen = {}
    for i, iface in enumerate(result):
        for key in ("gateway", "gateway6"):
            if iface[key] and ("gw", key) in seen:
                raise ValidationError(_field(i, key), "only one interface can carry the default route; "
                                      "network[%d] already sets %s" % (seen[("gw", key)], key))
            if iface[key]:
                seen[("gw", key)] = i
        for key in ("ifname", "mac", "ipv4", "ipv6"):
            value = iface[key]
            if value is None:
                continue
            if key in ("ipv4", "ipv6"):
                value = str(ipaddress.ip_interface(value).ip)
            other = seen.get((key, value))
            if other is not None:
                raise ValidationError(_field(i, key), "%s is already used by network[%d]" % (value, other))
            seen[(key, value)] = i
    return result


def _other_interfaces(other_containers_specs):
    """Yield (container name, interface) from the accepted shapes (see check_conflicts)."""
    if not other_containers_specs:
        return
    if isinstance(other_containers_specs, dict):
        items = other_containers_specs.items()
    else:
        items = ((spec.get("name"), spec) for spec in other_containers_specs)
    for name, spec in items:
        ifaces = spec.get("network") if isinstance(spec, dict) else spec
        for iface in ifaces or []:
            yield name, iface


def check_conflicts(interfaces, other_containers_specs, bridges=None):
    """Raise ValidationError when ``interfaces`` clash with this host.

    ``interfaces``: normalised list. ``other_containers_specs``: the other
    containers of this host, as a mapping name -> spec (a dict with a
    ``network`` list, as in spec.json) or name -> interface list, or a list
    of spec dicts that carry ``name``. ``bridges``: names of existing bridges
    (read through netlink when None).

    Errors: a bridge that does not exist; an IPv4/IPv6 address used by
    another container on the same bridge, or by the bridge itself; a host
    veth name another container already derives.
    """
    if bridges is None:
        from ansible_collections.ctrhost.fleet.plugins.module_utils.net.bridges import bridge_addresses

        bridges = bridge_addresses()
    for i, iface in enumerate(interfaces):
        if iface["bridge"] not in bridges:
            raise ValidationError(_field(i, "bridge"), "bridge %r does not exist on this host (create it "
                                  "with ctrhost.fleet.host_network)" % iface["bridge"])
        own = bridges[iface["bridge"]] if isinstance(bridges, dict) else ()
        for key in ("ipv4", "ipv6"):
            if iface[key] and ipaddress.ip_interface(iface[key]).ip in {
                    ipaddress.ip_interface(a).ip for a in own or ()}:
                raise ValidationError(_field(i, key), "%s is the address of bridge %s itself"
                                      % (iface[key].split("/")[0], iface["bridge"]))
    for name, other in _other_interfaces(other_containers_specs):
        for i, iface in enumerate(interfaces):
            if other.get("host_veth") and other.get("host_veth") == iface["host_veth"]:
                raise ValidationError(_field(i, "host_veth"), "derived veth name %s is already used by "
                                      "container %r; rename the container" % (iface["host_veth"], name))
            if other.get("bridge") != iface["bridge"]:
                continue
            for key in ("ipv4", "ipv6", "mac"):
                mine, theirs = iface.get(key), other.get(key)
                if not mine or not theirs:
                    continue
                if key != "mac":
                    mine, theirs = (ipaddress.ip_interface(mine).ip, ipaddress.ip_interface(theirs).ip)
                if mine == theirs:
                    raise ValidationError(_field(i, key), "%s is already used by container %r on bridge %s"
                                          % (mine, name, iface["bridge"]))


def diff(old, new):
    """Differences between two normalised lists, keyed by ifname.

    Returns ``{}`` when nothing differs, else a dict with some of
    ``add`` (interfaces), ``remove`` (interfaces) and ``change`` (list of
    ``{ifname, fields, old, new}``).
    """
    old_by = {i["ifname"]: i for i in old or []}
    new_by = {i["ifname"]: i for i in new or []}
    out = {}
    add = [i for i in new or [] if i["ifname"] not in old_by]
    remove = [i for i in old or [] if i["ifname"] not in new_by]
    change = []
    for iface in new or []:
        before = old_by.get(iface["ifname"])
        if before is None:
            continue
        fields = [k for k in FIELDS if before.get(k) != iface.get(k)]
        if fields:
            change.append(dict(ifname=iface["ifname"], fields=fields, old=before, new=iface))
    if add:
        out["add"] = add
    if remove:
        out["remove"] = remove
    if change:
        out["change"] = change
    return out
