# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``containers`` inventory and the ``container`` connection over real SSH on the lab.

Containers from a template with Python (scripts/make-python-template) run on the lab
hosts; the inventory is read with ``ansible-inventory`` from the lab's own inventory
and tasks run inside the containers with ad hoc ``ansible``. Every claim is checked by
another path: the runtime's state and the cgroup files on the host, namespace inodes in
/proc, file content read through the host's view of the rootfs, sha256 of fetched files.
"""

import hashlib
import json
import os
import pwd
import re
import subprocess
import sys

import pytest

from lab import ROOT, VENV_BIN

pytestmark = [pytest.mark.lab, pytest.mark.slow]

NAMES = dict(run1="acrun1", run2="acrun2", stop="acstop1")
SETUP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "inventory_setup.yml")
RUNC = "runc --root /run/ctrhost/runtime/runc"


@pytest.fixture(scope="module")
def fleet(lab, tmp_path_factory):
    """Python template + bridge on both lab hosts; acrun1 runs on host 1, acrun2 on host 2,
    acstop1 is created stopped on host 1. Removed again at the end."""
    template = subprocess.run([os.path.join(ROOT, "scripts", "make-python-template")],
                              capture_output=True, text=True, check=True).stdout.strip()
    h1, h2 = lab.hosts[:2]
    run = lab.playbook(SETUP, extra_vars=dict(ac_template=template, ac_hosts=[h1, h2], ac_names=NAMES,
                                              ac_state="present"))
    assert run.failed == 0
    work = tmp_path_factory.mktemp("acinv")
    yield dict(h1=h1, h2=h2, work=work)
    lab.playbook(SETUP, extra_vars=dict(ac_template=template, ac_hosts=[h1, h2], ac_names=NAMES,
                                        ac_state="absent"), expect_rc=None)


def config(fleet, leaf, **options):
    path = fleet["work"] / leaf
    path.write_text(json.dumps(dict(plugin="ctrhost.fleet.containers", **options)))
    return str(path)


def plain(value):
    """JSON of ``ansible-inventory --list`` without the unsafe-string wrappers."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def inventory(lab, *sources, extra=()):
    cmd = [os.path.join(VENV_BIN, "ansible-inventory"), "-i", lab.inventory]
    for source in sources:
        cmd += ["-i", source]
    proc = lab.exec(cmd + ["--list", *extra])
    return plain(json.loads(proc.stdout)), proc.stderr


def adhoc(lab, source, pattern, module, args=None, env=None, check=True):
    """``ansible PATTERN -m MODULE`` through both inventories: {host: result}."""
    cmd = [os.path.join(VENV_BIN, "ansible"), "-i", lab.inventory, "-i", source, pattern, "-m", module]
    if args is not None:
        cmd += ["-a", args]
    proc = lab.exec(cmd, check=False, env=dict(lab._json_env(), **(env or {})))
    start = proc.stdout.find("{")
    data = json.loads(proc.stdout[start:]) if start >= 0 else {}
    out = {h: r for play in data.get("plays", []) for task in play["tasks"]
           for h, r in task["hosts"].items()}
    if check:
        assert proc.returncode == 0 and out, proc.stdout + proc.stderr
    return out


def host_pid(lab, host, name):
    state = json.loads(lab.host_exec(host, f"{RUNC} state {name}").stdout)
    return state["pid"]


def test_inventory_lists_containers_with_vars_and_groups(lab, fleet):
    data, _ = inventory(lab, config(fleet, "a.containers.yml"))
    hv = data["_meta"]["hostvars"]
    h1, h2 = fleet["h1"], fleet["h2"]
    for name in NAMES.values():
        assert name in hv, sorted(hv)
    run1 = hv[NAMES["run1"]]
    assert run1["ctrhost_container_host"] == h1
    assert hv[NAMES["run2"]]["ctrhost_container_host"] == h2
    assert run1["ctrhost_container_state"] == "running"
    assert hv[NAMES["stop"]]["ctrhost_container_state"] in ("stopped", "created")
    # the pid the runtime reports on the host, the address netlink reads in the netns
    assert run1["ctrhost_container_pid"] == host_pid(lab, h1, NAMES["run1"])
    assert run1["ctrhost_container_ipv4"] == ["10.79.1.21"]
    assert run1["ctrhost_container_limits"]["memory"] == 128 * 1024 * 1024
    # the host's SSH connection, for the connection plugin
    assert run1["ansible_connection"] == "ctrhost.fleet.container"
    assert run1["ansible_host"] == lab.host(h1)["address"]

    def members(group):
        return set(data.get(group, {}).get("hosts", []))
    assert members("ctrhost_host_" + h1) == {NAMES["run1"], NAMES["stop"]}
    assert members("ctrhost_state_running") >= {NAMES["run1"], NAMES["run2"]}
    assert NAMES["stop"] not in members("ctrhost_state_running")
    assert members("ctrhost_template_acpython") == set(NAMES.values())


