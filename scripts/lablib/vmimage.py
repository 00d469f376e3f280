# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The VM tier's disk image: Debian 12 built once with debootstrap from this machine's own
apt mirror, cached under .cache/vm/<recipe key>/ and shared read-only by every VM (each
boots from a copy-on-write qcow2 overlay of it).

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

from lablib import PKG_DIR, REPO, LabError, log, run, write

SUITE = "bookworm"
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


def recipe_key():
    """Changes whenever anything that shapes the image changes."""
    digest = hashlib.sha256()
    digest.update(json.dumps([SUITE, DISK_MB, BASE_PACKAGES, REPO_PACKAGES]).encode())
    for path in sorted([os.path.realpath(__file__)] + glob.glob(os.path.join(GUEST_DIR, "*"))):
        with open(path, "rb") as fh:
            digest.update(os.path.basename(path).encode() + b"\0" + fh.read())
    return digest.hexdigest()[:16]


def apt_uris():
    """(mirror, security) URIs of this machine's own apt sources, for bookworm."""
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
                for suite in fields.get("Suites", []):
                    for uri in fields.get("URIs", []):
                        found.setdefault(suite, uri)
    if os.path.exists("/etc/apt/sources.list"):
        with open("/etc/apt/sources.list") as fh:
            for line in fh:
                words = [w for w in line.split() if not w.startswith("[")]
                if len(words) >= 3 and words[0] == "deb":
                    found.setdefault(words[2], words[1])
    mirror, security = found.get(SUITE), found.get(f"{SUITE}-security")
    if not mirror:
        raise LabError(f"the VM image needs a Debian {SUITE} mirror in this machine's apt "
                       f"sources (/etc/apt/sources.list or sources.list.d/*.sources)")
    return mirror, security or mirror


def mbr(total_sectors):
    """A DOS partition table with one bootable Linux partition from PART_START."""
    count = total_sectors - PART_START
    entry = struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff",
                        PART_START, count)
    return entry + b"\0" * 48 + b"\x55\xaa"  # 4 entries (1 used) + signature, at 446


class Image:
    def __init__(self):
        self.key = recipe_key()
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
        for old in os.listdir(CACHE):  # older recipes: the cache keeps one image
            if old != self.key and os.path.isdir(os.path.join(CACHE, old)):
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
        mirror, security = apt_uris()
        root = os.path.join(work, "rootfs")
        log(f"VM image {self.key}: debootstrap {SUITE} (a few minutes, once per recipe)")
        run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
             SUITE, root, mirror])
        t_boot = time.monotonic() - t0
        guest_tmp = os.path.join(root, "tmp", "ctrhost-guest")
        shutil.copytree(GUEST_DIR, guest_tmp)
        root_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ctrhost-lab-vm:{self.key}"))
        env = dict(os.environ, MIRROR=mirror, SECURITY=security, ROOT_UUID=root_uuid,
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
        meta = {"key": self.key, "suite": SUITE, "kernels": kernels,
                "upgrade_packages": upgrade, "root_uuid": root_uuid,
                "disk_mb": DISK_MB, "built": time.time(),
                "seconds": {"debootstrap": round(t_boot, 1),
                            "total": round(time.monotonic() - t0, 1)}}
        log(f"VM image {self.key} built in {meta['seconds']['total']:.0f}s "
            f"(kernel {', '.join(kernels)})")
        return meta
