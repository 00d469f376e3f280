# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Lab: one named lab's names, addresses and state, and the commands up, down,
reboot, status, exec and host-exec.

A Lab holds its parts by name, each in a file of its own:

    lab.net   lablib.net.Network          the controller namespace, bridge, veths, addresses
    lab.ns    lablib.hosts.NamespaceHosts the namespace tier: hosts as namespaces with an sshd
    lab.vm    lablib.vm.VmHosts           the VM tier: Debian VMs under QEMU (image: lablib.vmimage)

The two tiers have the same entry points (up, restart or reboot, teardown, alive,
status_line, exec_host, write_inventory); ``lab.tier(state)`` is the one a lab's state
says it runs. lablib.cli is the command line, lablib.procs the process helpers."""

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os

from lablib import NAME_RE, REPO, LabError, log, run, write
from lablib.hosts import NamespaceHosts
from lablib.net import Network
from lablib.vm import VmHosts
from lablib.vmimage import release as vm_release


class Lab:
    def __init__(self, name):
        if not NAME_RE.match(name):
            raise LabError(f"--name: expected 1-8 characters [a-z0-9] starting with a "
                           f"letter, got {name!r}")
        self.name = name
        self.dir = os.path.join(REPO, ".lab" if name == "lab" else f".lab-{name}")
        self.ctl_ns = f"ctrhost-{name}-ctl"
        self.bridge = f"br-{name}"
        digest = hashlib.sha256(f"ctrhost-lab:{name}".encode()).digest()
        self.net4 = f"10.{100 + digest[0] % 100}.{digest[1]}"
        prefix6 = "fd{:02x}:{:02x}{:02x}:{:02x}{:02x}:1::".format(*digest[2:7])
        self.net6 = ipaddress.IPv6Network(f"{prefix6}/64")  # a ULA /64
        self.ctl4, self.ctl6 = f"{self.net4}.1", self.addr6(1)
        # Fixed MACs, as on real hardware: a rebooted host keeps its MAC, so
        # neighbour caches elsewhere stay right.
        self.mac_base = "02:{:02x}:{:02x}:{:02x}".format(*digest[7:10])
        self.state_file = os.path.join(self.dir, "state.json")
        self.inventory = os.path.join(self.dir, "inventory.ini")
        self.key = os.path.join(self.dir, "id_ed25519")
        self.migrate_key = os.path.join(self.dir, "migrate_ed25519")
        self.authorized = os.path.join(self.dir, "authorized_keys")
        self.net = Network(self)
        self.ns = NamespaceHosts(self)
        self.vm = VmHosts(self)

    def tier(self, state):
        """The part that runs the lab's hosts: ``self.vm`` or ``self.ns``."""
        return self.vm if (state or {}).get("tier") == "vm" else self.ns

    # ---- naming
    def host_name(self, i):
        return f"{self.name}{i}"

    def host_record(self, i):
        host = self.host_name(i)
        return {"index": i, "netns": f"ctrhost-{self.name}-{host}",
                "veth": f"v{self.name}-{i}", "address": f"{self.net4}.{10 + i}",
                "mac": f"{self.mac_base}:00:{i:02x}", "veth_mac": f"{self.mac_base}:01:{i:02x}",
                "address6": self.addr6(10 + i)}

    def addr6(self, suffix):
        """The ULA address ending in ::SUFFIX (read as hex, like 10.x.y.SUFFIX)."""
        return str(self.net6.network_address + int(str(suffix), 16))

    def hdir(self, host, *parts):
        return os.path.join(self.dir, "hosts", host, *parts)

    def hosts_text(self, n):
        """/etc/hosts of every lab host: the controller and the N hosts by name."""
        hosts = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                 f"{self.ctl4}\t{self.name}-ctl", f"{self.ctl6}\t{self.name}-ctl"]
        for i in range(1, n + 1):
            rec = self.host_record(i)
            hosts += [f"{rec['address']}\t{self.host_name(i)}",
                      f"{rec['address6']}\t{self.host_name(i)}"]
        return "\n".join(hosts) + "\n"

    # ---- state
    def load(self):
        try:
            with open(self.state_file) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None

    def save(self, state):
        write(self.state_file, json.dumps(state, indent=2, sort_keys=True) + "\n")

    @contextlib.contextmanager
    def lock(self):
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, ".lock"), "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    # ---- commands
    def up(self, n, vm=False, **vm_opts):
        with self.lock():
            state = self.load()
            tier = "vm" if vm else "ns"
            if state and self.net.netns_exists(self.ctl_ns):
                if state.get("count") != n or state.get("tier", "ns") != tier:
                    raise LabError(f"lab {self.name!r} is up with {state.get('count')} "
                                   f"{state.get('tier', 'ns')} hosts, not {n} {tier}: run "
                                   f"`scripts/lab --name {self.name} down` first")
                if tier == "vm":
                    wanted = vm_release(vm_opts.get("release"))
                    if state.get("release", "12") != wanted:
                        raise LabError(f"lab {self.name!r} is up with Debian "
                                       f"{state.get('release', '12')} VMs, not {wanted}: run "
                                       f"`scripts/lab --name {self.name} down` first")
                    dead = [h for h, r in state["hosts"].items() if not self.vm.alive(r)]
                    if dead:
                        raise LabError(f"VMs {', '.join(dead)} of lab {self.name!r} are not "
                                       f"running: `scripts/lab --name {self.name} down` first")
                    self.vm.write_inventory(state)
                    return self.status(state)
                dead = [h for h, r in state["hosts"].items() if not self.ns.alive(r)]
                if dead:
                    log(f"restarting lab hosts {', '.join(dead)}")
                    self.ns.restart(state, dead)
                self.ns.write_inventory(state)
                return self.status(state)
            if state:
                log(f"cleaning up what is left of lab {self.name!r}")
                self.tier(state).teardown(state, keep_data=True)
                state = None
            else:
                self.drop_orphan_netns(f"--name {self.name}: ")
            self.net.check_subnet_free()
            if vm:
                return self.vm.up(n, **vm_opts)
            return self.ns.up(n)

    def reboot(self, host, hard=False):
        with self.lock():
            state = self.require_up()
            if host not in state["hosts"]:
                raise LabError(f"HOST: expected one of {', '.join(state['hosts'])}, got {host!r}")
            return self.tier(state).reboot(state, host, hard=hard)

    def down(self, keep_data=False):
        with self.lock():
            state = self.load()
            if not state:
                self.drop_orphan_netns("")
                log(f"lab {self.name!r} is not up")
                return 0
            self.tier(state).teardown(state, keep_data)
            log(f"lab {self.name!r} is down")
        return 0

    def drop_orphan_netns(self, prefix):
        """The controller namespace without this checkout's state: removed when no process
        lives in it (what a killed run leaves), refused when one does (another checkout's
        lab is running)."""
        if not self.net.netns_exists(self.ctl_ns):
            return
        pids = sorted(self.net.ctl_pids())
        if pids:
            raise LabError(f"{prefix}network namespace {self.ctl_ns} exists with processes "
                           f"{', '.join(map(str, pids[:8]))} in it but {self.state_file} does "
                           f"not (a lab of another checkout?); pick another name")
        log(f"removing network namespace {self.ctl_ns}: no lab state and no process in it "
            f"(left by a run that was killed)")
        run(["ip", "netns", "del", self.ctl_ns])

    def require_up(self):
        state = self.load()
        if not state or not self.net.netns_exists(self.ctl_ns):
            raise LabError(f"lab {self.name!r} is not up (scripts/lab --name {self.name} up)")
        return state

    def status(self, state=None, as_json=False):
        state = state or self.load()
        up = bool(state) and self.net.netns_exists(self.ctl_ns)
        tier = self.tier(state)
        hosts = {host: dict(rec, running=up and tier.alive(rec))
                 for host, rec in (state or {}).get("hosts", {}).items()}
        healthy = up and all(h["running"] for h in hosts.values())
        if as_json:
            print(json.dumps(dict(state or {"name": self.name}, up=up, healthy=healthy,
                                  hosts=hosts), indent=2, sort_keys=True))
        elif not up:
            print(f"lab {self.name!r}: down")
        else:
            kind = (f"Debian {state.get('release', '12')} VM hosts ({state.get('accel')})"
                    if tier is self.vm else "hosts")
            print(f"lab {self.name!r}: up, {len(hosts)} {kind}, {state['net4']}.0/24 "
                  f"{state['net6']}, controller netns {self.ctl_ns} ({state['controller']})")
            for host, rec in sorted(hosts.items(), key=lambda kv: kv[1]["index"]):
                print(tier.status_line(host, rec))
            print(f"inventory: {self.inventory}")
            name_opt = "" if self.name == "lab" else f" --name {self.name}"
            print(f"try: scripts/lab{name_opt} exec -- .venv/bin/ansible all -m ping")
        return 0 if healthy else (1 if up else 3)

    def exec_controller(self, cmd):
        self.require_up()
        env = dict(os.environ, ANSIBLE_INVENTORY=self.inventory,
                   ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
                   CTRHOST_LAB=self.name, CTRHOST_LAB_DIR=self.dir)
        os.execvpe("nsenter", ["nsenter", f"--net=/run/netns/{self.ctl_ns}", "--", *cmd], env)

    def exec_host(self, host, cmd):
        state = self.require_up()
        if host not in state["hosts"]:
            raise LabError(f"HOST: expected one of {', '.join(state['hosts'])}, got {host!r}")
        return self.tier(state).exec_host(state, host, cmd)

    def host_init(self, host, boot=False):
        """`_host-init`: inside a namespace host's new namespaces (see NamespaceHosts)."""
        return self.ns.host_init(host, boot=boot)