def test_inventory_is_constructable(lab, fleet):
    source = config(fleet, "b.containers.yml", states=["running"],
                    compose=dict(ac_first_ip="ctrhost_container_ipv4 | first"),
                    groups=dict(ac_small="ctrhost_container_limits.memory <= 134217728"),
                    keyed_groups=[dict(key="ctrhost_container_runtime", prefix="rt")])
    data, _ = inventory(lab, source)
    hv = data["_meta"]["hostvars"]
    assert NAMES["stop"] not in hv  # states filter
    assert hv[NAMES["run2"]]["ac_first_ip"] == "10.79.2.21"
    assert set(data["ac_small"]["hosts"]) == {NAMES["run1"]}
    assert set(data["rt_runc"]["hosts"]) == {NAMES["run1"], NAMES["run2"]}


def test_inventory_cache_serves_until_flushed(lab, fleet):
    cache_dir = fleet["work"] / "cache"
    source = config(fleet, "c.containers.yml", cache=True, cache_plugin="ansible.builtin.jsonfile",
                    cache_connection=str(cache_dir), cache_timeout=3600)
    first, _ = inventory(lab, source)
    assert NAMES["run1"] in first["_meta"]["hostvars"]
    assert os.listdir(cache_dir), "no cache file written"
    lab.host_exec(fleet["h1"], f"{RUNC} kill {NAMES['run1']} KILL; sleep 0.5")
    try:
        cached, _ = inventory(lab, source)
        assert cached["_meta"]["hostvars"][NAMES["run1"]]["ctrhost_container_state"] == "running"
        fresh, _ = inventory(lab, source, extra=["--flush-cache"])
        assert fresh["_meta"]["hostvars"][NAMES["run1"]]["ctrhost_container_state"] != "running"
    finally:
        lab.playbook(SETUP, extra_vars=dict(ac_hosts=[fleet["h1"], fleet["h2"]], ac_names=NAMES,
                                            ac_state="present", ac_template=""))


def test_unreachable_host_is_a_warning_or_with_strict_an_error(lab, fleet):
    extra = fleet["work"] / "extra.ini"
    extra.write_text("[ctrhost_hosts]\nacgone ansible_host=192.0.2.1 ansible_ssh_common_args="
                     "'-o ConnectTimeout=1'\n")
    cmd = [os.path.join(VENV_BIN, "ansible-inventory"), "-i", lab.inventory, "-i", str(extra)]
    lenient = lab.exec(cmd + ["-i", config(fleet, "d.containers.yml", timeout=5), "--list"])
    assert NAMES["run1"] in json.loads(lenient.stdout)["_meta"]["hostvars"]
    assert "acgone" in lenient.stderr and "left out" in lenient.stderr
    strict = lab.exec(cmd + ["-i", config(fleet, "e.containers.yml", timeout=5, strict=True), "--list"],
                      check=False)
    assert "acgone: unreachable, its containers could not be read" in strict.stderr
    assert NAMES["run1"] not in strict.stdout


