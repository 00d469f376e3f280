# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``rate`` of a container interface, through pyroute2 (an ``IPRoute`` of the host).

Towards the container, an HTB qdisc (``1:``) on the host veth with one class ``1:10`` for
the container and a match-all u32 filter as primary classifier (``default 10`` as
fallback). From the container, an ingress qdisc on the host veth redirects (mirred) every
packet to an IFB device ``i...`` that carries the same HTB shape. (IFB rather than
ingress policing: it shapes instead of dropping, so TCP holds the rate closely, and it
needs no police action in the kernel.) A changed rate is changed in place (queues kept).
"""

from __future__ import annotations

import contextlib

from ansible_collections.ctrhost.fleet.plugins.module_utils.net.ifaces import lookup

HTB_HANDLE = 0x10000  # 1:
HTB_CLASS = 0x10010  # 1:10, the container's class
INGRESS_HANDLE = 0xFFFF0000  # ffff:
ETH_P_ALL = 0x0003


def ifb_name(host_veth):
    """IFB device shaping the container's egress: ``i`` + the veth name's rest."""
    return "i" + host_veth[1:]


def htb_rate(ipr, index):
    """Rate in bit/s of the container class 1:10 on ``index``, None if absent."""
    for msg in ipr.get_classes(index):
        if msg["handle"] != HTB_CLASS or msg.get_attr("TCA_KIND") != "htb":
            continue
        opts = msg.get_attr("TCA_OPTIONS")
        rate64 = opts.get_attr("TCA_HTB_RATE64")
        return int(rate64 or opts.get_attr("TCA_HTB_PARMS")["rate"]) * 8
    return None


def _has_ingress_redirect(ipr, index):
    return any(m.get_attr("TCA_KIND") == "u32" and m.get_attr("TCA_OPTIONS") is not None
               for m in ipr.get_filters(index, parent=INGRESS_HANDLE))


def _shape(ipr, index, rate):
    quantum = max(1600, min(rate // 8 // 10, 200000))
    ipr.tc("add", "htb", index, HTB_HANDLE, default=0x10)
    ipr.tc("add-class", "htb", index, HTB_CLASS, parent=HTB_HANDLE, rate="%dbit" % rate,
           ceil="%dbit" % rate, quantum=quantum)
    ipr.tc("add-filter", "u32", index, parent=HTB_HANDLE, prio=1, protocol=ETH_P_ALL,
           target=HTB_CLASS, keys=["0x0/0x0+0"])


def unshape(ipr, veth_index, ifb):
    for kind, handle in (("htb", HTB_HANDLE), ("ingress", INGRESS_HANDLE)):
        with contextlib.suppress(Exception):  # absent already
            ipr.tc("del", kind, veth_index, handle)
    ifb_index = lookup(ipr, ifb)
    if ifb_index:
        ipr.link("del", index=ifb_index)


def _rate_state(ipr, veth_index, ifb):
    ifb_index = lookup(ipr, ifb)
    return dict(egress=htb_rate(ipr, veth_index),
                ingress=htb_rate(ipr, ifb_index) if ifb_index else None,
                redirect=_has_ingress_redirect(ipr, veth_index))


def converge_rate(ipr, veth_index, iface, act, check_mode):
    ifb = ifb_name(iface["host_veth"])
    want = iface["rate"]
    have = _rate_state(ipr, veth_index, ifb) if veth_index else dict(egress=None, ingress=None, redirect=False)
    if want is None:
        if have["egress"] or have["ingress"] or have["redirect"] or (veth_index and lookup(ipr, ifb)):
            act("remove rate limit of %s" % iface["host_veth"])
            if not check_mode:
                unshape(ipr, veth_index, ifb)
        return
    if have["egress"] == want and have["ingress"] == want and have["redirect"]:
        return
    act("set rate %dbit on %s and %s" % (want, iface["host_veth"], ifb))
    if check_mode:
        return
    if have["egress"] and have["ingress"] and have["redirect"]:
        for index in (veth_index, lookup(ipr, ifb)):  # live change, queues kept
            ipr.tc("change-class", "htb", index, HTB_CLASS, parent=HTB_HANDLE, rate="%dbit" % want,
                   ceil="%dbit" % want, quantum=max(1600, min(want // 8 // 10, 200000)))
        return
    unshape(ipr, veth_index, ifb)
    ipr.link("add", ifname=ifb, kind="ifb")
    ifb_index = lookup(ipr, ifb)
    ipr.link("set", index=ifb_index, state="up")
    _shape(ipr, veth_index, want)
    _shape(ipr, ifb_index, want)
    ipr.tc("add", "ingress", veth_index, INGRESS_HANDLE)
    ipr.tc("add-filter", "u32", veth_index, parent=INGRESS_HANDLE, prio=1, protocol=ETH_P_ALL,
           target=HTB_CLASS, keys=["0x0/0x0+0"],
           action=dict(kind="mirred", direction="egress", action="redirect", ifindex=ifb_index))
