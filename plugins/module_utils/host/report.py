# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host side of the ``containers`` inventory: the report of this host's containers.

On a container host, ``report(root)`` is what ``container_info`` reads (the same
``_info.gather``), trimmed to what an inventory needs. The controller runs it
through the host's SSH connection with ``python3 -c BOOTSTRAP`` and the zip of
this collection's module_utils on stdin (``_ship.payload``, as the migration
agent is shipped): the host needs Python and the collection's host requirements,
not the collection. ``remote_command`` and ``parse_report`` are the two ends
of that call, used by the inventory plugin and by a migration asked again."""

from __future__ import annotations

import json
import shlex

# What an inventory host carries from ``container_info`` (under the ``ctrhost_`` prefix).
FIELDS = ("state", "pid", "template", "runtime", "hostname", "autostart", "created", "limits",
          "effective_limits")


# Run by ``python3 -c`` on the host: argv[1] is the size of the zip that follows on
# stdin, imported from a temporary file with zipimport; argv[2] the JSON arguments.
BOOTSTRAP = (
    "import sys,os,tempfile\n"
    "n=int(sys.argv[1]);d=sys.stdin.buffer.read(n)\n"
    "if len(d)!=n: sys.exit(3)\n"
    "f,p=tempfile.mkstemp(prefix='ctrhost-inventory-',suffix='.zip');os.write(f,d);os.close(f)\n"
    "sys.path.insert(0,p)\n"
    "try:\n"
    " from ansible_collections.ctrhost.fleet.plugins.module_utils.host import report as m\n"
    " sys.exit(m.serve(sys.argv[1:]))\n"
    "finally:\n"
    " os.unlink(p)\n"
)


def report(root, runtime_path=None):
    """What the inventory needs of every container of this host (a JSON-able dict).

    Provisional copies of an unfinished migration (``incoming``) are left out: the
    container is still the source's."""
    from ansible_collections.ctrhost.fleet.plugins.module_utils.container import info as _info
    from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout

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
