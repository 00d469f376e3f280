# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The VM tier's disk image: Debian 13 (trixie) or Debian 12 (bookworm), built once with
debootstrap from this machine's own apt mirror, cached under .cache/vm/<recipe key>/ (the
key starts with the suite, and one image is kept per release) and shared read-only by every
VM (each boots from a copy-on-write qcow2 overlay of it).

The release is chosen by `scripts/lab up --vm --release 12|13`, or else by the environment
variable CTRHOST_VM_RELEASE (what `scripts/test vm` and the Molecule scenario pass on), or
else lablib.DEFAULT_RELEASE.

The image holds a stock Debian kernel, systemd, sshd, python3 and GRUB, and a local apt
repository with what the host role installs (runtime, CRIU, pyroute2, ...) and a newer
kernel ABI for the kernel upgrade: the VMs reach no mirror, yet the role's package tasks
really install packages. No loop device is needed: the root filesystem is written into
the raw disk at its partition's offset by mkfs.ext4 -d, and GRUB's boot sector and core
image are copied into the first megabyte. The root filesystem has the quota and project
features and is mounted with prjquota (kernel command line and fstab), so containers'
disk limits are enforced.
"""

import glob
import hashlib
import json
import os
import shutil
import struct
import subprocess
import time
import uuid

from lablib import DEFAULT_RELEASE, PKG_DIR, RELEASE_ENV, REPO, LabError, log, run, write

# Debian releases the VM tier builds: major version -> suite. The image holds the suite's
# kernel; its local apt repository holds the security suite's, which is another kernel ABI
# (bookworm: 6.1.0-N -> 6.1.0-M; trixie: 6.12.N+deb13 -> 6.12.M+deb13), for the kernel roll.
RELEASES = {"12": "bookworm", "13": "trixie"}
GUEST_DIR = os.path.join(PKG_DIR, "guest")
CACHE = os.path.join(REPO, ".cache", "vm")
DISK_MB = 6144
PART_START = 2048  # sectors
# Installed in the image: a bare Debian host, as an operator gets it from an installer.
BASE_PACKAGES = ("systemd-sysv", "udev", "dbus", "libpam-systemd", "openssh-server", "python3",
                 "python3-apt", "linux-image-amd64", "initramfs-tools", "kmod", "iproute2",
                 "procps", "e2fsprogs", "ca-certificates", "zstd", "iputils-ping", "apt-utils",
                 "busybox-static", "less")
# Only in the image's local apt repository: what the host role and the upgrade install.
REPO_PACKAGES = ("runc", "crun", "criu", "python3-pyroute2", "python3-nftables", "rsync",
                 "nftables", "iptables", "openssh-client", "linux-image-amd64")
TOOLS = ("debootstrap", "mkfs.ext4", "qemu-img", "chroot", "unshare")


def release(asked=None):
    """The Debian major version asked for (option, else $CTRHOST_VM_RELEASE, else the
    default), checked against RELEASES."""
    value = str(asked or os.environ.get(RELEASE_ENV) or DEFAULT_RELEASE).strip()
    value = {suite: major for major, suite in RELEASES.items()}.get(value, value)
    if value not in RELEASES:
        raise LabError(f"release: expected one of {', '.join(sorted(RELEASES))} "
                       f"({', '.join(RELEASES.values())}), got {value!r}")
    return value


def recipe_key(suite):
    """Changes whenever anything that shapes the image changes (the suite first)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([suite, DISK_MB, BASE_PACKAGES, REPO_PACKAGES]).encode())
    for path in sorted([os.path.realpath(__file__)] + glob.glob(os.path.join(GUEST_DIR, "*"))):
        with open(path, "rb") as fh:
            digest.update(os.path.basename(path).encode() + b"\0" + fh.read())
    return f"{suite}-{digest.hexdigest()[:16]}"


def apt_uris(suite):
    """(mirror, security) URIs for ``suite`` from this machine's own apt sources: the URI of
    the suite (or else of any Debian release there: one archive serves them all), and of its
    security suite (or else of any *-security suite there)."""
    found = {}
    for path in glob.glob("/etc/apt/sources.list.d/*.sources"):
        with open(path) as fh:
            for stanza in fh.read().split("\n\n"):
                fields = {}
                for line in stanza.splitlines():
                    if ":" in line and not line.startswith(("#", " ")):
                        key, _, value = line.partition(":")
                        fields[key.strip()] = value.split()
                if "deb" not in fields.get("Types", []):
                    continue
                for name in fields.get("Suites", []):
                    for uri in fields.get("URIs", []):
                        found.setdefault(name, uri)
    if os.path.exists("/etc/apt/sources.list"):
        with open("/etc/apt/sources.list") as fh:
            for line in fh:
                words = [w for w in line.split() if not w.startswith("[")]
                if len(words) >= 3 and words[0] == "deb":
                    found.setdefault(words[2], words[1])
    known = [suite] + [s for s in RELEASES.values() if s != suite]
    mirror = next((found[s] for s in known if s in found), None)
    security = next((found[f"{s}-security"] for s in known if f"{s}-security" in found), None)
    if not mirror:
        raise LabError(f"the VM image needs a Debian mirror ({', '.join(known)}) in this "
                       f"machine's apt sources (/etc/apt/sources.list or sources.list.d/*.sources)")
    return mirror, security or mirror


