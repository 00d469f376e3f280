# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The on-host layout, in one place."""

from __future__ import annotations

import os

DEFAULT_ROOT = "/var/lib/ctrhost"
RUN_DIR = "/run/ctrhost"
NETNS_DIR = "/run/netns"
NETNS_PREFIX = "ctrhost-"
# The user and time namespaces of an unprivileged container (they own its netns).
USERNS_DIR = RUN_DIR + "/userns"
TIMENS_DIR = RUN_DIR + "/timens"
NETHOOK_DIR = RUN_DIR + "/nethook"


class Layout:
    """Paths below the configurable root (default /var/lib/ctrhost)."""

    def __init__(self, root=None, run_dir=None):
        self.root = os.path.abspath(root or DEFAULT_ROOT)
        self.run_dir = run_dir or RUN_DIR

    # templates
    @property
    def templates_dir(self):
        return os.path.join(self.root, "templates")

    def template_dir(self, name):
        return os.path.join(self.templates_dir, name)

    def template_rootfs(self, name):
        return os.path.join(self.template_dir(name), "rootfs")

    def template_meta(self, name):
        return os.path.join(self.template_dir(name), "template.json")

    # containers
    @property
    def containers_dir(self):
        return os.path.join(self.root, "containers")

    def container_dir(self, name):
        return os.path.join(self.containers_dir, name)

    def container_file(self, name, leaf):
        return os.path.join(self.container_dir(name), leaf)

    # checkpoints
    @property
    def checkpoints_dir(self):
        return os.path.join(self.root, "checkpoints")

    def checkpoint_dir(self, name, cid=None):
        base = os.path.join(self.checkpoints_dir, name)
        return os.path.join(base, cid) if cid else base

    # host state
    @property
    def host_state_file(self):
        return os.path.join(self.root, "host.json")

    # runtime state
    @property
    def runtime_root(self):
        return os.path.join(self.run_dir, "runtime")

    @property
    def locks_dir(self):
        return os.path.join(self.run_dir, "locks")

    @staticmethod
    def netns_name(name):
        return NETNS_PREFIX + name

    @classmethod
    def netns_path(cls, name):
        return os.path.join(NETNS_DIR, cls.netns_name(name))

    @staticmethod
    def userns_path(name):
        return os.path.join(USERNS_DIR, name)

    @staticmethod
    def timens_path(name):
        return os.path.join(TIMENS_DIR, name)

    @staticmethod
    def nethook_dir(name):
        return os.path.join(NETHOOK_DIR, name)
