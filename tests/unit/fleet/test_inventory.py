# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The containers inventory's library half: SSH command, reports -> hosts, groups, vars;
the host half run for real on a layout root with a stored spec; the bootstrap run for
real with ``python3 -c`` and the module_utils zip, as the inventory sends it."""

import json
import os
import shlex
import subprocess
import sys

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.host import report as _report
from ansible_collections.ctrhost.fleet.plugins.module_utils.fleet import inventory as _inventory
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.ship import payload


def ctr(name, state="running", template="busybox", ipv4="10.0.0.5/24", **extra):
    return dict(dict(name=name, state=state, pid=100 if state == "running" else None, template=template,
                     runtime="runc", hostname=name, autostart=False, created="2026-01-01T00:00:00+00:00",
                     limits=dict(memory=1 << 28), effective_limits=dict(memory=1 << 28),
                     interfaces=[dict(ifname="eth0", ipv4=ipv4, ipv6="fd00::5/64", mac=None, bridge="br0")]),
                **extra)


HOSTVARS = {"h1": dict(ansible_host="192.0.2.1", ansible_user="admin", ansible_port=2222,
                       ansible_ssh_private_key_file="/k", ansible_ssh_common_args="-o A=b -o 'C=d e'",
                       ansible_python_interpreter="/opt/py/bin/python", ctrhost_root="/srv/ctr",
                       unrelated="x"),
            "h2": {}}


@pytest.mark.parametrize("interp, expected", [
    ("/opt/py/bin/python", "/opt/py/bin/python"), ("auto_silent", "python3"), (None, "python3"),
    ("{{ discovered }}", "python3")])
def test_python_of(interp, expected):
    assert _inventory.python_of(dict(ansible_python_interpreter=interp)) == expected


def test_host_entries_vars_groups_and_connection():
    stopped = ctr("db.1", state="stopped", template="deb 12")
    reports = {"h1": dict(root="/srv/ctr", containers=[ctr("web1"), stopped]),
               "h2": dict(root="/var/lib/ctrhost", containers=[ctr("web2", ipv4=None)])}
    entries = {name: (hv, groups) for name, hv, groups in _inventory.host_entries(reports, HOSTVARS)}
    assert sorted(entries) == ["db.1", "web1", "web2"]
    hv, groups = entries["web1"]
    assert hv["ctrhost_container_host"] == "h1" and hv["ctrhost_container_state"] == "running"
    assert hv["ctrhost_container_ipv4"] == ["10.0.0.5"] and hv["ctrhost_container_ipv6"] == ["fd00::5"]
    assert hv["ctrhost_container_limits"] == dict(memory=1 << 28) and hv["ctrhost_root"] == "/srv/ctr"
    assert hv["ansible_connection"] == "ctrhost.fleet.container"
    assert hv["ansible_host"] == "192.0.2.1" and hv["ansible_port"] == 2222
    assert "ansible_user" not in hv  # in a container that would name a user inside it
    assert "unrelated" not in hv and "ansible_python_interpreter" not in hv  # the container's own
    assert groups == ["ctrhost_containers", "ctrhost_host_h1", "ctrhost_state_running",
                      "ctrhost_template_busybox"]
    assert entries["db.1"][1][2:] == ["ctrhost_state_stopped", "ctrhost_template_deb_12"]
    assert entries["web2"][0]["ansible_host"] == "h2"  # no ansible_host: the inventory name
    assert entries["web2"][0]["ctrhost_container_ipv4"] == []


def test_host_entries_states_format_prefix_and_no_connection():
    reports = {"h1": dict(containers=[ctr("a"), ctr("b", state="stopped")])}
    entries = _inventory.host_entries(reports, HOSTVARS, prefix="x_", name_format="{host}-{name}",
                                      states=["running"], connection=None)
    groups = ["x_containers", "x_host_h1", "x_state_running", "x_template_busybox"]
    assert [(n, g) for n, _, g in entries] == [("h1-a", groups)]
    assert "ansible_connection" not in entries[0][1] and entries[0][1]["x_container_name"] == "a"


def test_a_name_on_two_hosts_keeps_the_running_copy():
    for order in (("h1", "h2"), ("h2", "h1")):
        reports = {order[0]: dict(containers=[ctr("web", state="stopped")]),
                   order[1]: dict(containers=[ctr("web")])}
        [(name, hv, _groups)] = _inventory.host_entries(reports, {})
        assert name == "web" and hv["ctrhost_container_host"] == order[1]


def test_parse_report_errors_name_the_host():
    with pytest.raises(ValueError, match="h1: expected a JSON report"):
        _report.parse_report("h1", "Traceback ...")
    with pytest.raises(ValueError, match="h1: PermissionError: no"):
        _report.parse_report("h1", json.dumps(dict(failed=True, msg="PermissionError: no")))


def write_spec(root, name, **spec):
    path = os.path.join(root, "containers", name)
    os.makedirs(path)
    with open(os.path.join(path, "spec.json"), "w") as handle:
        json.dump(dict(dict(name=name, template="busybox", runtime="runc",
                            network=[dict(ifname="eth0", ipv4="10.1.0.9/24", bridge="br0")],
                            limits=dict(pids=10)), **spec), handle)


def test_report_reads_the_layout_and_skips_unfinished_migrations(tmp_path, monkeypatch):
    root = str(tmp_path)
    write_spec(root, "ok1")
    write_spec(root, "staged", incoming={"from": "h9"})
    # boundary: the runtime binary (no container runs here); the cgroups path does not exist
    monkeypatch.setenv("PATH", str(tmp_path / "nobin"))
    rep = _report.report(root)
    assert rep["root"] == root and [c["name"] for c in rep["containers"]] == ["ok1"]
    [one] = rep["containers"]
    assert one["state"] == "stopped" and one["limits"] == dict(pids=10)
    assert one["interfaces"][0]["ipv4"] == "10.1.0.9/24"


def test_bootstrap_runs_the_report_from_the_zip(tmp_path):
    """What the inventory sends over SSH, run locally: ``python3 -c BOOTSTRAP`` + zip on stdin."""
    write_spec(str(tmp_path), "z1")
    data = payload()
    cmd = _report.remote_command(sys.executable, _report.BOOTSTRAP, len(data), dict(root=str(tmp_path)))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(["sh", "-c", cmd], input=data, capture_output=True, check=False, cwd="/", env=env)
    assert proc.returncode == 0, proc.stderr
    report = _report.parse_report("local", proc.stdout.decode())
    assert [c["name"] for c in report["containers"]] == ["z1"]
    assert shlex.split(cmd)[:2] == [sys.executable, "-c"]
    assert not [f for f in os.listdir("/tmp") if f.startswith("ctrhost-inventory-")]