@pytest.mark.parametrize("pipelining", ["1", "0"])
def test_connection_runs_modules_inside_the_container(lab, fleet, pipelining):
    source = config(fleet, "f.containers.yml", states=["running"])
    env = dict(ANSIBLE_PIPELINING=pipelining)
    name, h1 = NAMES["run1"], fleet["h1"]
    pid = host_pid(lab, h1, name)

    raw = adhoc(lab, source, name, "raw",
                "for n in net mnt cgroup; do readlink /proc/self/ns/$n; done; cat /proc/self/cgroup",
                env=env)[name]
    host_view = lab.host_exec(h1, f"for n in net mnt cgroup; do readlink /proc/{pid}/ns/$n; done")
    lines = raw["stdout"].replace("\r", "").splitlines()
    assert lines[:3] == host_view.stdout.splitlines()  # the container's namespaces
    # at the root of the container's cgroup namespace, i.e. in the container's cgroups
    # (a process outside them would see a path such as /../..)
    assert lines[3:] and all(line.endswith(":/") for line in lines[3:]), lines

    facts = adhoc(lab, source, name, "setup", "gather_subset=!all,network", env=env)[name]["ansible_facts"]
    assert facts["ansible_hostname"] == name
    assert "10.79.1.21" in json.dumps(facts.get("ansible_eth0", {}))

    content = f"written through {name} with pipelining={pipelining}\n"
    local = fleet["work"] / f"payload-{pipelining}.txt"
    local.write_text(content)
    dest = f"/root/ac-{pipelining}.txt"
    first = adhoc(lab, source, name, "copy", f"src={local} dest={dest} mode=0640", env=env)[name]
    again = adhoc(lab, source, name, "copy", f"src={local} dest={dest} mode=0640", env=env)[name]
    assert first["changed"] is True and again["changed"] is False
    # the host's view of the container's rootfs holds it
    on_host = lab.host_exec(h1, f"cat /var/lib/ctrhost/containers/{name}/rootfs{dest}").stdout
    assert on_host == content

    fetched_dir = fleet["work"] / f"fetched-{pipelining}"
    adhoc(lab, source, name, "fetch", f"src=/usr/bin/python3 dest={fetched_dir}/ flat=true", env=env)
    in_ctr = lab.host_exec(h1, f"sha256sum /var/lib/ctrhost/containers/{name}/rootfs/usr/bin/python3")
    with open(fetched_dir / "python3", "rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == in_ctr.stdout.split()[0]

    script = fleet["work"] / "ac-script.sh"
    script.write_text("#!/bin/sh\necho \"script in $(hostname) args=$*\"\n")
    out = adhoc(lab, source, name, "script", f"{script} one two", env=env)[name]
    assert out["stdout"].strip() == f"script in {name} args=one two"


def test_nsenter_method_enters_the_namespaces(lab, fleet):
    source = config(fleet, "g.containers.yml", states=["running"],
                    compose=dict(ctrhost_container_exec_method="'nsenter'"))
    name, h2 = NAMES["run2"], fleet["h2"]
    pid = host_pid(lab, h2, name)
    raw = adhoc(lab, source, name, "raw", "for n in net pid mnt; do readlink /proc/self/ns/$n; done")[name]
    host_view = lab.host_exec(h2, f"readlink /proc/{pid}/ns/net /proc/{pid}/ns/pid /proc/{pid}/ns/mnt")
    assert raw["stdout"].replace("\r", "").split() == host_view.stdout.split()


def test_stopped_container_fails_clearly(lab, fleet):
    source = config(fleet, "h.containers.yml")
    out = adhoc(lab, source, NAMES["stop"], "raw", "true", check=False)[NAMES["stop"]]
    assert out.get("unreachable"), out
    assert re.search(r"container %s is (stopped|created) on %s, not running" % (NAMES["stop"], fleet["h1"]),
                     out["msg"]), out


def test_template_and_checkpoint_info_on_a_lab_host(lab, fleet):
    h1, name = fleet["h1"], NAMES["run1"]
    [tpl] = lab.ansible(h1, "ctrhost.fleet.template_info", {"name": ["acpython"]})[h1]["templates"]
    assert tpl["users"] == sorted([NAMES["run1"], NAMES["stop"]]) and tpl["in_use"]
    installed = json.loads(lab.host_exec(h1, "cat /var/lib/ctrhost/templates/acpython/template.json").stdout)
    assert tpl["sha256"] == installed["sha256"] and tpl["disk_usage"] > 10 * 1024 * 1024

    taken = lab.ansible(h1, "ctrhost.fleet.container_checkpoint", {"name": name, "leave_running": True})[h1]
    try:
        info = lab.ansible(h1, "ctrhost.fleet.checkpoint_info", {"name": [name], "checksum": True})[h1]
        [ckpt] = info["checkpoints"]
        assert ckpt["id"] == taken["id"] and ckpt["latest"] and ckpt["container_exists"]
        assert ckpt["restorable_here"] and ckpt["template_sha256"] == tpl["sha256"]
        on_disk = lab.host_exec(h1, f"find {ckpt['path']} -type f -printf '%s\\n'").stdout.split()
        assert ckpt["disk_usage"] == sum(int(n) for n in on_disk) == info["total_size"]
        assert re.fullmatch(r"[0-9a-f]{64}", ckpt["sha256"])
        again = lab.ansible(h1, "ctrhost.fleet.template_info", {"name": ["acpython"]})[h1]["templates"][0]
        assert again["checkpoints"] == [f"{name}/{taken['id']}"]
    finally:
        lab.ansible(h1, "ctrhost.fleet.container_checkpoint",
                    {"name": name, "id": taken["id"], "state": "absent"})


@pytest.mark.parametrize("method", ["runtime", "nsenter"])
def test_connection_joins_the_time_namespace_after_a_restore(lab, fleet, method):
    """A restore gives the container clock offsets; commands through the connection read
    the container's clocks (its init's time namespace), not the host's."""
    h1, name = fleet["h1"], NAMES["run1"]
    taken = lab.ansible(h1, "ctrhost.fleet.container_checkpoint", {"name": name})[h1]
    try:
        lab.host_exec(h1, "sleep 3")
        lab.ansible(h1, "ctrhost.fleet.container_restore", {"name": name, "id": taken["id"]})
    finally:
        lab.ansible(h1, "ctrhost.fleet.container_checkpoint",
                    {"name": name, "id": taken["id"], "state": "absent"})
    pid = host_pid(lab, h1, name)
    source = config(fleet, "t%s.containers.yml" % method, states=["running"],
                    compose=dict(ctrhost_container_exec_method="'%s'" % method))
    raw = adhoc(lab, source, name, "raw", "readlink /proc/self/ns/time; cut -d' ' -f1 /proc/uptime")[name]
    ns, uptime = raw["stdout"].replace("\r", "").split()
    init = lab.host_exec(h1, f"readlink /proc/{pid}/ns/time; "
                             f"nsenter --time=/proc/{pid}/ns/time cut -d' ' -f1 /proc/uptime; "
                             "cut -d' ' -f1 /proc/uptime").stdout.split()
    assert ns == init[0]  # the init's time namespace
    assert abs(float(uptime) - float(init[1])) < 2.0, (uptime, init)  # the container's clock ...
    assert float(init[2]) - float(uptime) > 2.5, (uptime, init)  # ... behind the host's by the pause


ADMIN = "ctrhadm"


@pytest.fixture(scope="module")
def sudo_user(tmp_path_factory):
    """A non-root account with passwordless sudo, as on a host set up for Ansible (the lab
    hosts share this machine's /etc; the lab's key is authorized for every account)."""
    home = tmp_path_factory.mktemp("admin-home")
    sudoers = "/etc/sudoers.d/ctrhost-test-admin"
    subprocess.run(["userdel", "-f", ADMIN], capture_output=True)  # left by an interrupted run
    subprocess.run(["useradd", "--home-dir", str(home), "--shell", "/bin/sh", "--no-create-home", ADMIN],
                   check=True, capture_output=True)
    try:
        subprocess.run(["usermod", "-p", "*", ADMIN], check=True)  # no password, not locked
        account = pwd.getpwnam(ADMIN)
        os.chown(home, account.pw_uid, account.pw_gid)
        with open(sudoers, "w") as handle:
            handle.write("%s ALL=(ALL) NOPASSWD: ALL\n" % ADMIN)
        os.chmod(sudoers, 0o440)
        yield ADMIN
    finally:
        if os.path.exists(sudoers):
            os.unlink(sudoers)
        subprocess.run(["userdel", "-f", ADMIN], capture_output=True)  # its ssh masters may linger


def inventory_dir(lab, fleet, sudo_user, jump):
    """An inventory directory as users keep one: hosts in an INI file with their addresses
    only, every connection setting in group_vars: a sudo user, its key, and a ProxyJump
    through lab host ``jump`` named in an ssh config file. ssh runs through a wrapper that
    logs its argv, one file per call in the directory returned."""
    inv = fleet["work"] / "inv"
    (inv / "group_vars").mkdir(parents=True, exist_ok=True)
    hosts = ["[ctrhost_hosts]"] + ["%s ansible_host=%s" % (h, lab.host(h)["address"])
                                   for h in (fleet["h1"], fleet["h2"])]
    (inv / "hosts.ini").write_text("\n".join(hosts) + "\n")
    key = os.path.join(lab.dir, "id_ed25519")
    ssh_config = fleet["work"] / "ssh_config"
    ssh_config.write_text("Host ctrhost-jump\n  HostName %s\n  User root\n  IdentityFile %s\n"
                          "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
                          "  IdentitiesOnly yes\n  LogLevel ERROR\n" % (lab.host(jump)["address"], key))
    argv_log = fleet["work"] / "ssh-argv"
    argv_log.mkdir(exist_ok=True)
    wrapper = fleet["work"] / "ssh-logged"
    # one file per call: the plugin reaches its hosts at once, and appends to one file interleave
    wrapper.write_text('#!/bin/sh\nprintf "%%s" "$*" | tr "\\n" " " > %s/$$\nexec ssh "$@"\n' % argv_log)
    wrapper.chmod(0o755)
    (inv / "group_vars" / "ctrhost_hosts.yml").write_text(json.dumps(dict(
        ansible_user=sudo_user, ansible_become=True, ansible_ssh_private_key_file=key,
        ansible_ssh_executable=str(wrapper),
        ansible_ssh_common_args="-F %s -o ProxyJump=ctrhost-jump" % ssh_config,
        ansible_python_interpreter=os.path.join(ROOT, ".venv", "bin", "python"))))
    return inv, argv_log


def test_inventory_follows_group_vars_a_sudo_user_and_a_proxyjump(lab, fleet, sudo_user):
    """The container hosts' connection comes from group_vars only: the plugin reads them as a
    task would (vars plugins), logs in as the sudo user through the jump host and escalates."""
    h1, h2 = fleet["h1"], fleet["h2"]
    inv, argv_log = inventory_dir(lab, fleet, sudo_user, jump=h1)
    source = config(fleet, "g.containers.yml")
    sshd_log = os.path.join(lab.dir, "hosts", h2, "sshd.log")
    before = os.path.getsize(sshd_log) if os.path.exists(sshd_log) else 0
    proc = lab.exec([os.path.join(VENV_BIN, "ansible-inventory"), "-i", str(inv), "-i", source, "--list"])
    data = plain(json.loads(proc.stdout))
    hv = data["_meta"]["hostvars"]
    assert "left out" not in proc.stderr, proc.stderr
    assert hv[NAMES["run1"]]["ctrhost_container_host"] == h1
    assert hv[NAMES["run2"]]["ctrhost_container_host"] == h2
    assert hv[NAMES["run2"]]["ctrhost_container_pid"] == host_pid(lab, h2, NAMES["run2"])
    # the ssh it ran had the group_vars' user, jump and key, twice (one per host)
    logged = [path.read_text() for path in sorted(argv_log.iterdir())]
    calls = [call for call in logged if "ctrhost-inventory" in call]
    assert len(calls) == 2, "\n".join(logged)[-3000:]
    for call in calls:
        assert "User=" + sudo_user in call or "-l %s" % sudo_user in call or "User=\"%s\"" % sudo_user in call, call
        assert "ProxyJump=ctrhost-jump" in call, call
    # the independent side: h2's sshd saw the sudo user arrive from the jump host's address
    if os.path.exists(sshd_log):
        with open(sshd_log) as handle:
            handle.seek(before)
            seen = handle.read()
        if "Accepted" in seen:
            assert "for %s from %s" % (sudo_user, lab.host(h1)["address"]) in seen, seen[-2000:]


def test_inventory_filters_include_and_exclude(lab, fleet):
    source = config(fleet, "f.containers.yml", filters=[
        dict(exclude="ctrhost_container_host == '%s'" % fleet["h2"]),
        dict(include="ctrhost_container_state == 'running'"),
        dict(exclude=True)])
    data, err = inventory(lab, source)
    containers = set(data["_meta"]["hostvars"]) - {fleet["h1"], fleet["h2"]}
    assert containers == {NAMES["run1"]}, err
    bad = config(fleet, "fb.containers.yml", filters=[dict(include="true", exclude="true")])
    proc = lab.exec([os.path.join(VENV_BIN, "ansible-inventory"), "-i", lab.inventory, "-i", bad, "--list"],
                    check=False)
    # Ansible turns a source that fails to parse into a warning (an error with
    # ANSIBLE_INVENTORY_UNPARSED_FAILED); no container of it is listed
    assert "filters[1]: expected exactly one of include, exclude, got ['exclude', 'include']" in proc.stderr
    assert NAMES["run1"] not in json.loads(proc.stdout)["_meta"]["hostvars"]


REFRESH = """---
- name: Stop a container on its host
  hosts: "{h1}"
  gather_facts: false
  tasks:
    - name: Before, from the cached inventory
      ansible.builtin.assert:
        that: hostvars['{run1}'].ctrhost_container_state == 'running'
    - name: Stopped
      ctrhost.fleet.container:
        name: "{run1}"
        state: stopped
    - name: Read the container hosts again
      ansible.builtin.meta: refresh_inventory
    - name: After, the inventory says so
      ansible.builtin.assert:
        that: hostvars['{run1}'].ctrhost_container_state != 'running'
        fail_msg: "still {{{{ hostvars['{run1}'].ctrhost_container_state }}}}"
"""


def test_refresh_inventory_reads_the_hosts_again_past_the_cache(lab, fleet):
    """What docs say to do after the collection's own moves: ``meta: refresh_inventory``
    bypasses the cache and writes the fresh reports into it."""
    cache_dir = fleet["work"] / "refresh-cache"
    source = config(fleet, "r.containers.yml", cache=True, cache_plugin="ansible.builtin.jsonfile",
                    cache_connection=str(cache_dir), cache_timeout=3600)
    first, _ = inventory(lab, source)  # fills the cache
    assert first["_meta"]["hostvars"][NAMES["run1"]]["ctrhost_container_state"] == "running"
    play = fleet["work"] / "refresh.yml"
    play.write_text(REFRESH.format(h1=fleet["h1"], run1=NAMES["run1"]))
    try:
        proc = lab.exec([os.path.join(VENV_BIN, "ansible-playbook"), "-i", lab.inventory, "-i", source,
                         str(play)], check=False)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        cached, _ = inventory(lab, source)  # the cache holds the refreshed report
        assert cached["_meta"]["hostvars"][NAMES["run1"]]["ctrhost_container_state"] != "running"
    finally:
        lab.playbook(SETUP, extra_vars=dict(ac_hosts=[fleet["h1"], fleet["h2"]], ac_names=NAMES,
                                            ac_state="present", ac_template=""))


MAXRSS = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
          "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")


