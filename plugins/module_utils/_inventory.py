# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Containers of the container hosts as Ansible hosts (the ``containers`` inventory).

Two halves, both importable without Ansible:

- on a container host, ``report(root)`` is what ``container_info`` reads (the same
  ``_info.gather``), trimmed to what an inventory needs. The controller runs it
  through the host's SSH connection with ``python3 -c BOOTSTRAP`` and the zip of
  this collection's module_utils on stdin (``_migrate_ssh.payload``, as the
  migration agent is shipped): the host needs Python and the collection's host
  requirements, not the collection.
- on the controller, ``ssh_command`` builds the SSH command from a host's
  connection variables (as Ansible reaches it) and ``host_entries`` turns the
  reports into inventory hosts, their variables and groups.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex

# Connection variables of a container host that its containers' connection
# (``ctrhost.fleet.container``, through the host's SSH) needs as well.
SSH_VARS = ("ansible_host", "ansible_port", "ansible_user", "ansible_ssh_private_key_file",
            "ansible_private_key_file", "ansible_ssh_common_args", "ansible_ssh_extra_args",
            "ansible_ssh_args", "ansible_ssh_executable", "ansible_ssh_pipelining", "ansible_pipelining")
CONNECTION = "ctrhost.fleet.container"
# What an inventory host carries from ``container_info`` (under the ``ctrhost_`` prefix).
FIELDS = ("state", "pid", "template", "runtime", "hostname", "autostart", "created", "limits",
          "effective_limits")
_GROUP_SAFE = re.compile(r"[^A-Za-z0-9_]")
# Run by ``python3 -c`` on the host: argv[1] is the size of the zip that follows on
# stdin, imported from a temporary file with zipimport; argv[2] the JSON arguments.
BOOTSTRAP = (
    "import sys,os,tempfile\n"
    "n=int(sys.argv[1]);d=sys.stdin.buffer.read(n)\n"
    "if len(d)!=n: sys.exit(3)\n"
    "f,p=tempfile.mkstemp(prefix='ctrhost-inventory-',suffix='.zip');os.write(f,d);os.close(f)\n"
    "sys.path.insert(0,p)\n"
    "try:\n"
    " from ansible_collections.ctrhost.fleet.plugins.module_utils import _inventory as m\n"
    " sys.exit(m.serve(sys.argv[1:]))\n"
    "finally:\n"
    " os.unlink(p)\n"
)


# -- container host side ----------------------------------------------------------
def report(root, runtime_path=None):
    """What the inventory needs of every container of this host (a JSON-able dict).

    Provisional copies of an unfinished migration (``incoming``) are left out: the
    container is still the source's."""
    from ansible_collections.ctrhost.fleet.plugins.module_utils import _info
    from ansible_collections.ctrhost.fleet.plugins.module_utils._paths import Layout

    gathered = _info.gather(root, runtime_path=runtime_path, network=True)
    out = []
    for info in gathered["containers"]:
        if info.get("incoming"):
            continue
        entry = {key: info.get(key) for key in FIELDS}
        entry["name"] = info["name"]
        entry["interfaces"] = [
            {key: nic.get(key) for key in ("ifname", "ipv4", "ipv6", "mac", "bridge")}
            for nic in (info.get("network") or info.get("network_declared") or [])]
        out.append(entry)
    return dict(root=Layout(root).root, containers=out)


def serve(argv):
    """Entry point of ``BOOTSTRAP``: argv = [payload size, JSON args]; prints the report."""
    import sys

    args = json.loads(argv[1]) if len(argv) > 1 else {}
    try:
        result = report(args.get("root"), runtime_path=args.get("runtime_path"))
    except Exception as exc:  # one line the controller can show; never a trace on stdout
        sys.stdout.write(json.dumps(dict(failed=True, msg="%s: %s" % (type(exc).__name__, exc))))
        return 1
    sys.stdout.write(json.dumps(result, default=str))
    return 0


