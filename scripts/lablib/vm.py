# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The VM tier of the lab (``lab.vm``): N real Debian hosts (13 or 12) under QEMU (stock
kernel, systemd, cgroup v2, GRUB), booted from copy-on-write overlays of one cached image
(lablib.vmimage). Same entry points as the namespace tier's lablib.hosts (``lab.ns``).

Every VM has one NIC on a tap in the lab's controller network namespace, on the same
bridge the namespace tier uses: the controller reaches the VMs over SSH there, and the
VMs reach each other (migration traffic) and nothing else. QEMU itself runs in that
namespace. Identity (hostname, addresses, SSH host key, the controller's key) is handed
to each VM through fw_cfg. A reboot inside a VM is a real one (firmware, GRUB, kernel);
`reset` is a power cut (QEMU system_reset).
"""

import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import time

from lablib import LabError, keygen, log, run, tail, wait_all, write
from lablib.procs import alive, proc_stat
from lablib.vmimage import CACHE, Image

QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT = 600  # s; under TCG a boot takes about a minute, much more on a busy machine
KVM_PROBE_SECONDS = 30
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes"]


class VmHosts:
    """The VM tier of one lab (``Lab.vm``, used when the lab's state says tier 'vm');
    names, addresses, keys and state files come from the lab."""

    def __init__(self, lab):
        self.lab = lab

    def record(self, i, memory, cpus):
        host = self.lab.host_name(i)
        rec = self.lab.host_record(i)
        rec.update(tap=f"t{self.lab.name}-{i}", memory=memory, cpus=cpus,
                   overlay=self.lab.hdir(host, "disk.qcow2"), console=self.lab.hdir(host, "console.log"),
                   monitor=self.lab.hdir(host, "monitor.sock"), pidfile=self.lab.hdir(host, "qemu.pid"),
                   qemu_name=f"ctrhost-{self.lab.name}-{host}")
        for key in ("veth", "veth_mac", "netns"):
            rec.pop(key)
        return rec

    # ---- up
    def up(self, n, accel="auto", memory=1536, cpus=1, release=None):
        if not shutil.which(QEMU):
            raise LabError(f"the VM tier needs {QEMU} and qemu-img (run `make setup`)")
        image = Image(release)
        meta = image.ensure()
        t0 = time.monotonic()
        self.write_files(n)
        state = {"name": self.lab.name, "tier": "vm", "count": n, "net4": self.lab.net4,
                 "net6": str(self.lab.net6), "controller": self.lab.ctl4, "controller6": self.lab.ctl6,
                 "ctl_netns": self.lab.ctl_ns, "bridge": self.lab.bridge, "dir": self.lab.dir,
                 "inventory": self.lab.inventory, "created": time.time(), "image": meta,
                 "release": image.release,
                 "hosts": {self.lab.host_name(i): self.record(i, memory, cpus)
                           for i in range(1, n + 1)}}
        self.lab.save(state)  # before anything exists: `down` can always clean up
        try:
            self.lab.net.setup_controller()
            for rec in state["hosts"].values():
                self.lab.net.ip(self.lab.ctl_ns, "tuntap", "add", "dev", rec["tap"], "mode", "tap")
                self.lab.net.ip(self.lab.ctl_ns, "link", "set", rec["tap"], "master", self.lab.bridge, "up")
                run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", image.disk, "-F", "raw",
                     rec["overlay"]])
            state["accel"] = self.choose_accel(accel, state)
            for host, rec in state["hosts"].items():
                if not self.alive(rec):
                    self.start_vm(host, rec, state["accel"])
            self.lab.save(state)
            self.wait_ssh(state, list(state["hosts"]))
        except LabError as exc:
            self.lab.save(state)
            raise LabError(f"{exc}\n(lab {self.lab.name!r} is half up: "
                           f"`scripts/lab --name {self.lab.name} down` removes it)") from None
        self.write_inventory(state)
        state["boot_seconds"] = round(time.monotonic() - t0, 1)
        self.lab.save(state)
        log(f"lab {self.lab.name!r} up with {n} VMs ({state['accel']}) in "
            f"{state['boot_seconds']:.0f}s")
        return self.lab.status(state)

    def write_files(self, n):
        os.makedirs(os.path.join(self.lab.dir, "hostkeys"), exist_ok=True)
        keygen(self.lab.key, f"ctrhost-lab-{self.lab.name}-controller")
        with open(f"{self.lab.key}.pub") as fh:
            controller_pub = fh.read().strip()
        for i in range(1, n + 1):
            host, rec = self.lab.host_name(i), self.lab.host_record(i)
            cfg = self.lab.hdir(host, "fwcfg")
            os.makedirs(cfg, exist_ok=True)
            hostkey = os.path.join(self.lab.dir, "hostkeys", f"{host}_ed25519_key")
            keygen(hostkey, f"ctrhost-lab-{host}")
            shutil.copyfile(hostkey, os.path.join(cfg, "hostkey"))
            shutil.copyfile(f"{hostkey}.pub", os.path.join(cfg, "hostkey.pub"))
            write(os.path.join(cfg, "hosts"), self.lab.hosts_text(n))
            write(os.path.join(cfg, "authorized_keys"), controller_pub + "\n")
            write(os.path.join(cfg, "identity"), "\n".join([
                f"LAB_HOSTNAME={host}", f"LAB_MAC={rec['mac']}",
                f"LAB_ADDRESS4={rec['address']}/24", f"LAB_ADDRESS6={rec['address6']}/64",
                f"LAB_GATEWAY4={self.lab.ctl4}", ""]))

    def write_inventory(self, state):
        lines = ["# written by scripts/lab: the lab's VM hosts, reached over SSH",
                 "[ctrhost_hosts]"]
        for host, rec in sorted(state["hosts"].items(), key=lambda kv: kv[1]["index"]):
            lines.append(f"{host} ansible_host={rec['address']} "
                         f"ctrhost_address={rec['address']} ctrhost_address6={rec['address6']}")
        lines += ["", "[ctrhost_hosts:vars]", "ansible_user=root",
                  f"ansible_ssh_private_key_file={self.lab.key}",
                  "ansible_python_interpreter=/usr/bin/python3",
                  "ansible_ssh_common_args='-o StrictHostKeyChecking=no "
                  "-o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o LogLevel=ERROR'",
                  f"ctrhost_lab_name={self.lab.name}", "ctrhost_lab_tier=vm",
                  f"ctrhost_lab_release={state.get('release', '12')}", ""]
        write(self.lab.inventory, "\n".join(lines))

    # ---- QEMU
    def qemu_cmd(self, host, rec, accel):
        cfg = self.lab.hdir(host, "fwcfg")
        cmd = ["nsenter", f"--net=/run/netns/{self.lab.ctl_ns}", "--", QEMU,
               "-name", rec["qemu_name"], "-nodefaults", "-machine", "pc",
               "-smp", str(rec["cpus"]), "-m", str(rec["memory"]),
               "-drive", f"file={rec['overlay']},format=qcow2,if=virtio,cache=unsafe",
               "-netdev", f"tap,id=n0,ifname={rec['tap']},script=no,downscript=no",
               "-device", f"virtio-net-pci,netdev=n0,mac={rec['mac']}",
               "-chardev", f"file,id=con,path={rec['console']},append=on", "-serial", "chardev:con",
               "-monitor", f"unix:{rec['monitor']},server=on,wait=off",
               "-display", "none", "-daemonize", "-pidfile", rec["pidfile"]]
        cmd += (["-accel", "kvm", "-cpu", "host"] if accel == "kvm"
                else ["-accel", "tcg,tb-size=256", "-cpu", "max"])
        for name in ("identity", "hosts", "hostkey", "hostkey.pub", "authorized_keys"):
            cmd += ["-fw_cfg", f"name=opt/ctrhost/{name},file={os.path.join(cfg, name)}"]
        return cmd

    def start_vm(self, host, rec, accel):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(rec["pidfile"])
        proc = subprocess.run(self.qemu_cmd(host, rec, accel), capture_output=True, text=True)
        if proc.returncode != 0:
            raise LabError(f"{host}: QEMU failed to start (rc={proc.returncode}): "
                           f"{proc.stderr.strip()}")
        with open(rec["pidfile"]) as fh:
            rec["pid"] = int(fh.read().strip())
        rec["starttime"] = proc_stat(rec["pid"])[1]
        rec["started"] = time.time()

    @staticmethod
    def alive(rec):
        return alive(rec.get("pid"), rec.get("starttime"))

    def choose_accel(self, accel, state):
        """kvm where a guest really boots with it, else tcg. On some nested hosts
        /dev/kvm exists but a guest hangs in its firmware: probed once, by booting the
        first VM with KVM and waiting for its kernel's first line; the verdict is cached."""
        if accel in ("kvm", "tcg"):
            return accel
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            return "tcg"
        qemu_version = run([QEMU, "--version"]).stdout.splitlines()[0]
        probe_key = f"{platform.release()} {qemu_version}"
        cache = os.path.join(CACHE, "accel.json")
        with contextlib.suppress(OSError, ValueError):
            with open(cache) as fh:
                cached = json.load(fh)
            if cached.get("key") == probe_key:
                return cached["accel"]
        host, rec = next(iter(state["hosts"].items()))
        deadline, verdict = time.monotonic() + KVM_PROBE_SECONDS, "tcg"
        try:
            self.start_vm(host, rec, "kvm")
        except LabError as exc:
            log(f"KVM: {str(exc).splitlines()[0]}")
            deadline = 0
        while time.monotonic() < deadline and self.alive(rec):
            with contextlib.suppress(OSError):
                with open(rec["console"], errors="replace") as fh:
                    if "Linux version" in fh.read():
                        verdict = "kvm"
                        break
            time.sleep(0.5)
        if verdict == "tcg":
            log(f"KVM: no guest kernel running with it within {KVM_PROBE_SECONDS}s: using TCG")
            self.stop_vm(rec)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(rec["console"])
        os.makedirs(CACHE, exist_ok=True)
        write(cache, json.dumps({"key": probe_key, "accel": verdict}) + "\n")
        return verdict

    def monitor(self, rec, command):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(rec["monitor"])
            sock.sendall(command.encode() + b"\n")
            time.sleep(0.2)

    def stop_vm(self, rec):
        if self.alive(rec):
            with contextlib.suppress(OSError):
                self.monitor(rec, "quit")
            deadline = time.monotonic() + 5
            while self.alive(rec) and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.alive(rec):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rec["pid"], signal.SIGKILL)
                deadline = time.monotonic() + 10
                while self.alive(rec) and time.monotonic() < deadline:
                    time.sleep(0.1)
            if self.alive(rec):
                raise LabError(f"QEMU pid {rec['pid']} ({rec['qemu_name']}) does not exit")
        rec["pid"] = rec["starttime"] = None

    # ---- SSH
    def ssh_cmd(self, rec, *command, timeout=10):
        return ["nsenter", f"--net=/run/netns/{self.lab.ctl_ns}", "--", "ssh", *SSH_OPTS,
                "-o", f"ConnectTimeout={timeout}", "-i", self.lab.key,
                f"root@{rec['address']}", "--", shlex.join(command)]

    def boot_id(self, rec):
        proc = subprocess.run(self.ssh_cmd(rec, "cat", "/proc/sys/kernel/random/boot_id"),
                              capture_output=True, text=True, timeout=60)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def wait_ssh(self, state, hosts, not_boot=None, timeout=BOOT_TIMEOUT):
        """Until sshd of every host answers (with a boot id other than not_boot[host])."""
        def ready(host):
            rec = state["hosts"][host]
            if not self.alive(rec):
                raise LabError(f"{host}: QEMU exited; console:\n{self.console_tail(rec)}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                boot = self.boot_id(rec)
                if boot and boot != (not_boot or {}).get(host):
                    rec["boot_id"] = boot
                    return True
            return False

        wait_all(hosts, ready, timeout, 2,
                 lambda left: f"{', '.join(left)}: no SSH after {timeout}s; console of {left[0]}:\n"
                              f"{self.console_tail(state['hosts'][left[0]])}")

    @staticmethod
    def console_tail(rec, lines=15):
        return tail(rec["console"], lines, "(no console log)")

    # ---- reboot, reset, down
    def reboot(self, state, host, hard=False):
        rec = state["hosts"][host]
        before = self.boot_id(rec)
        t0 = time.monotonic()
        if hard:
            self.monitor(rec, "system_reset")
        else:
            subprocess.run(self.ssh_cmd(rec, "systemctl", "reboot"), capture_output=True)
        self.wait_ssh(state, [host], not_boot={host: before})
        self.lab.save(state)
        log(f"VM {host} {'reset' if hard else 'rebooted'}: SSH again after "
            f"{time.monotonic() - t0:.0f}s")
        return 0

    def teardown(self, state, keep_data=False):
        """Every QEMU, the controller namespace, overlays and sockets (a VM's disk is its
        data: ``keep_data`` does not apply)."""
        for rec in state["hosts"].values():
            self.stop_vm(rec)
        self.lab.net.teardown_controller()
        for host, rec in state["hosts"].items():
            for path in (rec["overlay"], rec["monitor"], rec["pidfile"]):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            shutil.rmtree(self.lab.hdir(host, "fwcfg"), ignore_errors=True)
        for path in (self.lab.state_file, self.lab.inventory):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def exec_host(self, state, host, cmd):
        rec = state["hosts"][host]
        os.execvp("nsenter", self.ssh_cmd(rec, *cmd))

    def status_line(self, host, rec):
        what = f"qemu pid {rec['pid']}" if rec["running"] else "NOT RUNNING"
        return f"  {host:<10} {rec['address']:<15} {rec['address6']:<28} {what}"
