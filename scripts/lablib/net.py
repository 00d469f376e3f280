# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab's network (``lab.net``): the controller's network namespace with the bridge and
its addresses, a namespace host's veth pair and addresses, and the processes of the
controller namespace."""

import contextlib
import json
import os
import re
import signal
import time

from lablib import REPO, LabError, run
from lablib.procs import all_pids, kill_until_gone, ns_inode, proc_stat, protected_pids


class Network:
    """The network of one lab (``Lab.net``); names and addresses come from the lab."""

    def __init__(self, lab):
        self.lab = lab

    @staticmethod
    def netns_exists(ns):
        return os.path.exists(f"/run/netns/{ns}")

    # ---- checks
    def check_subnet_free(self):
        mine = f"{self.lab.net4}."
        for ns in sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []:
            if not re.match(r"^ctrhost-[a-z0-9]+-ctl$", ns) or ns == self.lab.ctl_ns:
                continue
            out = run(["ip", "-n", ns, "-4", "-o", "addr", "show"], check=False).stdout
            if f"inet {mine}" in out:
                raise LabError(f"--name {self.lab.name}: its subnet {self.lab.net4}.0/24 is already "
                               f"used by the lab in network namespace {ns}; pick another name")
        for entry in sorted(os.listdir(REPO)):
            other = os.path.join(REPO, entry, "state.json")
            if entry.startswith(".lab") and entry != os.path.basename(self.lab.dir) \
                    and os.path.exists(other):
                with open(other) as fh:
                    st = json.load(fh)
                if st.get("net4") == self.lab.net4 and self.netns_exists(st.get("ctl_netns", "")):
                    raise LabError(f"--name {self.lab.name}: its subnet {self.lab.net4}.0/24 is "
                                   f"already used by lab {st.get('name')!r}; pick another name")

    # ---- network
    def ip(self, ns, *args):
        return run(["ip", "-n", ns, *args])

    @staticmethod
    def ip_quiet(ns, *args):
        return run(["ip", "-n", ns, *args], check=False)

    def setup_controller(self):
        run(["ip", "netns", "add", self.lab.ctl_ns])
        self.ip(self.lab.ctl_ns, "link", "set", "lo", "up")
        self.ip(self.lab.ctl_ns, "link", "add", self.lab.bridge, "address", f"{self.lab.mac_base}:ff:00",
                "type", "bridge")
        self.ip(self.lab.ctl_ns, "addr", "add", f"{self.lab.ctl4}/24", "dev", self.lab.bridge)
        self.ip(self.lab.ctl_ns, "addr", "add", f"{self.lab.ctl6}/64", "dev", self.lab.bridge, "nodad")
        self.ip(self.lab.ctl_ns, "link", "set", self.lab.bridge, "up")
        run(["nsenter", f"--net=/run/netns/{self.lab.ctl_ns}", "--", "sh", "-c",
             "echo 1 > /proc/sys/net/ipv4/ip_forward; "
             "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding"])

    def setup_host_net(self, rec):
        ns = rec["netns"]
        run(["ip", "netns", "add", ns])
        self.ip(self.lab.ctl_ns, "link", "add", rec["veth"], "address", rec["veth_mac"], "type", "veth",
                "peer", "name", "eth0", "address", rec["mac"], "netns", ns)
        self.ip(self.lab.ctl_ns, "link", "set", rec["veth"], "master", self.lab.bridge, "up")
        self.ip(ns, "link", "set", "lo", "up")
        self.ip(ns, "addr", "add", f"{rec['address']}/24", "dev", "eth0")
        self.ip(ns, "addr", "add", f"{rec['address6']}/64", "dev", "eth0", "nodad")
        self.ip(ns, "link", "set", "eth0", "up")
        self.ip(ns, "route", "add", "default", "via", self.lab.ctl4)
        self.ip(ns, "-6", "route", "add", "default", "via", self.lab.ctl6)

    def ctl_pids(self):
        if not self.netns_exists(self.lab.ctl_ns):
            return set()
        ino = os.stat(f"/run/netns/{self.lab.ctl_ns}").st_ino
        return {p for p in all_pids() if ns_inode(p, "net") == ino}

    def teardown_controller(self):
        """Every process of the controller namespace, then the namespace itself."""
        # ssh ControlPersist masters and the like: let them remove their sockets
        term = self.ctl_pids() - protected_pids()
        for pid in term:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 1
        while term and time.monotonic() < deadline:
            term = {p for p in term if (proc_stat(p) or (0, 0, "Z"))[2] != "Z"}
            time.sleep(0.02)
        kill_until_gone(self.ctl_pids, f"controller side of lab {self.lab.name}")
        if self.netns_exists(self.lab.ctl_ns):
            run(["ip", "netns", "del", self.lab.ctl_ns])
        with open("/proc/self/mountinfo") as fh:
            stale = [line.split()[4] for line in fh if f" {self.lab.dir}/" in line]
        for mnt in sorted(stale, reverse=True):
            run(["umount", "-l", mnt], check=False)