# -- controller side ----------------------------------------------------------------
def ssh_command(host, hostvars, remote_cmd, connect_timeout=10):
    """``ssh ... REMOTE_CMD`` reaching ``host`` as Ansible's ssh connection would,
    from its connection variables (ansible_host/port/user/key/ssh args)."""
    address = hostvars.get("ansible_host") or host
    cmd = [hostvars.get("ansible_ssh_executable") or "ssh", "-o", "BatchMode=yes",
           "-o", "ConnectTimeout=%d" % connect_timeout]
    for key in ("ansible_ssh_args", "ansible_ssh_common_args", "ansible_ssh_extra_args"):
        if hostvars.get(key):
            cmd += shlex.split(str(hostvars[key]))
    if hostvars.get("ansible_port"):
        cmd += ["-p", str(hostvars["ansible_port"])]
    if hostvars.get("ansible_user"):
        cmd += ["-l", str(hostvars["ansible_user"])]
    key = hostvars.get("ansible_ssh_private_key_file") or hostvars.get("ansible_private_key_file")
    if key:
        cmd += ["-i", str(key)]
    return cmd + ["--", str(address), remote_cmd]


def python_of(hostvars):
    """The Python to run on the host: its ``ansible_python_interpreter`` unless that
    asks for discovery."""
    interp = str(hostvars.get("ansible_python_interpreter") or "")
    if not interp or interp.startswith("auto") or "{{" in interp:
        return "python3"
    return interp


def remote_command(python, bootstrap, size, args):
    return " ".join(shlex.quote(part) for part in (python, "-c", bootstrap, str(size),
                                                   json.dumps(args, sort_keys=True)))


def parse_report(host, stdout):
    """The report a host printed, or ValueError naming the host."""
    try:
        data = json.loads(stdout)
    except ValueError:
        raise ValueError("%s: expected a JSON report, got %r" % (host, stdout[:200])) from None
    if data.get("failed"):
        raise ValueError("%s: %s" % (host, data.get("msg")))
    return data


def group_name(prefix, kind, value):
    """``<prefix><kind>_<value>`` with characters Ansible rejects in group names as ``_``."""
    return _GROUP_SAFE.sub("_", "%s%s_%s" % (prefix, kind, value))


def addresses(interfaces):
    """(ipv4 list, ipv6 list) of plain addresses, in interface order."""
    v4, v6 = [], []
    for nic in interfaces:
        for key, bucket in (("ipv4", v4), ("ipv6", v6)):
            if nic.get(key):
                bucket.append(str(ipaddress.ip_interface(nic[key]).ip))
    return v4, v6


def host_entries(reports, hostvars, prefix="ctrhost_", name_format="{name}", states=None,
                 connection=CONNECTION):
    """Inventory hosts from ``reports`` ({container host: report}).

    Returns ``[(inventory name, vars, [groups])]`` sorted by name. ``hostvars`` are
    the container hosts' variables (for the connection ones). ``states`` keeps only
    containers in those states. A name seen on two hosts keeps the running copy (a
    container is only ever running on one host)."""
    chosen = {}
    for host in sorted(reports):
        for ctr in reports[host].get("containers", []):
            if states and ctr.get("state") not in states:
                continue
            inv_name = name_format.format(name=ctr["name"], host=host)
            other = chosen.get(inv_name)
            if other is not None and (other[1].get("state") == "running"
                                      or ctr.get("state") != "running"):
                continue
            chosen[inv_name] = (host, ctr)
    out = []
    for inv_name in sorted(chosen):
        host, ctr = chosen[inv_name]
        v4, v6 = addresses(ctr.get("interfaces") or [])
        hv = {k: v for k, v in (hostvars.get(host) or {}).items() if k in SSH_VARS}
        hv.setdefault("ansible_host", host)
        if connection:
            hv["ansible_connection"] = connection
        hv.update({prefix + "container_" + key: ctr.get(key) for key in FIELDS})
        hv.update({prefix + "container_name": ctr["name"], prefix + "container_host": host,
                   prefix + "container_interfaces": ctr.get("interfaces") or [],
                   prefix + "container_ipv4": v4, prefix + "container_ipv6": v6,
                   prefix + "root": reports[host].get("root")})
        groups = [prefix + "containers", group_name(prefix, "host", host),
                  group_name(prefix, "state", ctr.get("state") or "unknown")]
        if ctr.get("template"):
            groups.append(group_name(prefix, "template", ctr["template"]))
        out.append((inv_name, hv, groups))
    return out
