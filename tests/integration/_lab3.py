"""A 3-host lab for the fleet tests (evacuation, rebalance): ``<lab name>3`` with a busybox
template on every host, and readers of where containers run, straight from the hosts."""

import contextlib
import json
import os
import subprocess

from lab import ROOT, Lab

LAB_NAME = (os.environ.get("CTRHOST_IT_LAB") or "it") + "3"
RUNC = "runc --root /run/ctrhost/runtime/runc"
TEMPLATE = "evbusybox"
# A counter in a file of the rootfs: it only grows while the same processes run.
COUNTER = ["/bin/sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/c; "
           "sleep 0.2; done"]


@contextlib.contextmanager
def lab3(name=LAB_NAME, count=3):
    """``count`` (three) lab hosts named ``name`` with the busybox template, taken down afterwards."""
    lab = Lab(name, count)
    lab.down()
    lab.up()
    try:
        tarball = subprocess.run([os.path.join(ROOT, "scripts", "make-busybox-template")], capture_output=True,
                                 text=True, check=True).stdout.strip()
        lab.ansible("all", "ctrhost.fleet.template", dict(name=TEMPLATE, src=tarball))
        yield lab
    finally:
        lab.down()


def start(lab, host, names, limits=None):
    """Start ``names`` on ``host`` (``limits``: {name: limits}, default a 32M memory limit)."""
    lab.ansible(host, "ctrhost.fleet.containers", dict(containers=[
        dict(name=name, template=TEMPLATE, state="started", command=COUNTER,
             limits=(limits or {}).get(name, dict(memory="32M")))
        for name in names]))


def purge(lab, hosts):
    for host in hosts:
        lab.ansible(host, "ctrhost.fleet.containers", dict(containers=[], purge=True), check=False)


def where(lab, names):
    """{name: [hosts where the runtime runs it]} read on every host."""
    out = {name: [] for name in names}
    for host in lab.hosts:
        listing = json.loads(lab.host_exec(host, f"{RUNC} list -f json").stdout or "null") or []
        for entry in listing:
            if entry["id"] in out and entry["status"] == "running":
                out[entry["id"]].append(host)
    return out


def counters(lab, placement):
    """{name: counter} read from each container's rootfs on the host that runs it."""
    out = {}
    for name, hosts in placement.items():
        text = lab.host_exec(hosts[0], f"cat /var/lib/ctrhost/containers/{name}/rootfs/tmp/c", check=False).stdout
        out[name] = int(text.strip() or 0)
    return out


def task_result(run, suffix, host):
    """The result of the task whose name ends with ``suffix`` on ``host`` (roles prefix their name)."""
    found = [res for task, h, res in run.results() if h == host and (task or "").endswith(suffix)]
    assert found, run.stdout[-5000:]
    return found[0]
