"""A Debian 12 systemd template for the system-container tests, built once through the
``template`` module (debootstrap on this machine, the apt mirror of its own
/etc/apt/sources.list*) and cached as a tarball under .cache/templates/, keyed by its
recipe. GNU tar --xattrs writes it (pax format), and lab hosts install it through the
module's ``src`` source.
"""

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import shutil
import subprocess

from lab import COLLECTIONS_PATH, ROOT, VENV_BIN

# No dbus: its daemon runs as an unprivileged user, and CRIU reads resource limits with
# prlimit, which needs CAP_SYS_RESOURCE for another user's process (this sandbox's root
# lacks it; the dump refuses such a container and names the unit).
RECIPE = dict(suite="bookworm", variant="minbase",
              include=["systemd-sysv", "openssh-server", "cron", "iproute2", "procps"])
CACHE = os.path.join(ROOT, ".cache", "templates")


def apt_mirror():
    """The first Debian mirror of this machine's apt sources (one-line or deb822), or None."""
    files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*"))
    for path in files:
        text = ""
        with contextlib.suppress(OSError), open(path) as handle:
            text = handle.read()
        if path.endswith(".sources"):
            for stanza in text.split("\n\n"):
                fields = dict(line.split(":", 1) for line in stanza.splitlines()
                              if ":" in line and not line.startswith("#"))
                if "deb" in fields.get("Types", "").split() and fields.get("URIs"):
                    return fields["URIs"].split()[0]
        else:
            for line in text.splitlines():
                parts = line.split()
                if parts[:1] == ["deb"]:
                    return next(p for p in parts[1:] if not p.startswith("["))
    return None


def key():
    return hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:16]


def tarball():
    """Path of the cached template tarball, built first when missing (None: no mirror)."""
    path = os.path.join(CACHE, "deb12-systemd-%s.tar" % key())
    os.makedirs(CACHE, exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(path):
            return path
        mirror = apt_mirror()
        if not mirror:
            return None
        build = os.path.join(CACHE, "build-%s" % key())
        shutil.rmtree(build, ignore_errors=True)
        args = dict(root=build, name="deb12", debootstrap=dict(RECIPE, mirror=mirror))
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, ANSIBLE_NOCOLOR="1")
        proc = subprocess.run([os.path.join(VENV_BIN, "ansible"), "localhost", "-c", "local",
                               "-m", "ctrhost.fleet.template", "-a", json.dumps(args)],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        rootfs = os.path.join(build, "templates", "deb12", "rootfs")
        subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", rootfs,
                        "-cf", path + ".tmp", "."], check=True)
        os.rename(path + ".tmp", path)
        shutil.rmtree(build, ignore_errors=True)
    return path