def test_connection_runs_as_a_user_inside_and_streams_files(lab, fleet):
    """``ctrhost_container_user``: command, copy and fetch as a non-root user of the
    container, checked on the host (uid through the container's map, owner of the file in
    the host's view of its rootfs); a 192 MiB file copied in and fetched back without the
    controller holding it in memory."""
    h1, name = fleet["h1"], NAMES["run1"]
    source = config(fleet, "u.containers.yml", states=["running"])
    adhoc(lab, source, name, "raw", "grep -q '^app:' /etc/passwd || echo 'app:x:1001:1001::/home/app:/bin/sh' "
          ">> /etc/passwd; mkdir -p /home/app && chown 1001:1001 /home/app && chmod 0750 /home/app")
    env = {}
    extra = ["-e", "ctrhost_container_user=app"]

    def run(module, args):
        cmd = [os.path.join(VENV_BIN, "ansible"), "-i", lab.inventory, "-i", source, name, "-m", module,
               "-a", args] + extra
        proc = lab.exec(cmd, check=False, env=dict(lab._json_env(), **env))
        data = json.loads(proc.stdout[proc.stdout.find("{"):])
        return data["plays"][0]["tasks"][0]["hosts"][name]

    ids = run("command", "id")
    assert ids.get("stdout", "").startswith("uid=1001(app) gid=1001"), ids
    pwd = run("command", "pwd")
    assert pwd.get("stdout") == "/home/app", pwd
    uid_map = lab.host_exec(h1, "cat /proc/%d/uid_map" % host_pid(lab, h1, name)).stdout.split()
    host_uid = int(uid_map[1]) + 1001 - int(uid_map[0])

    big = fleet["work"] / "big.bin"
    with open(big, "wb") as handle:
        for i in range(192):
            handle.write(hashlib.sha256(b"%d" % i).digest() * 32768)
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    dest = "/home/app/big.bin"
    cmd = [sys.executable, "-c", MAXRSS, os.path.join(VENV_BIN, "ansible"), "-i", lab.inventory, "-i", source,
           name, "-m", "copy", "-a", "src=%s dest=%s mode=0600" % (big, dest)] + extra
    proc = lab.exec(cmd, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rss_kib = int(re.search(r"MAXRSS (\d+)", proc.stdout).group(1))
    assert rss_kib < 160 * 1024, "the copy held %d KiB: the file is not streamed" % rss_kib
    on_host = lab.host_exec(h1, "stat -c '%%u %%a' /var/lib/ctrhost/containers/%s/rootfs%s; "
                                "sha256sum /var/lib/ctrhost/containers/%s/rootfs%s" % (name, dest, name, dest)).stdout
    owner_mode, checksum = on_host.splitlines()
    assert owner_mode == "%d 600" % host_uid and checksum.split()[0] == digest

    back = fleet["work"] / "back"
    fetched = run("fetch", "src=%s dest=%s/ flat=true" % (dest, back))
    assert fetched.get("changed") and hashlib.sha256((back / "big.bin").read_bytes()).hexdigest() == digest
    denied = run("command", "cat /root/.profile /etc/shadow")
    assert denied.get("rc") != 0  # app is no root inside
    run("command", "rm -f %s" % dest)


MOVE = """---
- name: A container moved away while the inventory's cache still has it on {h1}
  hosts: "{h1}"
  gather_facts: false
  tasks:
    - name: Started on {h1}
      ctrhost.fleet.container:
        name: acmoved1
        template: acpython
        state: started
        command: [/bin/sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
    - name: Read into the cache
      ansible.builtin.meta: refresh_inventory
    - name: Moved to {h2}
      ctrhost.fleet.container_migrate:
        name: acmoved1
        dest: "{{{{ hostvars['{h2}'].ansible_host }}}}"
        mode: cold
"""


def test_a_container_moved_away_is_named_with_where_it_went(lab, fleet):
    """The cache still says host 1; the connection reaches host 1, finds the container gone
    and says where its move took it, from host 1's own record of the move."""
    h1, h2 = fleet["h1"], fleet["h2"]
    source = config(fleet, "m.containers.yml", cache=True, cache_plugin="ansible.builtin.jsonfile",
                    cache_connection=str(fleet["work"] / "moved-cache"), cache_timeout=3600)
    play = fleet["work"] / "moved.yml"
    play.write_text(MOVE.format(h1=h1, h2=h2))
    try:
        proc = lab.exec([os.path.join(VENV_BIN, "ansible-playbook"), "-i", lab.inventory, "-i", source,
                         str(play)], check=False)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert lab.host_exec(h2, f"{RUNC} state acmoved1").stdout.count('"running"') == 1
        out = adhoc(lab, source, "acmoved1", "raw", "true", check=False)["acmoved1"]
        assert out.get("unreachable"), out
        went = re.escape(lab.host(h2)["address"])
        assert re.search(r"container acmoved1 is not on %s: it was moved to %s;" % (h1, went), out["msg"]), out
    finally:
        for host in (h1, h2):
            adhoc(lab, lab.inventory, host, "ctrhost.fleet.container", "name=acmoved1 state=absent", check=False)
