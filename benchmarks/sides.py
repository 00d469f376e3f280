# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The three sides of the benchmark, behind one small interface.

``Ours`` calls the collection's library in-process (what a module does once
Ansible has started it); ``Podman`` and ``Lxc`` run their CLIs the way an
operator would. Every side works on the same busybox rootfs tarball and
runs the same two workloads (``WORKLOADS``), each under its own private state
root so that nothing else on the machine is touched.

Side interface: ``available()`` -> (ok, reason); ``prepare(tarball)``;
``create_start(name, workload)``; ``stop(name)``; ``checkpoint(name, cid)`` (ours: the
result, Podman: its ``--print-stats`` output); ``restore(name, cid)``; ``init_pid(name)``;
``remove(name)`` (untimed, tolerant); ``supervisor_pids(names)``; ``cleanup()``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, ".cache", "pytest-collections")
TEMPLATE = "bn-busybox"
IMAGE = "localhost/bn-busybox:latest"
MEM_BYTES = 256 * 1024 * 1024

# Idle: pid 1 is a shell that exits on SIGTERM (busybox sleep as pid 1 would
# ignore it and every stop would last the whole stop timeout).
IDLE_SH = "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"
# 256 MB touched: dd reads one 256 MiB block of random bytes (every page of its
# buffer written, nothing for a compressor to squeeze) and then blocks for ever
# writing it into a pipe that nobody reads, keeping the whole buffer resident.
MEM_SH = ("dd if=/dev/urandom bs=%d count=1 iflag=fullblock 2>/dev/null | sleep 999999999"
          % MEM_BYTES)
WORKLOADS = {"idle": IDLE_SH, "mem": MEM_SH}


def ensure_collections_tree():
    """The ansible_collections symlink tree tests/conftest.py makes (made here if missing)."""
    base = os.path.join(COLLECTIONS, "ansible_collections", "ctrhost")
    link = os.path.join(base, "fleet")
    if not os.path.islink(link):
        os.makedirs(base, exist_ok=True)
        os.symlink("../../../..", link)
    if COLLECTIONS not in sys.path:
        sys.path.insert(0, COLLECTIONS)


def sh(cmd, check=True, timeout=300, input=None):
    """Run ``cmd`` (list); return stdout; raise RuntimeError with stderr on failure."""
    # Files, not pipes: a daemon the command leaves behind (lxc-checkpoint -r's monitor)
    # may keep its stdio open, and reading a pipe to EOF would wait for it.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run(cmd, stdout=out, stderr=err, timeout=timeout,
                              input=input.encode() if input is not None else None,
                              stdin=None if input is not None else subprocess.DEVNULL)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    if check and proc.returncode != 0:
        raise RuntimeError("%s failed (rc=%d): %s" % (" ".join(cmd[:6]), proc.returncode,
                                                      (stderr or stdout).strip()[-800:]))
    return stdout


