# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Lab: one named lab's state, and the commands up, down, reboot,
status, exec and host-exec."""

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import time

from lablib import NAME_RE, REPO, LabError, log, run, write
from lablib.hosts import HostsMixin
from lablib.net import NetMixin
from lablib.procs import alive, kill_until_gone, proc_stat, protected_pids
from lablib.vm import VmMixin


class Lab(NetMixin, HostsMixin, VmMixin):
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

    def host_alive(self, rec):
        return alive(rec.get("pid"), rec.get("starttime"))

    # ---- commands
    def up(self, n, vm=False, **vm_opts):
        with self.lock():
            state = self.load()
            tier = "vm" if vm else "ns"
            if state and self.netns_exists(self.ctl_ns):
                if state.get("count") != n or state.get("tier", "ns") != tier:
                    raise LabError(f"lab {self.name!r} is up with {state.get('count')} "
                                   f"{state.get('tier', 'ns')} hosts, not {n} {tier}: run "
                                   f"`scripts/lab --name {self.name} down` first")
                if tier == "vm":
                    dead = [h for h, r in state["hosts"].items() if not self.vm_alive(r)]
                    if dead:
                        raise LabError(f"VMs {', '.join(dead)} of lab {self.name!r} are not "
                                       f"running: `scripts/lab --name {self.name} down` first")
                    self.write_vm_inventory(state)
                    return self.status(state)
                dead = [h for h, r in state["hosts"].items() if not self.host_alive(r)]
                if dead:
                    log(f"restarting lab hosts {', '.join(dead)}")
                    self.restart_hosts(state, dead)
                self.write_inventory(state)
                return self.status(state)
            if state:
                log(f"cleaning up what is left of lab {self.name!r}")
                self.teardown(state, keep_data=True)
                state = None
            elif self.netns_exists(self.ctl_ns):
                raise LabError(f"--name {self.name}: network namespace {self.ctl_ns} exists "
                               f"but {self.state_file} does not (a lab of another checkout?); "
                               f"pick another name")
            self.check_subnet_free()
            if vm:
                return self.vm_up(n, **vm_opts)
            t0 = time.monotonic()
            self.write_files(n)
            state = {"name": self.name, "count": n, "net4": self.net4, "net6": str(self.net6),
                     "controller": self.ctl4, "controller6": self.ctl6,
                     "ctl_netns": self.ctl_ns, "bridge": self.bridge, "dir": self.dir,
                     "inventory": self.inventory, "created": time.time(),
                     "hosts": {self.host_name(i): self.host_record(i)
                               for i in range(1, n + 1)}}
            self.save(state)  # before anything exists: `down` can always clean up
            try:
                self.setup_controller()
                self.restart_hosts(state, list(state["hosts"]))
            except LabError as exc:
                raise LabError(f"{exc}\n(lab {self.name!r} is half up: "
                               f"`scripts/lab --name {self.name} down` removes it)") from None
            self.write_inventory(state)
            log(f"lab {self.name!r} up with {n} hosts in {time.monotonic() - t0:.2f}s")
            return self.status(state)

    def restart_hosts(self, state, hosts, boot=False):
        procs = {}
        try:
            for host in hosts:
                rec = state["hosts"][host]
                self.stop_host(host, rec)
                self.setup_host_net(rec)
                procs[host] = (self.spawn_host(host, rec, boot), rec)
            self.wait_ready(procs)
        finally:
            self.save(state)

    def reboot(self, host, hard=False):
        with self.lock():
            state = self.require_up()
            if host not in state["hosts"]:
                raise LabError(f"HOST: expected one of {', '.join(state['hosts'])}, got {host!r}")
            if state.get("tier") == "vm":
                return self.vm_reboot(state, host, hard=hard)
            if hard:
                raise LabError("reset: only VM hosts can be reset (a namespace host's reboot "
                               "already kills every process)")
            t0 = time.monotonic()
            self.restart_hosts(state, [host], boot=True)
            log(f"lab host {host} rebooted in {time.monotonic() - t0:.2f}s")
        return 0

    def down(self, keep_data=False):
        with self.lock():
            state = self.load()
            if not state:
                if self.netns_exists(self.ctl_ns):
                    raise LabError(f"network namespace {self.ctl_ns} exists but "
                                   f"{self.state_file} does not: not this checkout's lab")
                log(f"lab {self.name!r} is not up")
                return 0
            self.teardown(state, keep_data)
            log(f"lab {self.name!r} is down")
        return 0

    def teardown(self, state, keep_data):
        if state.get("tier") == "vm":
            return self.vm_teardown(state)
        for host, rec in state["hosts"].items():
            self.stop_host(host, rec)
        self.teardown_controller()
        for path in (self.state_file, self.inventory, self.authorized):
            if os.path.exists(path):
                os.unlink(path)
        hosts_dir = os.path.join(self.dir, "hosts")
        if os.path.isdir(hosts_dir):
            for host in os.listdir(hosts_dir):
                for entry in os.listdir(os.path.join(hosts_dir, host)):
                    if keep_data and entry == "lib":
                        continue
                    path = os.path.join(hosts_dir, host, entry)
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path)
                    else:
                        os.unlink(path)
                if not keep_data:
                    os.rmdir(os.path.join(hosts_dir, host))

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
        kill_until_gone(self.ctl_pids, f"controller side of lab {self.name}")
        if self.netns_exists(self.ctl_ns):
            run(["ip", "netns", "del", self.ctl_ns])
        with open("/proc/self/mountinfo") as fh:
            stale = [line.split()[4] for line in fh if f" {self.dir}/" in line]
        for mnt in sorted(stale, reverse=True):
            run(["umount", "-l", mnt], check=False)

    def require_up(self):
        state = self.load()
        if not state or not self.netns_exists(self.ctl_ns):
            raise LabError(f"lab {self.name!r} is not up (scripts/lab --name {self.name} up)")
        return state

    def status(self, state=None, as_json=False):
        state = state or self.load()
        up = bool(state) and self.netns_exists(self.ctl_ns)
        hosts = {}
        vm = (state or {}).get("tier") == "vm"
        for host, rec in (state or {}).get("hosts", {}).items():
            running = self.vm_alive(rec) if vm else self.host_alive(rec)
            hosts[host] = dict(rec, running=up and running)
        healthy = up and all(h["running"] for h in hosts.values())
        if as_json:
            print(json.dumps(dict(state or {"name": self.name}, up=up, healthy=healthy,
                                  hosts=hosts), indent=2, sort_keys=True))
        elif not up:
            print(f"lab {self.name!r}: down")
        else:
            kind = f"VM hosts ({state.get('accel')})" if vm else "hosts"
            print(f"lab {self.name!r}: up, {len(hosts)} {kind}, {state['net4']}.0/24 "
                  f"{state['net6']}, controller netns {self.ctl_ns} ({state['controller']})")
            for host, rec in sorted(hosts.items(), key=lambda kv: kv[1]["index"]):
                if vm:
                    print(self.vm_status_line(host, rec))
                    continue
                what = f"sshd pid {rec['pid']}" if rec["running"] else "NOT RUNNING"
                print(f"  {host:<10} {rec['address']:<15} {rec['address6']:<28} {what}")
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
        rec = state["hosts"].get(host)
        if rec is None:
            raise LabError(f"HOST: expected one of {', '.join(state['hosts'])}, got {host!r}")
        if state.get("tier") == "vm":
            return self.vm_exec_host(state, host, cmd)
        if not self.host_alive(rec):
            raise LabError(f"lab host {host} is not running (sshd pid {rec.get('pid')} is "
                           f"gone): scripts/lab --name {self.name} reboot {host}")
        os.execvp("nsenter", ["nsenter", "-t", str(rec["pid"]), "--net", "--mount", "--uts",
                              f"--wd={os.getcwd()}", "--", *cmd])
