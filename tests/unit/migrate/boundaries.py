"""The boundaries of a migration's unit tests, shared by tests/unit/test_migrate_*.py.

Only processes are stood in for: the container runtime (``FAKE_RUNTIME``, a shell script
keeping each container's status in ``<--root>/<name>/status``, writing CRIU's images on
``checkpoint``), CRIU's own binary (``FAKE_CRIU``: it says no to everything) and the SSH
link to the destination (``LocalLink``: the agent's answers are scripted, rsync copies
locally and a remote command runs here, so that the frozen window's tar stream really
unpacks into a directory standing for the destination). Everything between them is the
library's own code.
"""

from __future__ import annotations

import os
import shutil

FAKE_RUNTIME = r"""#!/bin/sh
# A container runtime standing in for runc: state files under --root (shell builtins
# only, but for ln: a test's many calls stay fast).
[ "$1" = "--version" ] && { echo "runc version 1.1.12"; echo "spec: 1.0.2"; exit 0; }
root=$2; shift 2
[ "$1" = "--criu" ] && shift 2
sub=$1; shift
echo "$sub $*" >> "$root/calls"
for name; do :; done
st="$root/$name/status"  # the runtime knows a container by its directory
case $sub in
state)
    [ -f "$st" ] || { echo "container \"$name\" does not exist" >&2; exit 1; }
    read -r status < "$st"
    printf '{"id": "%s", "pid": 0, "status": "%s"}\n' "$name" "$status";;
pause) echo paused > "$st";;
resume) echo running > "$st";;
delete) rm -rf "${st%/status}";;
kill) ;;
checkpoint)
    while [ $# -gt 1 ]; do
        case $1 in
        --image-path) images=$2; shift;;
        --parent-path) ln -s "$2" "$images/parent"; shift;;
        esac
        shift
    done
    if [ -f "$root/fail-checkpoint" ]; then
        echo "(00.100000) Error (criu/cr-dump.c:2100): Dumping FAILED." > "$images/dump.log"
        echo "criu failed" >&2
        exit 1
    fi
    echo "(00.100000) Dumping finished successfully" > "$images/dump.log"
    printf '%8192s' '' > "$images/pages-1.img"
    echo inventory > "$images/inventory.img";;
esac
"""

FAKE_CRIU = "#!/bin/sh\nexit 1\n"


def script(path, text):
    with open(path, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o755)
    return str(path)


class FakeRuntime:
    """Files of ``FAKE_RUNTIME``'s state: a container's status, the calls, failures."""

    def __init__(self, tmp_path):
        self.binary = script(tmp_path / "runc", FAKE_RUNTIME)
        self.criu = script(tmp_path / "criu", FAKE_CRIU)

    def root(self, layout):
        return os.path.join(layout.runtime_root, "runc")

    def set_status(self, layout, name, status):
        os.makedirs(os.path.join(self.root(layout), name), exist_ok=True)
        with open(os.path.join(self.root(layout), name, "status"), "w") as handle:
            handle.write(status + "\n")

    def status(self, layout, name):
        try:
            with open(os.path.join(self.root(layout), name, "status")) as handle:
                return handle.read().strip()
        except FileNotFoundError:
            return "absent"

    def calls(self, layout):
        try:
            with open(os.path.join(self.root(layout), "calls")) as handle:
                return [line.split()[0] for line in handle]
        except FileNotFoundError:
            return []

    def fail_checkpoint(self, layout):
        open(os.path.join(self.root(layout), "fail-checkpoint"), "w").close()


class LocalLink:
    """The SSH link: the agent's answers scripted per request (``answers``: op -> dict or
    callable(req)), every request recorded, rsync a local copy, remote commands run here
    with ``dest_root`` standing for the destination's root."""

    def __init__(self, dest_root, answers=None):
        self.dest, self.python = "dest", "python3"
        self.dest_root = str(dest_root)
        self.answers = dict(fence=dict(ok=True, state="fenced"),
                            restore=dict(ok=True, pid=4711, stats={}, timings={}))
        self.answers.update(answers or {})
        self.requests = []
        self.agent_id = [4242, 1]
        self.sessions = 1
        self.closed = False

    # the destination's agent
    def call(self, op, timeout=600, **req):
        self.requests.append(op)
        answer = self.answers.get(op, dict(ok=True))
        if callable(answer):
            return answer(req)
        if op == "prepare" and answer.get("ok"):
            return self.prepare(req["name"], req["meta"]["id"])
        return dict(answer)

    def prepare(self, name, cid):
        incoming = os.path.join(self.dest_root, "checkpoints", name, ".incoming-" + cid)
        upper = os.path.join(self.dest_root, "containers", name, "upper")
        os.makedirs(os.path.join(incoming, "images"))
        os.makedirs(upper)
        return dict(ok=True, incoming=incoming, upper=upper)

    def start_agent(self):
        self.sessions += 1
        self.agent_id = [4242 + self.sessions, 1]

    def drop_agent(self):
        self.requests.append("(dropped)")

    def check(self):
        return True

    def reopen(self):
        pass

    def close(self):
        self.closed = True

    def forward_remote(self, remote_port, local_port):
        self.requests.append("(forward)")

    # SSH and rsync
    def ssh_cmd(self, _dest, remote):
        return ["sh", "-c", remote]

    def rsync(self, src, dst_path, timeout=3600, whole_file=False, vanished_ok=False):
        shutil.copytree(src, dst_path, symlinks=True, dirs_exist_ok=True)
        return sum(os.path.getsize(os.path.join(base, f)) for base, _d, files in os.walk(src)
                   for f in files)
