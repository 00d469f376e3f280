# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Migration trust follows the inventory (the host role's trust tasks) on a 3-host lab.

Each host starts without a migration key (the lab's shared one is removed), so only what
the role authorizes lets a host in. The role runs on two hosts, then with ``--limit`` on
the third: SSH with the migrations' own client configuration (strict host key checking)
works from the third host to the first and back. The known hosts are the keys the hosts'
sshd really serves (read here from the lab's host key files). The second host then leaves
the inventory: its key is gone from the others and it is refused, a line an operator added
by hand stays, check mode changes nothing, and a second run changes nothing. That removal
runs limited to the first host and rotates its key (``ctrhost_trust_rotate``): the old key
is gone everywhere, the new one works both ways.
"""

import os

import pytest
from lab import Lab

pytestmark = [pytest.mark.lab, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

LAB = os.environ["CTRHOST_IT_LAB"] + "t" if os.environ.get("CTRHOST_IT_LAB") else "tru"
PLAYBOOK = os.path.join(os.path.dirname(__file__), "trust.yml")
SSH_DIR = "/var/lib/ctrhost/ssh"
MARK = "ctrhost.fleet migration trust"
MANUAL = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBhKq0rAvZ5d3Vqv2Xn2kM8G9l8wq0Yc0aB6a0j3lqkX "
          "operator@desk")


def migration_ssh(lab, src, dst, *opts):
    """SSH from ``src`` to ``dst`` the way migrations do (``ssh -F <root>/ssh/config``)."""
    return lab.host_exec(src, ["ssh", "-F", f"{SSH_DIR}/config", "-o", "BatchMode=yes", *opts,
                               dst, "true"], check=False, timeout=60)


def read(lab, host, name):
    return lab.host_exec(host, ["cat", f"{SSH_DIR}/{name}"]).stdout


def block_and_rest(text):
    """(lines inside the role's block, lines outside it)."""
    inside, rest, within = [], [], False
    for line in text.splitlines():
        if line.startswith("# BEGIN " + MARK):
            within = True
        elif line.startswith("# END " + MARK):
            within = False
        else:
            (inside if within else rest).append(line)
    return inside, rest


@pytest.fixture
def lab3():
    lab = Lab(LAB, 3)
    lab.down()
    lab.up()
    try:
        yield lab
    finally:
        lab.down()


def test_trust_follows_the_inventory(lab3, tmp_path):
    lab = lab3
    h1, h2, h3 = lab.hosts
    for host in (h1, h2, h3):
        lab.host_exec(host, ["rm", "-f", f"{SSH_DIR}/id_ed25519", f"{SSH_DIR}/id_ed25519.pub"])

    run = lab.playbook(PLAYBOOK, limit=f"{h1},{h2}")
    assert run.changed > 0
    keys = {h: lab.host_exec(h, ["cut", "-d", " ", "-f", "2", f"{SSH_DIR}/id_ed25519.pub"]).stdout.strip()
            for h in (h1, h2)}
    assert migration_ssh(lab, h1, h2).returncode == 0

    # the third host, added with --limit: trusted by the others and trusting them at once
    run = lab.playbook(PLAYBOOK, limit=h3)
    assert run.changed > 0
    keys[h3] = lab.host_exec(h3, ["cut", "-d", " ", "-f", "2", f"{SSH_DIR}/id_ed25519.pub"]).stdout.strip()
    assert len(set(keys.values())) == 3
    for src, dst in ((h3, h1), (h1, h3), (h2, h3)):
        proc = migration_ssh(lab, src, dst)
        assert proc.returncode == 0, f"{src} -> {dst}: {proc.stderr}"
        assert "StrictHostKeyChecking yes" in read(lab, src, "config")
    # strict: without the known hosts the role wrote, the same connection is refused
    proc = migration_ssh(lab, h3, h1, "-o", "UserKnownHostsFile=/dev/null")
    assert proc.returncode != 0 and "Host key verification failed" in proc.stderr
    # the known host keys are those the hosts' sshd serve (the lab's host key files)
    known = read(lab, h3, "known_hosts").splitlines()
    for host in (h1, h2, h3):
        with open(os.path.join(lab.dir, "hostkeys", f"{host}_ed25519_key.pub")) as fh:
            served = " ".join(fh.read().split()[:2])
        names = f"{host},{lab.host(host)['address']},"
        assert [line for line in known if line.startswith(names)] == [
            f"{names}{lab.host(host)['address6']} {served}"]

    # a key an operator authorized by hand, outside the role's block
    lab.host_exec(h1, f"echo '{MANUAL}' >> {SSH_DIR}/authorized_keys")

    # the second host leaves the inventory
    inventory = tmp_path / "inventory.ini"
    with open(lab.inventory) as fh:
        inventory.write_text("".join(line for line in fh if not line.startswith(h2 + " ")))
    # ... in a run limited to the first host, which rotates its key at the same time
    leave = dict(extra=("-i", str(inventory)), limit=h1, extra_vars={"ctrhost_trust_rotate": True})
    before = {h: read(lab, h, "authorized_keys") for h in (h1, h3)}
    run = lab.playbook(PLAYBOOK, check_mode=True, diff=True, **leave)
    assert run.changed > 0
    assert {h: read(lab, h, "authorized_keys") for h in (h1, h3)} == before  # check mode: nothing
    run = lab.playbook(PLAYBOOK, **leave)
    assert run.changed > 0
    old = keys[h1]
    keys[h1] = lab.host_exec(h1, ["cut", "-d", " ", "-f", "2", f"{SSH_DIR}/id_ed25519.pub"]).stdout.strip()
    assert keys[h1] != old
    for host in (h1, h3):
        inside, rest = block_and_rest(read(lab, host, "authorized_keys"))
        assert keys[h2] not in read(lab, host, "authorized_keys")
        assert old not in read(lab, host, "authorized_keys")
        assert sorted(line.split()[2] for line in inside) == sorted([keys[h1], keys[h3]])
        assert h2 not in read(lab, host, "known_hosts")
        if host == h1:
            assert MANUAL in rest
    proc = migration_ssh(lab, h2, h1)
    assert proc.returncode != 0 and "Permission denied" in proc.stderr
    for src, dst in ((h3, h1), (h1, h3)):
        assert migration_ssh(lab, src, dst).returncode == 0, f"{src} -> {dst} after the rotation"

    run = lab.playbook(PLAYBOOK, extra=("-i", str(inventory)))
    assert run.changed == 0, run.stdout[-3000:]
