# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Processes of the lab: /proc reads, namespaces, cgroups, killing."""

import contextlib
import os
import signal
import time

from lablib import LabError


def proc_stat(pid):
    """(ppid, starttime, state) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    return int(fields[1]), int(fields[19]), fields[0]


def ns_inode(pid, kind):
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def alive(pid, starttime):
    st = proc_stat(pid) if pid else None
    return bool(st) and st[1] == starttime and st[2] != "Z"


def all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def protected_pids():
    """This process and its ancestors: never killed by the lab."""
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        st = proc_stat(pid)
        pid = st[0] if st else 0
    return pids


def cgroup_dirs(host):
    base = "/sys/fs/cgroup"
    try:
        hierarchies = sorted(os.listdir(base))
    except OSError:
        return []
    dirs = [os.path.join(base, h, "ctrhost", host) for h in hierarchies]
    dirs.append(os.path.join(base, "ctrhost", host))  # pure cgroup v2
    return [d for d in dirs if os.path.isdir(d)]


def cgroup_pids(host):
    pids = set()
    for top in cgroup_dirs(host):
        for root, _dirs, files in os.walk(top):
            if "cgroup.procs" in files:
                try:
                    with open(os.path.join(root, "cgroup.procs")) as fh:
                        pids.update(int(x) for x in fh.read().split())
                except OSError:
                    pass
    return pids


def thaw_cgroups(host):
    """Frozen tasks do not die on SIGKILL: thaw first."""
    for top in cgroup_dirs(host):
        for root, _dirs, files in os.walk(top):
            for name, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
                if name in files:
                    try:
                        with open(os.path.join(root, name), "w") as fh:
                            fh.write(value)
                    except OSError:
                        pass


def remove_cgroups(host):
    for top in cgroup_dirs(host):
        for root, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(root)


def kill_until_gone(find, what):
    """SIGKILL what find() returns until it returns nothing."""
    keep = protected_pids()
    deadline = time.monotonic() + 10
    while True:
        pids = {p for p in find() if p not in keep}
        pids = {p for p in pids if (proc_stat(p) or (0, 0, "Z"))[2] != "Z"}
        if not pids:
            return
        if time.monotonic() > deadline:
            raise LabError(f"cannot kill {what}: pids {sorted(pids)} survive SIGKILL")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
