# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab: N simulated container hosts on one Linux machine.

    scripts/lab [--name NAME] up [N]            bring up N hosts (default 3)
    scripts/lab [--name NAME] down [--keep-data]
    scripts/lab [--name NAME] status [--json]
    scripts/lab [--name NAME] exec -- CMD...     CMD on the controller side
    scripts/lab [--name NAME] host-exec HOST -- CMD...
    scripts/lab [--name NAME] reboot HOST        kill, clean and start one host

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
"""

import argparse
import os
import shutil
import signal

from lablib import MAX_HOSTS, TOOLS, LabError, log
from lablib.lab import Lab


def parse(argv):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", default=argparse.SUPPRESS,
                        help="lab name (default: lab; state in .lab-NAME/)")
    parser = argparse.ArgumentParser(prog="scripts/lab", parents=[common], description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True,
                                metavar="{up,down,status,exec,host-exec,reboot}")
    p = sub.add_parser("up", parents=[common], help="bring the lab up")
    p.add_argument("count", nargs="?", type=int, default=3, help="number of hosts (default 3)")
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
    p = sub.add_parser("_host-init")
    p.add_argument("host")
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
        if args.cmd == "up":
            if not 1 <= args.count <= MAX_HOSTS:
                raise LabError(f"N: expected 1..{MAX_HOSTS} hosts, got {args.count}")
            return lab.up(args.count)
        if args.cmd == "down":
            return lab.down(args.keep_data)
        if args.cmd == "reboot":
            return lab.reboot(args.host)
        if args.cmd == "exec":
            return lab.exec_controller(args.command)
        if args.cmd == "host-exec":
            return lab.exec_host(args.host, args.command)
        if args.cmd == "_host-init":
            return lab.host_init(args.host)
    except LabError as exc:
        log(f"error: {exc}")
        return 2
    return 2
