# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""An interface looked up by name, and the kind of a link (pyroute2 messages): the two
questions every part of the host's network asks first."""

from __future__ import annotations


def lookup(ipr, ifname):
    """Index of interface ``ifname`` in ``ipr``'s namespace, None when there is none."""
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def kind(link):
    """``IFLA_INFO_KIND`` of a link message (``bridge``, ``veth``, ``vxlan``...), None for a plain device."""
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None
