# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab's network: namespaces, the bridge, veth pairs and addresses."""

import json
import os
import re

from lablib import REPO, LabError, run
from lablib.procs import all_pids, ns_inode


class NetMixin:
    """Network parts of lablib.lab.Lab."""

    @staticmethod
    def netns_exists(ns):
        return os.path.exists(f"/run/netns/{ns}")

    # ---- checks
    def check_subnet_free(self):
        mine = f"{self.net4}."
        for ns in sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []:
            if not re.match(r"^ctrhost-[a-z0-9]+-ctl$", ns) or ns == self.ctl_ns:
                continue
            out = run(["ip", "-n", ns, "-4", "-o", "addr", "show"], check=False).stdout
            if f"inet {mine}" in out:
                raise LabError(f"--name {self.name}: its subnet {self.net4}.0/24 is already "
                               f"used by the lab in network namespace {ns}; pick another name")
        for entry in sorted(os.listdir(REPO)):
            other = os.path.join(REPO, entry, "state.json")
            if entry.startswith(".lab") and entry != os.path.basename(self.dir) \
                    and os.path.exists(other):
                with open(other) as fh:
                    st = json.load(fh)
                if st.get("net4") == self.net4 and self.netns_exists(st.get("ctl_netns", "")):
                    raise LabError(f"--name {self.name}: its subnet {self.net4}.0/24 is "
                                   f"already used by lab {st.get('name')!r}; pick another name")

    # ---- network
    def ip(self, ns, *args):
        return run(["ip", "-n", ns, *args])

    @staticmethod
    def ip_quiet(ns, *args):
        return run(["ip", "-n", ns, *args], check=False)

    def setup_controller(self):
        run(["ip", "netns", "add", self.ctl_ns])
        self.ip(self.ctl_ns, "link", "set", "lo", "up")
        self.ip(self.ctl_ns, "link", "add", self.bridge, "address", f"{self.mac_base}:ff:00",
                "type", "bridge")
        self.ip(self.ctl_ns, "addr", "add", f"{self.ctl4}/24", "dev", self.bridge)
        self.ip(self.ctl_ns, "addr", "add", f"{self.ctl6}/64", "dev", self.bridge, "nodad")
        self.ip(self.ctl_ns, "link", "set", self.bridge, "up")
        run(["nsenter", f"--net=/run/netns/{self.ctl_ns}", "--", "sh", "-c",
             "echo 1 > /proc/sys/net/ipv4/ip_forward; "
             "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding"])

    def setup_host_net(self, rec):
        ns = rec["netns"]
        run(["ip", "netns", "add", ns])
        self.ip(self.ctl_ns, "link", "add", rec["veth"], "address", rec["veth_mac"], "type", "veth",
                "peer", "name", "eth0", "address", rec["mac"], "netns", ns)
        self.ip(self.ctl_ns, "link", "set", rec["veth"], "master", self.bridge, "up")
        self.ip(ns, "link", "set", "lo", "up")
        self.ip(ns, "addr", "add", f"{rec['address']}/24", "dev", "eth0")
        self.ip(ns, "addr", "add", f"{rec['address6']}/64", "dev", "eth0", "nodad")
        self.ip(ns, "link", "set", "eth0", "up")
        self.ip(ns, "route", "add", "default", "via", self.ctl4)
        self.ip(ns, "-6", "route", "add", "default", "via", self.ctl6)

    def ctl_pids(self):
        if not self.netns_exists(self.ctl_ns):
            return set()
        ino = os.stat(f"/run/netns/{self.ctl_ns}").st_ino
        return {p for p in all_pids() if ns_inode(p, "net") == ino}
