# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab (scripts/lab): hosts reached over real SSH, isolated /run,
/var/lib/ctrhost and hostname, host-to-host trust, reboot, and a down that
leaves nothing behind. Effects are read from /proc, `ip` and the filesystem."""

import glob
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import time

import pytest
from lab import Lab

pytestmark = pytest.mark.lab


def subnet_of(name):
    digest = hashlib.sha256(f"ctrhost-lab:{name}".encode()).digest()
    return f"10.{100 + digest[0] % 100}.{digest[1]}."


def ns_inode(pid, kind="net"):
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def live_pids():
    """Pids of processes that exist and are not zombies."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    data = fh.read()
            except OSError:
                continue
            if data[data.rindex(")") + 2] != "Z":
                out.append(int(entry))
    return out


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def main_ns(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def lt():
    """A private lab of 2 hosts for this module, with a name (and so a subnet)
    no other lab on the machine uses."""
    used = set()
    for ns in os.listdir("/run/netns") if os.path.isdir("/run/netns") else []:
        m = re.match(r"^ctrhost-([a-z0-9]+)-ctl$", ns)
        if m:
            used.add(subnet_of(m.group(1)))
    name = next(n for n in (f"tl{(os.getpid() + i) % 100000}" for i in range(1000))
                if subnet_of(n) not in used and not os.path.exists(f"/run/netns/ctrhost-{n}-ctl"))
    lab = Lab(name, 2)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()
        shutil.rmtree(lab.dir, ignore_errors=True)


def test_shared_lab_fixture(lab):
    names = [f"{lab.name}1", f"{lab.name}2"]
    assert lab.hosts == names
    assert {h: r["ping"] for h, r in lab.ansible("all", "ping").items()} == dict.fromkeys(names, "pong")


def test_inventory_describes_hosts(lt):
    h1, h2 = lt.hosts
    assert (h1, h2) == (f"{lt.name}1", f"{lt.name}2")
    inventory_cmd = os.path.join(os.path.dirname(lt.dir), ".venv", "bin", "ansible-inventory")
    hostvars = json.loads(main_ns(inventory_cmd, "-i", lt.inventory, "--host", h1))
    state = lt.host(h1)
    assert hostvars["ansible_host"] == state["address"] == hostvars["ctrhost_address"]
    assert hostvars["ctrhost_address6"] == state["address6"]
    assert state["address"].startswith(subnet_of(lt.name)) and state["address"].endswith(".11")
    assert hostvars["ansible_user"] == "root"
    assert hostvars["ctrhost_lab"] is True
    assert hostvars["ansible_ssh_private_key_file"] == os.path.join(lt.dir, "id_ed25519")
    assert os.path.isabs(hostvars["ansible_python_interpreter"])
    groups = json.loads(main_ns(inventory_cmd, "-i", lt.inventory, "--list"))
    assert sorted(groups["ctrhost_hosts"]["hosts"]) == [h1, h2]


def test_ansible_ping_over_real_ssh(lt):
    results = lt.ansible("all", "ping")
    assert {h: r.get("ping") for h, r in results.items()} == {h: "pong" for h in lt.hosts}
    for host in lt.hosts:  # the hosts' own sshd saw the controller log in with the lab key
        with open(os.path.join(lt.dir, "hosts", host, "sshd.log")) as fh:
            log = fh.read()
        assert re.search(rf"Accepted publickey for root from {re.escape(subnet_of(lt.name))}1 ", log)


def test_hosts_reach_each_other_by_name_and_ipv6(lt):
    h1, h2 = lt.hosts
    ssh = ["ssh", "-F", "/var/lib/ctrhost/ssh/config", "-o", "BatchMode=yes"]
    assert lt.host_exec(h1, [*ssh, f"root@{h2}", "hostname"]).stdout.strip() == h2
    assert lt.host_exec(h2, [*ssh, f"root@{h1}", "hostname"]).stdout.strip() == h1
    v6 = lt.host(h2)["address6"]
    assert lt.host_exec(h1, [*ssh, f"root@{v6}", "hostname"]).stdout.strip() == h2
    # the trust lives in each host's private /var/lib/ctrhost, not in root's ~/.ssh
    key = lt.host_exec(h1, "stat -c %a /var/lib/ctrhost/ssh/id_ed25519").stdout.strip()
    assert key == "600"


def test_run_and_lib_are_private(lt):
    h1, h2 = lt.hosts
    probe = f"lab-probe-{os.getpid()}"
    lt.host_exec(h1, f"echo one > /run/{probe} && echo one > /var/lib/ctrhost/{probe}")
    assert not os.path.exists(f"/run/{probe}")
    assert not os.path.exists(f"/var/lib/ctrhost/{probe}")
    with open(os.path.join(lt.dir, "hosts", h1, "lib", probe)) as fh:
        assert fh.read() == "one\n"
    seen = lt.host_exec(h2, f"ls /run/{probe} /var/lib/ctrhost/{probe}", check=False)
    assert seen.returncode != 0
    mounts = lt.host_exec(h1, "cat /proc/self/mountinfo").stdout
    run_mount = [line for line in mounts.splitlines() if line.split()[4] == "/run"]
    assert run_mount and " - tmpfs " in run_mount[0]
    # nothing of the machine's /run (other labs' netns files) leaks in
    assert not [line for line in mounts.splitlines() if line.split()[4].startswith("/run/")]
    assert lt.host_exec(h1, "ls -A /run/netns").stdout.strip() == ""
    resolved = set(lt.host_exec(h1, "getent ahosts " + h2).stdout.split())
    assert {lt.host(h2)["address"], lt.host(h2)["address6"]} <= resolved


def test_hostname_and_namespaces_differ(lt):
    h1, h2 = lt.hosts
    assert lt.host_exec(h1, "hostname").stdout.strip() == h1
    assert lt.host_exec(h1, "cat /etc/hostname").stdout.strip() == h1
    assert socket.gethostname() != h1
    pid1, pid2 = lt.host(h1)["pid"], lt.host(h2)["pid"]
    for kind in ("net", "mnt", "uts"):
        assert ns_inode(pid1, kind) not in (ns_inode(1, kind), ns_inode(os.getpid(), kind))
        assert ns_inode(pid1, kind) != ns_inode(pid2, kind)
    start = time.monotonic()
    fqdn = lt.host_exec(h1, ["python3", "-c", "import socket; print(socket.getfqdn())"])
    assert fqdn.stdout.strip() == h1 and time.monotonic() - start < 3


def test_no_private_address_in_main_netns(lt):
    assert subnet_of(lt.name) not in main_ns("ip", "-o", "addr", "show")
    assert lt.name not in main_ns("ip", "-o", "link", "show")
    names = main_ns("ip", "netns", "list")
    assert f"ctrhost-{lt.name}-ctl" in names
    bridge = main_ns("ip", "-n", f"ctrhost-{lt.name}-ctl", "-o", "addr", "show", f"br-{lt.name}")
    assert f"inet {subnet_of(lt.name)}1/24" in bridge


def test_up_again_is_a_fast_noop(lt):
    before = {h: r["pid"] for h, r in lt.state()["hosts"].items()}
    start = time.monotonic()
    lt.up()
    assert time.monotonic() - start < 2
    assert {h: r["pid"] for h, r in lt.state()["hosts"].items()} == before
    other = Lab(lt.name, 3).script("up", "3", check=False)
    assert other.returncode != 0 and "down" in other.stderr


def test_reboot_kills_everything_keeps_disk(lt):
    h1, h2 = lt.hosts
    old = lt.host(h2)
    ssh = ["ssh", "-F", "/var/lib/ctrhost/ssh/config", "-o", "BatchMode=yes", f"root@{h2}", "true"]
    lt.host_exec(h1, ssh)  # h1 and the controller now have h2 in their neighbour caches
    lt.ansible(h2, "ping")
    lt.host_exec(h2, "echo x > /run/marker; echo y > /var/lib/ctrhost/marker; "
                     "ip link add probe0 type dummy; "
                     "mkdir -p /sys/fs/cgroup/pids/ctrhost/$(hostname)/c1; "
                     "setsid sleep 4242 </dev/null >/dev/null 2>&1 & "
                     "ip netns add stray && "
                     "setsid ip netns exec stray sleep 4444 </dev/null >/dev/null 2>&1 & "
                     "setsid unshare -n -m sh -c 'echo $$ > /sys/fs/cgroup/pids/ctrhost/'$(hostname)"
                     "'/c1/cgroup.procs; exec sleep 4343' </dev/null >/dev/null 2>&1 & sleep 0.2")
    strays = [p for p in live_pids()
              if cmdline(p).strip() in ("sleep 4242", "sleep 4343", "sleep 4444")]
    assert len(strays) == 3
    lt.reboot(h2)
    new = lt.host(h2)
    assert new["running"] and new["pid"] != old["pid"]
    assert (new["address"], new["address6"]) == (old["address"], old["address6"])
    assert not [p for p in strays if p in live_pids()]
    assert not os.path.exists(f"/sys/fs/cgroup/pids/ctrhost/{h2}")
    assert lt.host_exec(h2, "cat /var/lib/ctrhost/marker").stdout == "y\n"
    assert lt.host_exec(h2, "ls /run/marker", check=False).returncode != 0
    assert "probe0" not in lt.host_exec(h2, "ip -o link").stdout
    assert lt.host(h1)["pid"] == lt.state()["hosts"][h1]["pid"]
    start = time.monotonic()  # reachable again at once, from the controller and from h1
    assert lt.ansible(h2, "ping")[h2]["ping"] == "pong"
    lt.host_exec(h1, ssh)
    assert time.monotonic() - start < 20


def test_subnet_collision_is_refused(lt):
    mine = subnet_of(lt.name)
    twin = next(n for n in (f"c{i}" for i in range(10 ** 6)) if n != lt.name and subnet_of(n) == mine)
    other = Lab(twin, 1)
    try:
        proc = other.script("up", "1", check=False)
        assert proc.returncode != 0 and "subnet" in proc.stderr
        assert f"ctrhost-{twin}-" not in main_ns("ip", "netns", "list")
    finally:
        other.down()
        shutil.rmtree(other.dir, ignore_errors=True)


def test_down_leaves_nothing_and_up_works_again(lt):
    lt.ansible("all", "ping")  # leaves ssh ControlPersist masters on the controller side
    state = lt.state()
    ctl = f"ctrhost-{lt.name}-ctl"
    ctl_ino = os.stat(f"/run/netns/{ctl}").st_ino
    ctl_pids = [p for p in live_pids() if ns_inode(p) == ctl_ino]
    sshd = [r["pid"] for r in state["hosts"].values()]
    assert ctl_pids and all(p in live_pids() for p in sshd)
    lt.down()
    assert f"ctrhost-{lt.name}-" not in main_ns("ip", "netns", "list")
    with open("/proc/self/mountinfo") as fh:
        mounts = fh.read()
    assert lt.dir not in mounts and f"ctrhost-{lt.name}-" not in mounts
    assert lt.name not in main_ns("ip", "-o", "link", "show")
    assert subnet_of(lt.name) not in main_ns("ip", "-o", "addr", "show")
    alive = live_pids()
    assert not [p for p in sshd + ctl_pids if p in alive]
    assert not [p for p in alive if lt.dir in cmdline(p)]
    assert not [d for h in state["hosts"] for d in
                glob.glob(f"/sys/fs/cgroup/*/ctrhost/{h}")]
    assert lt.state()["up"] is False
    # nothing left behind gets in the way of a second up
    lt.up()
    assert lt.ansible("all", "ping")
