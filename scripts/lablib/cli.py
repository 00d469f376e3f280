# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab: N simulated container hosts on one Linux machine.

    scripts/lab [--name NAME] up [N]            bring up N hosts (default 3)
    scripts/lab [--name NAME] up --vm [N] [--release 13|12]
                                                bring up N Debian VM hosts (QEMU)
    scripts/lab [--name NAME] down [--keep-data]
    scripts/lab [--name NAME] status [--json]
    scripts/lab [--name NAME] exec -- CMD...     CMD on the controller side
    scripts/lab [--name NAME] host-exec HOST -- CMD...
    scripts/lab [--name NAME] reboot HOST        kill, clean and start one host (VM: a real reboot)
    scripts/lab [--name NAME] reset HOST         VM tier: power-cycle one VM (unplanned reboot)
    scripts/lab image [--rebuild] [--release 13|12]
                                                build (or find) the cached VM disk image

Each lab host is a set of namespaces made with standard tools: a network
namespace on a bridge, a mount namespace with a private /run and
/var/lib/ctrhost, a UTS namespace with its own hostname, and an sshd bound to
its own address. The bridge and the controller's address live in a network
namespace of their own (ctrhost-NAME-ctl): no private address is ever
configured in the machine's main network namespace. State lives in .lab/
(.lab-NAME/ for other names) at the repository root: inventory.ini, the
controller key id_ed25519, the host-to-host key migrate_ed25519 (also in each
host's /var/lib/ctrhost/ssh/ with an ssh config), and per host its sshd
config, log and /var/lib/ctrhost content (hosts/HOST/lib).

`exec` sets ANSIBLE_INVENTORY (the lab's inventory.ini) and ANSIBLE_CONFIG
(the repository's ansible.cfg); `host-exec` enters the host's network, mount
and UTS namespaces through its sshd's pid.

The VM tier (`up --vm`) boots real Debian hosts under QEMU instead (stock kernel,
systemd, cgroup v2, GRUB), from copy-on-write overlays of one disk image that is built
once from this machine's apt mirror and cached in .cache/vm/ under a key of its recipe
(one image per release). The release is Debian 12 (bookworm) or 13 (trixie): `--release`,
else the environment variable CTRHOST_VM_RELEASE, else 12 (lablib.DEFAULT_RELEASE);
`scripts/test vm` passes CTRHOST_VM_RELEASE on (`CTRHOST_VM_RELEASE=13 scripts/test vm`
runs the VM scenario on Debian 13).
KVM is used where a guest really boots with it (probed once), TCG otherwise. The VMs sit
on taps on the same controller bridge; `host-exec` runs CMD over SSH, `reboot` reboots the
guest through its firmware and boot loader, `reset` cuts its power.
"""

import argparse
import json
import os
import shutil
import signal

from lablib import DEFAULT_RELEASE, MAX_HOSTS, RELEASE_ENV, TOOLS, LabError, log
from lablib.lab import Lab
from lablib.vmimage import RELEASES, Image

MAX_VMS = 8


def parse(argv):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", default=argparse.SUPPRESS,
                        help="lab name (default: lab; state in .lab-NAME/)")
    parser = argparse.ArgumentParser(prog="scripts/lab", parents=[common], description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True,
                                metavar="{up,down,status,exec,host-exec,reboot,reset,image}")
    p = sub.add_parser("up", parents=[common], help="bring the lab up")
    p.add_argument("count", nargs="?", type=int, default=3, help="number of hosts (default 3)")
    p.add_argument("--vm", action="store_true", help="real Debian VMs under QEMU")
    p.add_argument("--release", choices=sorted(RELEASES), default=None,
                   help=f"VM tier: Debian release of the VMs (default ${RELEASE_ENV}, "
                        f"else {DEFAULT_RELEASE})")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                   help="VM acceleration (default auto: KVM where a guest boots with it)")
    p.add_argument("--memory", type=int, default=1536, help="MiB per VM (default 1536)")
    p.add_argument("--cpus", type=int, default=1, help="vCPUs per VM (default 1)")
    p = sub.add_parser("down", parents=[common], help="remove everything the lab made")
    p.add_argument("--keep-data", action="store_true",
                   help="keep each host's /var/lib/ctrhost content")
    p = sub.add_parser("status", parents=[common], help="show the lab")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("exec", parents=[common], help="run CMD on the controller side")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = sub.add_parser("host-exec", parents=[common], help="run CMD inside a lab host")
    p.add_argument("host")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = sub.add_parser("reboot", parents=[common], help="restart one lab host")
    p.add_argument("host")
    p = sub.add_parser("reset", parents=[common], help="VM tier: power-cycle one VM")
    p.add_argument("host")
    p = sub.add_parser("image", parents=[common], help="build or find the VM disk image")
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--release", choices=sorted(RELEASES), default=None,
                   help=f"Debian release of the image (default ${RELEASE_ENV}, "
                        f"else {DEFAULT_RELEASE})")
    p = sub.add_parser("_host-init")
    p.add_argument("host")
    p.add_argument("--boot", action="store_true")
    args = parser.parse_args(argv)
    if getattr(args, "command", None) is not None:
        if args.command[:1] == ["--"]:
            args.command = args.command[1:]
        if not args.command:
            parser.error(f"{args.cmd}: expected a command after --")
    return args


def main(argv):
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `scripts/lab status | head`
    args = parse(argv)
    try:
        lab = Lab(getattr(args, "name", "lab"))
        if args.cmd == "status":
            return lab.status(as_json=args.json)
        if os.geteuid() != 0:
            raise LabError("the lab needs root (namespaces, mounts, sshd)")
        missing = [t for t in TOOLS if not shutil.which(t)]
        if missing:
            raise LabError(f"missing tools: {', '.join(missing)} (run `make setup`)")
        if args.cmd == "image":
            print(json.dumps(Image(args.release).ensure(rebuild=args.rebuild), indent=2,
                             sort_keys=True))
            return 0
        if args.cmd == "up":
            if not 1 <= args.count <= (MAX_VMS if args.vm else MAX_HOSTS):
                raise LabError(f"N: expected 1..{MAX_VMS if args.vm else MAX_HOSTS} hosts, "
                               f"got {args.count}")
            if args.vm:
                return lab.up(args.count, vm=True, accel=args.accel, memory=args.memory,
                              cpus=args.cpus, release=args.release)
            return lab.up(args.count)
        if args.cmd == "down":
            return lab.down(args.keep_data)
        if args.cmd in ("reboot", "reset"):
            return lab.reboot(args.host, hard=args.cmd == "reset")
        if args.cmd == "exec":
            return lab.exec_controller(args.command)
        if args.cmd == "host-exec":
            return lab.exec_host(args.host, args.command)
        if args.cmd == "_host-init":
            return lab.host_init(args.host, boot=args.boot)
    except LabError as exc:
        log(f"error: {exc}")
        return 2
    return 2