def version_of(cmd):
    try:
        out = sh(cmd, check=False, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


class Ours:
    """ctrhost.fleet through its library (plugins/module_utils)."""

    name = "ours"

    def __init__(self, root=None):
        ensure_collections_tree()
        from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import dump, restore
        from ansible_collections.ctrhost.fleet.plugins.module_utils.container import lifecycle
        from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
        from ansible_collections.ctrhost.fleet.plugins.module_utils.template import lifecycle as template
        self.mod, self.ck, self.rs, self.tp = lifecycle, dump, restore, template
        self.root = root
        self.layout = Layout(root)

    def available(self):
        return bool(shutil.which("runc") or os.path.exists("/usr/sbin/runc")), "runc not found"

    def params(self, name, workload=None, state="started"):
        out = dict(name=name, state=state, root=self.root, stop_timeout=10)
        if workload:
            out.update(template=TEMPLATE, command=["/bin/sh", "-c", WORKLOADS[workload]])
        return out

    def prepare(self, tarball):
        return self.tp.ensure(self.root, TEMPLATE, src=tarball)

    def create_start(self, name, workload):
        result = self.mod.ensure(self.params(name, workload))
        if result["container"]["state"] != "running":
            raise RuntimeError("ours: %s is %s after create+start" % (name, result["container"]))
        return result

    def one_shot_cmd(self, name, workload):
        """A fresh Python process doing create+start: interpreter + imports + the call."""
        code = ("import json,sys; sys.path.insert(0, %r); "
                "from ansible_collections.ctrhost.fleet.plugins.module_utils.container import lifecycle; "
                "r=lifecycle.ensure(json.loads(sys.argv[1])); "
                "sys.exit(r['container']['state'] != 'running')" % COLLECTIONS)
        return [sys.executable, "-c", code, json.dumps(self.params(name, workload))]

    def stop(self, name):
        result = self.mod.ensure(self.params(name, state="stopped"))
        if result["container"]["state"] != "stopped":
            raise RuntimeError("ours: %s is %s after stop" % (name, result["container"]["state"]))

    def checkpoint(self, name, cid):
        return self.ck.checkpoint(self.root, name, cid)

    def restore(self, name, cid):
        return self.rs.restore(self.root, name, cid)

    def init_pid(self, name):
        from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime.driver import Runtime
        rt = Runtime("runc", state_root=os.path.join(self.layout.runtime_root, "runc"))
        st = rt.state(name)
        return st["pid"] if st and st.get("status") in ("running", "paused") else None

    def remove(self, name):
        with contextlib.suppress(Exception):
            self.ck.delete(self.root, name, None)
        self.mod.ensure(self.params(name, state="absent"))
        shutil.rmtree(self.layout.checkpoint_dir(name), ignore_errors=True)

    def supervisor_pids(self, names):
        return []  # runc exits once the container runs: no per-container monitor

    def cleanup(self):
        with contextlib.suppress(Exception):
            self.tp.ensure(self.root, TEMPLATE, state="absent", force=True)


class Podman:
    """Podman 4.x from Debian, own storage under ``base`` (never the machine's default)."""

    name = "podman"

    def __init__(self, base):
        self.base = base
        self.cmd = ["podman", "--root", os.path.join(base, "root"),
                    "--runroot", os.path.join(base, "run"), "--tmpdir", os.path.join(base, "tmp"),
                    "--runtime", "runc", "--cgroup-manager", "cgroupfs",
                    "--events-backend", "none"]
        # runc refuses podman's default (raised) RLIMIT_NPROC without CAP_SYS_RESOURCE; the
        # nofile value matches the 1024 our OCI config sets.
        self.run_flags = ["--network", "none", "--ulimit", "nofile=1024:1024",
                          "--ulimit", "nproc=4096:4096"]

    def available(self):
        return bool(shutil.which("podman")), "podman not installed"

    def p(self, *args, check=True, timeout=300):
        return sh(self.cmd + list(args), check=check, timeout=timeout)

    def prepare(self, tarball):
        for sub in ("root", "run", "tmp"):
            os.makedirs(os.path.join(self.base, sub), exist_ok=True)
        if not self.p("images", "-q", IMAGE, check=False).strip():
            self.p("import", "-q", tarball, IMAGE)

    def run_args(self, name, workload):
        return ["run", "-d", "--name", name] + self.run_flags + [
            IMAGE, "/bin/sh", "-c", WORKLOADS[workload]]

    def create_start(self, name, workload):
        self.p(*self.run_args(name, workload))

    def stop(self, name):
        self.p("stop", "-t", "10", name)

    def checkpoint(self, name, cid):  # prints CRIU's statistics as JSON (benchmarks/ckphases.py)
        return self.p("container", "checkpoint", "--print-stats", name)

    def restore(self, name, cid):
        self.p("container", "restore", name)

    def init_pid(self, name):
        out = self.p("inspect", "-f", "{{.State.Pid}}", name, check=False).strip()
        return int(out) if out.isdigit() and int(out) > 0 else None

    def remove(self, name):
        self.p("rm", "-f", "-t", "0", name, check=False)

    def remove_many(self, names):
        for i in range(0, len(names), 50):
            self.p("rm", "-f", "-t", "0", *names[i:i + 50], check=False, timeout=600)

    def supervisor_pids(self, names):
        """conmon processes of these containers."""
        ids = set()
        for name in names:
            out = self.p("inspect", "-f", "{{.Id}}", name, check=False).strip()
            if out:
                ids.add(out)
        return [pid for pid, cmd in _processes() if "conmon" in cmd.split(" ", 1)[0]
                and any(cid in cmd for cid in ids)]

    def cleanup(self):
        names = [n for n in self.p("ps", "-a", "--format", "{{.Names}}", check=False).split()
                 if n.startswith("bn")]
        if names:
            self.remove_many(names)
        self.p("rmi", "-f", IMAGE, check=False)
        self.p("system", "prune", "-f", check=False)


class Lxc:
    """LXC (lxc-start / lxc-checkpoint), overlay rootfs over one extracted template."""

    name = "lxc"

    def __init__(self, base):
        self.base = base
        self.path = os.path.join(base, "containers")
        self.lower = os.path.join(base, "template", "rootfs")

    def available(self):
        if not shutil.which("lxc-start"):
            return False, "lxc not installed (apt-get install lxc)"
        return True, None

    def lx(self, tool, name, *args, check=True, timeout=120):
        return sh([tool, "-P", self.path, "-n", name] + list(args), check=check, timeout=timeout)

    def prepare(self, tarball):
        os.makedirs(self.path, exist_ok=True)
        if not os.path.isdir(self.lower):
            tmp = self.lower + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            with tarfile.open(tarball) as tar:
                tar.extractall(tmp, filter="tar")
            for key, text in WORKLOADS.items():  # lxc.init.cmd does not take shell quoting
                with open(os.path.join(tmp, "bn-%s.sh" % key), "w") as fh:
                    fh.write(text + "\n")
            os.rename(tmp, self.lower)

    def config(self, name, workload, rootfs):
        return "\n".join([
            "lxc.uts.name = %s" % name,
            "lxc.rootfs.path = %s" % rootfs,
            "lxc.net.0.type = empty",
            "lxc.init.cmd = /bin/sh /bn-%s.sh" % workload,
            "lxc.mount.auto = proc:mixed sys:ro cgroup:mixed",
            "lxc.autodev = 1",
            "lxc.tty.max = 0",
            "lxc.pty.max = 8",
            "lxc.console.path = none",
            "lxc.signal.halt = SIGTERM",
            "lxc.prlimit.nofile = 1024",
            "",
        ])

    def create_start(self, name, workload, copy=False):
        """Overlay rootfs over the template (as ours); ``copy``: a plain copy of the
        template, which lxc-checkpoint needs (its restore fails on an overlayfs rootfs)."""
        cdir = os.path.join(self.path, name)
        if copy:
            rootfs = os.path.join(cdir, "rootfs")
            os.makedirs(cdir, exist_ok=True)
            sh(["cp", "-a", self.lower, rootfs])
            rootfs = "dir:" + rootfs
        else:
            os.makedirs(os.path.join(cdir, "delta0"), exist_ok=True)
            rootfs = "overlayfs:%s:%s" % (self.lower, os.path.join(cdir, "delta0"))
        with open(os.path.join(cdir, "config"), "w") as fh:
            fh.write(self.config(name, workload, rootfs))
        self.lx("lxc-start", name)
        self.lx("lxc-wait", name, "-s", "RUNNING", "-t", "30")

    def stop(self, name):
        self.lx("lxc-stop", name, "-t", "10")

    def ckdir(self, name, cid):
        return os.path.join(self.base, "checkpoints", name, cid)

    def checkpoint(self, name, cid):
        os.makedirs(self.ckdir(name, cid), exist_ok=True)
        self.lx("lxc-checkpoint", name, "-s", "-D", self.ckdir(name, cid), timeout=600)

    def restore(self, name, cid):
        # lxc-checkpoint -r prints a harmless "Failed to receive response" on this host:
        # success is judged by the state afterwards.
        self.lx("lxc-checkpoint", name, "-r", "-D", self.ckdir(name, cid), check=False,
                timeout=600)
        self.lx("lxc-wait", name, "-s", "RUNNING", "-t", "10")

    def init_pid(self, name):
        out = self.lx("lxc-info", name, "-p", "-H", check=False).strip()
        return int(out) if out.isdigit() else None

    def remove(self, name):
        self.lx("lxc-stop", name, "-k", check=False, timeout=30)
        self.lx("lxc-destroy", name, "-f", check=False, timeout=60)
        shutil.rmtree(os.path.join(self.path, name), ignore_errors=True)
        shutil.rmtree(os.path.join(self.base, "checkpoints", name), ignore_errors=True)

    def supervisor_pids(self, names):
        wanted = set(names)
        out = []
        for pid, cmd in _processes():
            if cmd.startswith("[lxc monitor]"):
                parts = cmd.split()
                if parts and parts[-1] in wanted:
                    out.append(pid)
        return out

    def cleanup(self):
        if os.path.isdir(self.path):
            for name in os.listdir(self.path):
                if name.startswith("bn"):
                    self.remove(name)
        shutil.rmtree(self.base, ignore_errors=True)


def _processes():
    """[(pid, cmdline)] of every process."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            continue
        out.append((int(entry), cmd))
    return out


def rss_bytes(pids):
    """Sum of VmRSS of ``pids`` (bytes)."""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def memory_cgroup_usage(pid):
    """Bytes charged to the memory cgroup of ``pid`` (v1 usage_in_bytes, v2 memory.current)."""
    try:
        with open("/proc/%d/cgroup" % pid) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        hid, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            leaf = "/sys/fs/cgroup/memory" + path + "/memory.usage_in_bytes"
            return _read_int(leaf)
    for line in lines:
        if line.startswith("0::"):
            for mount in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                value = _read_int(mount + line[3:] + "/memory.current")
                if value is not None:
                    return value
    return None


def _read_int(path):
    try:
        with open(path) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def mem_available():
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None
