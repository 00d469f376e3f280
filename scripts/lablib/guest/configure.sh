#!/bin/sh
# Runs inside the VM image's root (chroot) while scripts/lab builds the image: turns a
# debootstrap minbase into a bootable, SSH-reachable Debian host (12 or 13) and fills a local
# apt repository with what the host role and the kernel upgrade install later (the VMs reach
# no mirror). Arguments: the packages of the local repository. Environment: SUITE (bookworm,
# trixie), MIRROR and SECURITY (apt URIs of this machine, used only during the build), ROOT_UUID.
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
REPO_DIR=/var/lib/ctrhost-lab/apt

# Host identity (hostname, address, keys) comes from QEMU's fw_cfg at every boot.
printf 'localhost\n' > /etc/hostname
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > /etc/hosts
# prjquota: project quota limits enforced on the root (limits.disk); ext4 takes quota options
# at the first mount only, so the kernel command line carries them too (rootflags).
printf 'LABEL=vmroot / ext4 errors=remount-ro,prjquota 0 1\n' > /etc/fstab
# Every VM makes its own machine id at its first boot (bridge MACs derive from it).
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
install -m 0755 /tmp/ctrhost-guest/ctrhost-lab-identity /usr/local/sbin/ctrhost-lab-identity
install -m 0644 /tmp/ctrhost-guest/ctrhost-lab-identity.service /etc/systemd/system/
mkdir -p /etc/systemd/system/sysinit.target.wants
ln -sf /etc/systemd/system/ctrhost-lab-identity.service \
    /etc/systemd/system/sysinit.target.wants/ctrhost-lab-identity.service
mkdir -p /etc/ssh/sshd_config.d /etc/systemd/networkd.conf.d /root/.ssh
install -m 0644 /tmp/ctrhost-guest/sshd.conf /etc/ssh/sshd_config.d/ctrhost-lab.conf
install -m 0644 /tmp/ctrhost-guest/networkd.conf /etc/systemd/networkd.conf.d/ctrhost-lab.conf
chmod 0700 /root/.ssh
rm -f /etc/ssh/ssh_host_*
systemctl enable systemd-networkd.service ssh.service >/dev/null 2>&1
# Nothing that wakes up on its own and competes with the tests for the one emulated CPU.
for unit in apt-daily.timer apt-daily-upgrade.timer fstrim.timer e2scrub_all.timer \
            e2scrub_reap.service man-db.timer systemd-networkd-wait-online.service; do
    ln -sf /dev/null "/etc/systemd/system/$unit"
done

# Drivers for hardware a lab VM has no use for (no display, no wifi, no nested KVM, no IDE
# or floppy disk): udev loads them at every boot, seconds each under emulation.
for m in kvm kvm_amd kvm_intel cfg80211 drm vga16fb floppy psmouse pcspkr ccp ata_piix \
         ata_generic vmw_vmci vmw_vsock_vmci_transport vmw_vsock_virtio_transport_common \
         vsock_loopback; do
    printf 'blacklist %s\n' "$m"
done > /etc/modprobe.d/ctrhost-lab-vm.conf

# Boot: GRUB on the serial console; an initramfs with the few modules a QEMU guest needs
# (MODULES=most takes many minutes to build under emulation, a list a fraction of that).
sed -i 's/^MODULES=.*/MODULES=list/' /etc/initramfs-tools/initramfs.conf
printf 'virtio_pci\nvirtio_blk\nvirtio_net\next4\n' >> /etc/initramfs-tools/modules
cat > /etc/default/grub <<'GRUB'
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=ttyS0,115200 rootflags=prjquota"
GRUB_TERMINAL=serial
GRUB_SERIAL_COMMAND="serial --speed=115200 --unit=0"
GRUB_DISABLE_OS_PROBER=true
GRUB
printf 'grub-pc grub-pc/install_devices multiselect\ngrub-pc grub-pc/install_devices_empty boolean true\n' \
    | debconf-set-selections
apt-get install -y -q --no-install-recommends grub-pc >/dev/null
update-initramfs -u -k all >/dev/null 2>&1
mkdir -p /boot/grub/i386-pc
cp /usr/lib/grub/i386-pc/*.mod /usr/lib/grub/i386-pc/*.lst /boot/grub/i386-pc/
kver="$(find /boot -maxdepth 1 -name 'vmlinuz-*' | sed 's|/boot/vmlinuz-||' | sort -V | tail -n1)"
cat > /boot/grub/grub.cfg <<CFG
serial --speed=115200 --unit=0
terminal_input serial
terminal_output serial
set timeout=1
set default=0
menuentry 'Debian GNU/Linux, with Linux $kver' {
    insmod part_msdos
    insmod ext2
    search --no-floppy --fs-uuid --set=root $ROOT_UUID
    linux /boot/vmlinuz-$kver root=UUID=$ROOT_UUID ro rootflags=prjquota console=ttyS0,115200
    initrd /boot/initrd.img-$kver
}
CFG
grub-mkimage -O i386-pc -o /tmp/ctrhost-guest/core.img -p '(hd0,msdos1)/boot/grub' \
    biosdisk part_msdos ext2 normal linux search search_fs_uuid serial terminal echo test \
    gzio configfile
cp /usr/lib/grub/i386-pc/boot.img /tmp/ctrhost-guest/boot.img

# The local apt repository: the packages the host role installs and the next kernel.
cat > /etc/apt/sources.list <<SRC
deb $MIRROR $SUITE main
deb $SECURITY $SUITE-security main
SRC
apt-get update -q >/dev/null
apt-get clean
apt-get install -y -q --download-only --no-install-recommends "$@" >/dev/null
mkdir -p "$REPO_DIR"
mv /var/cache/apt/archives/*.deb "$REPO_DIR/"
(cd "$REPO_DIR" && apt-ftparchive packages . > Packages)
printf 'deb [trusted=yes] file:%s ./\n' "$REPO_DIR" > /etc/apt/sources.list
rm -rf /var/lib/apt/lists/*
apt-get update -q >/dev/null
apt-get clean
# dpkg without a sync per unpacked file: the VM's disk is an overlay thrown away with the lab
# (QEMU cache=unsafe), and installing the kernel's thousands of modules under emulation is
# the longest step of the roll.
printf 'force-unsafe-io\n' > /etc/dpkg/dpkg.cfg.d/ctrhost-lab-unsafe-io
find /tmp -mindepth 1 -maxdepth 1 ! -name ctrhost-guest -exec rm -rf {} +
rm -rf /var/log/*.log /var/cache/debconf/*-old
