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
import re
import subprocess

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
    assert "acgone" in strict.stderr and "unreachable" in strict.stderr
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
