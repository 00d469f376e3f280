# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The namespace tier's hosts (``lab.ns``): keys, sshd and host files, inventory,
spawning, stopping, and the mount namespace setup (host_init) that ends in exec sshd.
The VM tier's counterpart, with the same entry points, is lablib.vm (``lab.vm``)."""

import ctypes
import os
import re
import shutil
import socket
import subprocess
import sys
import time

from lablib import (FOREIGN_FSTYPES, FOREIGN_UNDER, HOST_LIB, LAB_SCRIPT, REPLACED_MOUNTS,
                    REPO, SSHD, LabError, keygen, log, run, tail, wait_all, write)
from lablib.procs import (alive, all_pids, cgroup_pids, kill_until_gone, ns_inode, proc_stat,
                          remove_cgroups, thaw_cgroups)


class NamespaceHosts:
    """The namespace tier of one lab (``Lab.ns``): each host a set of namespaces with an
    sshd; names, addresses and state files come from the lab."""

    def __init__(self, lab):
        self.lab = lab

    # ---- up, restart, reboot, down
    def up(self, n):
        lab = self.lab
        t0 = time.monotonic()
        self.write_files(n)
        state = {"name": lab.name, "count": n, "net4": lab.net4, "net6": str(lab.net6),
                 "controller": lab.ctl4, "controller6": lab.ctl6,
                 "ctl_netns": lab.ctl_ns, "bridge": lab.bridge, "dir": lab.dir,
                 "inventory": lab.inventory, "created": time.time(),
                 "hosts": {lab.host_name(i): lab.host_record(i) for i in range(1, n + 1)}}
        lab.save(state)  # before anything exists: `down` can always clean up
        try:
            lab.net.setup_controller()
            self.restart(state, list(state["hosts"]))
        except LabError as exc:
            raise LabError(f"{exc}\n(lab {lab.name!r} is half up: "
                           f"`scripts/lab --name {lab.name} down` removes it)") from None
        self.write_inventory(state)
        log(f"lab {lab.name!r} up with {n} hosts in {time.monotonic() - t0:.2f}s")
        return lab.status(state)

    def restart(self, state, hosts, boot=False):
        procs = {}
        try:
            for host in hosts:
                rec = state["hosts"][host]
                self.stop_host(host, rec)
                self.lab.net.setup_host_net(rec)
                procs[host] = (self.spawn_host(host, rec, boot), rec)
            self.wait_ready(procs)
        finally:
            self.lab.save(state)

    def reboot(self, state, host, hard=False):
        if hard:
            raise LabError("reset: only VM hosts can be reset (a namespace host's reboot "
                           "already kills every process)")
        t0 = time.monotonic()
        self.restart(state, [host], boot=True)
        log(f"lab host {host} rebooted in {time.monotonic() - t0:.2f}s")
        return 0

    def teardown(self, state, keep_data):
        lab = self.lab
        for host, rec in state["hosts"].items():
            self.stop_host(host, rec)
        lab.net.teardown_controller()
        for path in (lab.state_file, lab.inventory, lab.authorized):
            if os.path.exists(path):
                os.unlink(path)
        hosts_dir = os.path.join(lab.dir, "hosts")
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

    # ---- status, exec
    @staticmethod
    def alive(rec):
        return alive(rec.get("pid"), rec.get("starttime"))

    def status_line(self, host, rec):
        what = f"sshd pid {rec['pid']}" if rec["running"] else "NOT RUNNING"
        return f"  {host:<10} {rec['address']:<15} {rec['address6']:<28} {what}"

    def exec_host(self, state, host, cmd):
        rec = state["hosts"][host]
        if not self.alive(rec):
            raise LabError(f"lab host {host} is not running (sshd pid {rec.get('pid')} is "
                           f"gone): scripts/lab --name {self.lab.name} reboot {host}")
        os.execvp("nsenter", ["nsenter", "-t", str(rec["pid"]), "--net", "--mount", "--uts",
                              f"--wd={os.getcwd()}", "--", *cmd])

    # ---- files
    def write_files(self, n):
        os.makedirs(os.path.join(self.lab.dir, "hostkeys"), exist_ok=True)
        keygen(self.lab.key, f"ctrhost-lab-{self.lab.name}-controller")
        keygen(self.lab.migrate_key, f"ctrhost-lab-{self.lab.name}-migrate")
        pubs = []
        for key in (self.lab.key, self.lab.migrate_key):
            with open(f"{key}.pub") as fh:
                pubs.append(fh.read().strip())
        write(self.lab.authorized, "\n".join(pubs) + "\n")
        hosts_text = self.lab.hosts_text(n)
        for i in range(1, n + 1):
            self.write_host_files(self.lab.host_name(i), self.lab.host_record(i), hosts_text)

    def write_host_files(self, host, rec, hosts_text):
        ssh_dir = self.lab.hdir(host, "lib", "ssh")
        os.makedirs(ssh_dir, exist_ok=True)
        hostkey = os.path.join(self.lab.dir, "hostkeys", f"{host}_ed25519_key")
        keygen(hostkey, f"ctrhost-lab-{host}")
        write(self.lab.hdir(host, "hosts"), hosts_text)
        write(self.lab.hdir(host, "hostname"), host + "\n")
        write(self.lab.hdir(host, "sshd_config"), "\n".join([
            "# sshd of lab host " + host + " (written by scripts/lab)",
            f"ListenAddress {rec['address']}",
            f"ListenAddress {rec['address6']}",
            f"HostKey {hostkey}",
            "PidFile none",
            f"AuthorizedKeysFile {self.lab.authorized} {HOST_LIB}/ssh/authorized_keys",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "X11Forwarding no",
            "AcceptEnv LANG LC_*",
            "MaxStartups 100:30:200",
            "MaxSessions 100",
            "Subsystem sftp internal-sftp",
            "",
        ]))
        for src, dst, mode in ((self.lab.migrate_key, "id_ed25519", 0o600),
                               (f"{self.lab.migrate_key}.pub", "id_ed25519.pub", 0o644)):
            shutil.copyfile(src, os.path.join(ssh_dir, dst))
            os.chmod(os.path.join(ssh_dir, dst), mode)
        write(os.path.join(ssh_dir, "config"), "\n".join([
            "# host-to-host trust inside the lab (written by scripts/lab)",
            "Host *",
            "    User root",
            f"    IdentityFile {HOST_LIB}/ssh/id_ed25519",
            "    IdentitiesOnly yes",
            "    StrictHostKeyChecking no",
            "    UserKnownHostsFile /dev/null",
            "    LogLevel ERROR",
            "    ConnectTimeout 10",
            "",
        ]))

    def write_inventory(self, state):
        venv_python = os.path.join(REPO, ".venv", "bin", "python")
        lines = ["# written by scripts/lab: the lab's hosts, reached over SSH", "[ctrhost_hosts]"]
        for host, rec in sorted(state["hosts"].items(), key=lambda kv: kv[1]["index"]):
            lines.append(f"{host} ansible_host={rec['address']} "
                         f"ctrhost_address={rec['address']} ctrhost_address6={rec['address6']}")
        lines += ["", "[ctrhost_hosts:vars]", "ansible_user=root",
                  f"ansible_ssh_private_key_file={self.lab.key}",
                  f"ansible_python_interpreter={venv_python}",
                  "ansible_ssh_common_args='-o StrictHostKeyChecking=no "
                  "-o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o LogLevel=ERROR'",
                  "ctrhost_lab=True", f"ctrhost_lab_name={self.lab.name}", ""]
        write(self.lab.inventory, "\n".join(lines))

    # ---- hosts
    def spawn_host(self, host, rec, boot=False):
        """Start the host's sshd in fresh mount + UTS namespaces (after the host's boot
        services when ``boot``: see host_init)."""
        os.makedirs(HOST_LIB, exist_ok=True)  # mount point only, stays empty
        log_path = self.lab.hdir(host, "sshd.log")
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{rec['netns']}", "--",
                 "unshare", "--mount", "--uts", "--propagation", "private", "--",
                 sys.executable, LAB_SCRIPT, "--name", self.lab.name,
                 "_host-init", host] + (["--boot"] if boot else []),
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True, close_fds=True)
        rec["pid"] = proc.pid
        rec["starttime"] = None
        return proc

    def wait_ready(self, procs, timeout=60):
        """Wait until every spawned sshd listens on its address."""
        def ready(host):
            proc, rec = procs[host]
            if proc.poll() is not None:
                raise LabError(f"lab host {host}: sshd exited with {proc.returncode}; "
                               f"see {self.lab.hdir(host, 'sshd.log')}:\n{self.log_tail(host)}")
            if not self.listening(proc.pid, rec):
                return False
            rec["starttime"] = proc_stat(proc.pid)[1]
            for kind in ("mnt", "net", "uts"):
                rec[f"{kind}_ns"] = ns_inode(proc.pid, kind)
            return True

        wait_all(procs, ready, timeout, 0.01,
                 lambda left: f"lab hosts {sorted(left)}: sshd not listening after {timeout}s; "
                              f"see {self.lab.dir}/hosts/*/sshd.log")

    @staticmethod
    def listening(pid, rec):
        want4 = socket.inet_aton(rec["address"])[::-1].hex().upper() + ":0016"
        want6 = "".join(socket.inet_pton(socket.AF_INET6, rec["address6"])[i:i + 4][::-1].hex()
                        for i in range(0, 16, 4)).upper() + ":0016"
        found = set()
        for table in ("tcp", "tcp6"):
            try:
                with open(f"/proc/{pid}/net/{table}") as fh:
                    for line in fh.readlines()[1:]:
                        cols = line.split()
                        if cols[3] == "0A":
                            found.add(cols[1])
            except OSError:
                return False
        return want4 in found and want6 in found

    def log_tail(self, host):
        return tail(self.lab.hdir(host, "sshd.log"))

    def host_pids(self, host, rec):
        """Every process of a lab host: its sshd and descendants, whatever shares
        its network namespace or a mount namespace made from its own (found by
        the host's /etc/hostname bind mount), and whatever sits in its cgroups."""
        try:
            marker = os.stat(self.lab.hdir(host, "hostname"))
            marker = (marker.st_dev, marker.st_ino)
        except OSError:
            marker = None

        def find():
            found = set(cgroup_pids(host))
            net_ino = None
            if self.lab.net.netns_exists(rec["netns"]):
                net_ino = os.stat(f"/run/netns/{rec['netns']}").st_ino
            own_mnt, verdict, children = ns_inode(os.getpid(), "mnt"), {}, {}
            for pid in all_pids():
                st = proc_stat(pid)
                if not st:
                    continue
                children.setdefault(st[0], []).append(pid)
                if net_ino and ns_inode(pid, "net") == net_ino:
                    found.add(pid)
                    continue
                mnt = ns_inode(pid, "mnt")
                if marker is None or mnt is None or mnt == own_mnt:
                    continue
                if mnt not in verdict:
                    try:  # /etc/hostname as that process sees it: the host's file?
                        seen = os.stat(f"/proc/{pid}/root/etc/hostname")
                    except OSError:
                        continue
                    verdict[mnt] = (seen.st_dev, seen.st_ino) == marker
                if verdict[mnt]:
                    found.add(pid)
            if self.alive(rec):
                found.add(rec["pid"])
            todo = list(found)
            while todo:
                for child in children.get(todo.pop(), []):
                    if child not in found:
                        found.add(child)
                        todo.append(child)
            return found
        return find

    def stop_host(self, host, rec):
        thaw_cgroups(host)
        kill_until_gone(self.host_pids(host, rec), f"lab host {host}")
        remove_cgroups(host)
        # Deleting one end of the veth is synchronous; a netns goes away later.
        if self.lab.net.netns_exists(self.lab.ctl_ns):
            self.lab.net.ip_quiet(self.lab.ctl_ns, "link", "del", rec["veth"])
        if self.lab.net.netns_exists(rec["netns"]):
            run(["ip", "netns", "del", rec["netns"]])
        rec["pid"] = rec["starttime"] = None

    def boot_services(self, host):
        lib = next((d for d in (os.path.join(REPO, ".cache", "molecule-collections"),
                                os.path.join(REPO, "collections"))
                    if os.path.isdir(os.path.join(d, "ansible_collections", "ctrhost", "fleet"))),
                   None)
        if lib is None:
            print(f"lab host {host}: no built collection (make setup): boot services skipped",
                  flush=True)
            return
        helper = os.path.join(REPO, "roles", "host", "files", "ctrhost-autostart")
        proc = subprocess.run(["/usr/bin/python3", helper, "--lib", lib, "--root", HOST_LIB,
                               "start"], stdin=subprocess.DEVNULL, capture_output=True, text=True)
        print(f"lab host {host}: boot services rc={proc.returncode}\n{proc.stdout}{proc.stderr}",
              flush=True)

    def host_init(self, host, boot=False):
        """Inside the host's new mount + UTS namespaces: private /run and
        /var/lib/ctrhost, own /etc/hosts and /etc/hostname, then exec sshd.

        ``boot`` (a reboot): first what a real host's ctrhost-autostart.service does
        at boot (the persisted host network, then the autostart containers), with the
        same helper the host role installs, so that what must survive a reboot
        survives through the host's own boot here too."""
        libc = ctypes.CDLL(None, use_errno=True)

        def mount(src, target, fstype, flags, data):
            if libc.mount(src.encode(), target.encode(), fstype.encode() if fstype else None,
                          flags, data.encode() if data else None) != 0:
                err = ctypes.get_errno()
                raise LabError(f"mount {src} on {target}: {os.strerror(err)}")

        with open("/proc/self/mountinfo") as fh:
            mounts = []
            for line in fh:
                left, right = line.split(" - ", 1)
                point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)),
                               left.split()[4])
                mounts.append((point, right.split()[0]))
        drop = [p for p, fstype in mounts if p != "/" and (
                fstype.split(".")[0] in FOREIGN_FSTYPES
                or any(p == pre or p.startswith(pre + "/") for pre in REPLACED_MOUNTS)
                or any(p.startswith(pre + "/") for pre in FOREIGN_UNDER))]
        for point in sorted(set(drop), key=len, reverse=True):
            libc.umount2(point.encode(), 2)  # MNT_DETACH; gone already is fine
        ms_bind, ms_nosuid, ms_nodev = 4096, 2, 4
        mount("tmpfs", "/run", "tmpfs", ms_nosuid | ms_nodev, "mode=755")
        for sub in ("sshd", "netns", "lock", "ctrhost"):
            os.makedirs(f"/run/{sub}", mode=0o755, exist_ok=True)
        mount(self.lab.hdir(host, "lib"), HOST_LIB, None, ms_bind, None)
        mount(self.lab.hdir(host, "hosts"), "/etc/hosts", None, ms_bind, None)
        mount(self.lab.hdir(host, "hostname"), "/etc/hostname", None, ms_bind, None)
        socket.sethostname(host)
        os.chdir("/")
        if boot:
            self.boot_services(host)
        os.execv(SSHD, [SSHD, "-D", "-e", "-f", self.lab.hdir(host, "sshd_config")])
