# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab's shared pieces: paths, limits, errors and small helpers.

scripts/lab is the entry point; lablib.cli holds its command line.
"""

import os
import re
import subprocess
import sys
import time

PKG_DIR = os.path.dirname(os.path.realpath(__file__))
REPO = os.path.dirname(os.path.dirname(PKG_DIR))
LAB_SCRIPT = os.path.join(os.path.dirname(PKG_DIR), "lab")  # re-run for _host-init
NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")
HOST_LIB = "/var/lib/ctrhost"
SSHD = "/usr/sbin/sshd"
MAX_HOSTS = 99
TOOLS = ("ip", "nsenter", "unshare", "ssh-keygen", "ssh", SSHD)
# The VM tier's Debian release (lablib.vmimage.RELEASES) when neither `--release` nor the
# environment variable RELEASE_ENV names one: what `scripts/test vm` (and so CI) runs. Still
# 12: on 13 the VM scenario does not pass yet (Debian 13's CRIU 4.1.1 fails the cold move of
# an unprivileged container, README "The VM tier").
DEFAULT_RELEASE = "12"
RELEASE_ENV = "CTRHOST_VM_RELEASE"
# Mounts a lab host must not inherit from the machine (other labs' netns
# files, containers' overlays, test scratch mounts): dropped in its namespace.
REPLACED_MOUNTS = ("/run", HOST_LIB)  # these and everything below them
FOREIGN_UNDER = ("/tmp", "/var/tmp", "/var/lib/containers", "/var/lib/docker")
FOREIGN_FSTYPES = ("overlay", "nsfs", "fuse")


class LabError(Exception):
    pass


def log(msg):
    print(f"lab: {msg}", file=sys.stderr)


def run(cmd, check=True):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)} failed (rc={proc.returncode}): "
                       f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def keygen(path, comment):
    """An ed25519 key pair at ``path`` (and .pub), unless it is there already."""
    if not os.path.exists(path):
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])


def write(path, text, mode=0o644):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def tail(path, lines=10, missing=""):
    """The last ``lines`` lines of a log file (``missing`` when it cannot be read)."""
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return missing


def wait_all(pending, ready, timeout, interval, timeout_msg):
    """Until ``ready(item)`` is true for every item of ``pending`` (it may raise for an
    item that can never become ready); LabError(timeout_msg(left)) after ``timeout``."""
    deadline, pending = time.monotonic() + timeout, list(pending)
    while True:
        pending = [item for item in pending if not ready(item)]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise LabError(timeout_msg(pending))
        time.sleep(interval)
