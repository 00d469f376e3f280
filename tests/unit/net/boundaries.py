# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The netlink boundary faked for the net package's unit tests: a pyroute2 message."""


class Msg(dict):
    """A pyroute2 netlink message: its fields as a dict, its attributes by ``get_attr``."""

    def __init__(self, attrs, **fields):
        super().__init__(fields)
        self.attrs = attrs

    def get_attr(self, name):
        return self.attrs.get(name)
