# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Duplicate address detection on a bridge, from the host side.

Before an address is given to a container, the host asks the bridge's
segment (every container port and any uplink) whether someone holds it:

- IPv4: an ARP probe as in RFC 5227 (sender IP 0.0.0.0, so no neighbour
  cache learns anything from it); a holder answers with an ARP reply, and
  any ARP whose sender IP is the address also counts;
- IPv6: a duplicate address detection neighbour solicitation (RFC 4862:
  source ``::``, to the address's solicited-node group); a holder answers
  with a neighbour advertisement for it.

Frames are built and read on an AF_PACKET socket bound to the bridge
(CAP_NET_RAW). Two probes are sent ``PROBE_INTERVAL`` apart and answers are
collected for ``PROBE_WAIT`` seconds: sized for a bridge and a switched LAN,
far below RFC 5227's 1-2 s, which is meant for hosts joining unknown links.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import time

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CtrhostError

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
PROBE_WAIT = 0.3
PROBE_INTERVAL = 0.1
BROADCAST = b"\xff" * 6


def _mac_bytes(mac):
    return bytes(int(x, 16) for x in mac.split(":"))


def _mac_text(raw):
    return ":".join("%02x" % b for b in raw)


def arp_probe(src_mac, address, sender=None):
    """An RFC 5227 probe frame for IPv4 ``address`` from ``src_mac``; with ``sender`` (an
    address of the probing interface) an ordinary ARP request, which proxies answer too."""
    mac = _mac_bytes(src_mac)
    spa = ipaddress.IPv4Address(sender).packed if sender else b"\0" * 4
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, spa, b"\0" * 6,
                      ipaddress.IPv4Address(address).packed)
    return BROADCAST + mac + struct.pack("!H", ETH_P_ARP) + arp


def _checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ns_probe(src_mac, address):
    """A duplicate address detection neighbour solicitation for IPv6 ``address``."""
    target = ipaddress.IPv6Address(address).packed
    group = ipaddress.IPv6Address("ff02::1:ff00:0").packed[:13] + target[13:]
    dst_mac = b"\x33\x33" + group[12:]
    src = b"\0" * 16
    body = struct.pack("!BBHI", 135, 0, 0, 0) + target
    pseudo = src + group + struct.pack("!I3xB", len(body), 58)
    body = body[:2] + struct.pack("!H", _checksum(pseudo + body)) + body[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(body), 58, 255) + src + group
    return dst_mac + _mac_bytes(src_mac) + struct.pack("!H", ETH_P_IPV6) + ip6 + body


def parse_answer(frame):
    """(address, MAC) that ``frame`` says holds an address, or None."""
    if len(frame) < 14:
        return None
    src_mac, ethertype = frame[6:12], struct.unpack("!H", frame[12:14])[0]
    if ethertype == ETH_P_ARP and len(frame) >= 42:
        op, sha, spa = struct.unpack("!H6s4s", frame[20:32])
        if op in (1, 2) and spa != b"\0\0\0\0":
            return str(ipaddress.IPv4Address(spa)), _mac_text(sha)
    if ethertype == ETH_P_IPV6 and len(frame) >= 14 + 40 + 24:
        next_header = frame[20]
        icmp = frame[54:]
        if next_header == 58 and icmp[0] == 136:
            return str(ipaddress.IPv6Address(icmp[8:24])), _mac_text(src_mac)
    return None


def probe(bridge, addresses, ignore_macs=(), wait=PROBE_WAIT, sender=None):
    """Probe ``addresses`` (IPv4/IPv6 host addresses) on ``bridge`` (or any interface);
    return ``{address: MAC}`` for those someone answered for. Answers from
    ``ignore_macs`` (the container's own interfaces) do not count. ``sender``: the IPv4
    source of the ARP requests (see ``arp_probe``)."""
    wanted = {str(ipaddress.ip_address(a)) for a in addresses}
    if not wanted:
        return {}
    ignore = {m.lower() for m in ignore_macs if m}
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    except OSError as exc:
        raise CtrhostError("duplicate address probe on bridge %s: cannot open a packet socket (%s); "
                           "it needs root (CAP_NET_RAW)" % (bridge, exc), bridge=bridge)
    found = {}
    try:
        try:
            sock.bind((bridge, ETH_P_ALL))
        except OSError as exc:
            raise CtrhostError("duplicate address probe on bridge %s: %s" % (bridge, exc), bridge=bridge)
        src_mac = _mac_text(sock.getsockname()[4][:6])
        frames = [arp_probe(src_mac, a, sender) if ipaddress.ip_address(a).version == 4 else ns_probe(src_mac, a)
                  for a in sorted(wanted)]
        start = time.monotonic()
        sent = 0
        while True:
            now = time.monotonic() - start
            if sent < 2 and now >= sent * PROBE_INTERVAL:
                for frame in frames:
                    try:
                        sock.send(frame)
                    except OSError:  # bridge down: nobody can answer on it
                        return found
                sent += 1
                continue
            if now >= wait:
                break
            ready, _w, _x = select.select([sock], [], [], min(wait - now, PROBE_INTERVAL))
            if not ready:
                continue
            frame, addr = sock.recvfrom(2048)
            if addr[2] == PACKET_OUTGOING:
                continue
            answer = parse_answer(frame)
            if answer and answer[0] in wanted and answer[1] not in ignore and answer[1] != src_mac:
                found.setdefault(answer[0], answer[1])
    finally:
        sock.close()
    return found