def mbr(total_sectors):
    """A DOS partition table with one bootable Linux partition from PART_START."""
    count = total_sectors - PART_START
    entry = struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff",
                        PART_START, count)
    return entry + b"\0" * 48 + b"\x55\xaa"  # 4 entries (1 used) + signature, at 446


class Image:
    def __init__(self, release_=None):
        self.release = release(release_)
        self.suite = RELEASES[self.release]
        self.key = recipe_key(self.suite)
        self.dir = os.path.join(CACHE, self.key)
        self.disk = os.path.join(self.dir, "disk.raw")
        self.meta = os.path.join(self.dir, "image.json")

    def info(self):
        with open(self.meta) as fh:
            return json.load(fh)

    def ready(self):
        return os.path.exists(self.disk) and os.path.exists(self.meta)

    def ensure(self, rebuild=False):
        if self.ready() and not rebuild:
            return self.info()
        missing = [t for t in TOOLS if not shutil.which(t)]
        if missing:
            raise LabError(f"the VM image needs {', '.join(missing)} (run `make setup`)")
        os.makedirs(CACHE, exist_ok=True)
        for old in os.listdir(CACHE):  # older recipes: one image is kept per release
            same_suite = old.startswith(f"{self.suite}-") or "-" not in old
            if old != self.key and same_suite and os.path.isdir(os.path.join(CACHE, old)):
                shutil.rmtree(os.path.join(CACHE, old), ignore_errors=True)
        work = os.path.join(CACHE, f".build-{self.key}")
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        try:
            meta = self.build(work)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        os.replace(os.path.join(work, "disk.raw"), self.disk)
        write(self.meta, json.dumps(meta, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(work, ignore_errors=True)
        return meta

    def build(self, work):
        t0 = time.monotonic()
        mirror, security = apt_uris(self.suite)
        root = os.path.join(work, "rootfs")
        log(f"VM image {self.key}: debootstrap {self.suite} (a few minutes, once per recipe)")
        run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
             self.suite, root, mirror])
        t_boot = time.monotonic() - t0
        guest_tmp = os.path.join(root, "tmp", "ctrhost-guest")
        shutil.copytree(GUEST_DIR, guest_tmp)
        root_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ctrhost-lab-vm:{self.key}"))
        env = dict(os.environ, MIRROR=mirror, SECURITY=security, SUITE=self.suite,
                   ROOT_UUID=root_uuid,
                   DEBIAN_FRONTEND="noninteractive")
        log(f"VM image {self.key}: configuring (boot loader, initramfs, local apt repository)")
        # A private mount namespace: /proc and /dev of the chroot vanish with it.
        script = (f'mount -t proc proc "{root}/proc" && mount --rbind /dev "{root}/dev" && '
                  f'mount -t sysfs sys "{root}/sys" && '
                  f'exec chroot "{root}" /bin/sh /tmp/ctrhost-guest/configure.sh "$@"')
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "--",
                               "sh", "-c", script, "configure", *REPO_PACKAGES],
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise LabError(f"configuring the VM image failed (rc={proc.returncode}):\n"
                           f"{proc.stderr.strip()[-3000:]}")
        with open(os.path.join(guest_tmp, "boot.img"), "rb") as fh:
            boot_img = fh.read()
        with open(os.path.join(guest_tmp, "core.img"), "rb") as fh:
            core_img = fh.read()
        shutil.rmtree(guest_tmp)
        kernels = sorted(os.path.basename(p)[len("vmlinuz-"):]
                         for p in glob.glob(os.path.join(root, "boot", "vmlinuz-*")))
        upgrade = sorted(os.path.basename(p) for p in glob.glob(os.path.join(
            root, "var/lib/ctrhost-lab/apt/linux-image-[0-9]*.deb")))
        disk = os.path.join(work, "disk.raw")
        total = DISK_MB * 2048
        with open(disk, "wb") as fh:
            fh.truncate(total * 512)
        fs_mb = DISK_MB - PART_START // 2048
        # quota,project: project ids and quota inodes, so that limits.disk (a project quota
        # on each container's directory) is enforced; the guest mounts it with prjquota.
        run(["mkfs.ext4", "-q", "-F", "-L", "vmroot", "-U", root_uuid, "-O", "quota,project",
             "-E", f"offset={PART_START * 512}", "-d", root, disk, f"{fs_mb}M"])
        if len(core_img) > (PART_START - 1) * 512:
            raise LabError(f"GRUB core image of {len(core_img)} bytes does not fit before "
                           f"the partition")
        with open(disk, "r+b") as fh:
            fh.write(boot_img[:440])
            fh.seek(446)
            fh.write(mbr(total))
            fh.seek(512)
            fh.write(core_img)
        shutil.rmtree(root)
        meta = {"key": self.key, "release": self.release, "suite": self.suite,
                "kernels": kernels,
                "upgrade_packages": upgrade, "root_uuid": root_uuid,
                "disk_mb": DISK_MB, "built": time.time(),
                "seconds": {"debootstrap": round(t_boot, 1),
                            "total": round(time.monotonic() - t0, 1)}}
        log(f"VM image {self.key} built in {meta['seconds']['total']:.0f}s "
            f"(kernel {', '.join(kernels)})")
        return meta
