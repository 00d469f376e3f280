# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Drive the lab (``scripts/lab``) from integration tests.

    lab = Lab("lt", count=2)
    lab.up()
    lab.ansible("all", "ping")                    # {host: result}, over real SSH
    lab.playbook("tests/integration/x.yml")       # PlaybookRun (rc, stats, changed)
    lab.host_exec("lt1", "cat /proc/self/cgroup") # inside the lab host's namespaces
    lab.down()

``shared_lab(name, count)`` is what the session fixture uses: several pytest
sessions may share one lab; the last one out takes it down.
"""

import contextlib
import fcntl
import json
import os
import shlex
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB_SCRIPT = os.path.join(ROOT, "scripts", "lab")
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
# The working tree first (tests/conftest.py links it there), then the installed copy.
COLLECTIONS_PATH = os.pathsep.join([os.path.join(ROOT, ".cache", "pytest-collections"),
                                    os.path.join(ROOT, "collections")])
CALLBACKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "callback_plugins")


class LabCommandError(AssertionError):
    """A command run through the lab failed; carries the whole CompletedProcess."""

    def __init__(self, what, proc):
        self.proc = proc
        super().__init__(f"{what} failed (rc={proc.returncode})\n--- stdout\n{proc.stdout}"
                         f"\n--- stderr\n{proc.stderr}")


def _check(what, proc, check):
    if check and proc.returncode != 0:
        raise LabCommandError(what, proc)
    return proc


class PlaybookRun:
    """Result of ``Lab.playbook``: rc, raw output and the json callback's data."""

    def __init__(self, proc):
        self.proc = proc
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        start = proc.stdout.find("{")
        self.data = json.loads(proc.stdout[start:]) if start >= 0 else {}
        self.stats = self.data.get("stats", {})

    @property
    def changed(self):
        """Total of changed tasks over all hosts (``changed=0`` on a second run)."""
        return sum(s.get("changed", 0) for s in self.stats.values())

    @property
    def failed(self):
        return sum(s.get("failures", 0) + s.get("unreachable", 0) for s in self.stats.values())

    def results(self, task_name=None):
        """[(task name, host, result)] in run order, optionally for one task name."""
        out = []
        for play in self.data.get("plays", []):
            for task in play.get("tasks", []):
                name = task.get("task", {}).get("name")
                if task_name is None or name == task_name:
                    out.extend((name, host, res) for host, res in task.get("hosts", {}).items())
        return out

    def result(self, task_name, host):
        for _name, h, res in self.results(task_name):
            if h == host:
                return res
        raise KeyError(f"no result of task {task_name!r} for host {host!r}")


class Lab:
    """One lab, named ``name`` (state in .lab-NAME/), with ``count`` hosts."""

    def __init__(self, name="it", count=2):
        self.name = name
        self.count = count
        self.dir = os.path.join(ROOT, ".lab" if name == "lab" else f".lab-{name}")
        self.inventory = os.path.join(self.dir, "inventory.ini")

    # ---- lifecycle
    def script(self, *args, check=True, timeout=120):
        proc = subprocess.run([LAB_SCRIPT, "--name", self.name, *args], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return _check(f"scripts/lab --name {self.name} {' '.join(args)}", proc, check)

    def up(self):
        self.script("up", str(self.count))
        return self.state()

    def down(self, keep_data=False):
        return self.script("down", *(["--keep-data"] if keep_data else []))

    def reboot(self, host):
        return self.script("reboot", host)

    def state(self):
        """``scripts/lab status --json``: hosts with address, pid, running."""
        proc = self.script("status", "--json", check=False)
        try:
            return json.loads(proc.stdout)
        except ValueError:
            raise LabCommandError("scripts/lab status --json", proc) from None

    @property
    def hosts(self):
        hosts = self.state()["hosts"]
        return sorted(hosts, key=lambda h: hosts[h]["index"])

    def host(self, host):
        return self.state()["hosts"][host]

    # ---- running things
    def exec(self, cmd, check=True, timeout=600, env=None, input=None):
        """Run cmd (list, or str for sh -c) on the controller side of the lab,
        with ANSIBLE_INVENTORY and ANSIBLE_CONFIG set, from the repo root;
        ctrhost.fleet comes from the working tree."""
        if isinstance(cmd, str):
            cmd = ["sh", "-c", cmd]
        full_env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                        ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
                        ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH)
        full_env.update(env or {})
        proc = subprocess.run([LAB_SCRIPT, "--name", self.name, "exec", "--", *cmd],
                              capture_output=True, text=True, timeout=timeout, env=full_env,
                              cwd=ROOT, input=input, stdin=None if input else subprocess.DEVNULL)
        return _check(f"lab exec {shlex.join(cmd)}", proc, check)

    def host_exec(self, host, cmd, check=True, timeout=300, input=None):
        """Run cmd (list, or str for sh -c) inside lab host ``host``'s namespaces."""
        if isinstance(cmd, str):
            cmd = ["sh", "-c", cmd]
        proc = subprocess.run([LAB_SCRIPT, "--name", self.name, "host-exec", host, "--", *cmd],
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              input=input, stdin=None if input else subprocess.DEVNULL)
        return _check(f"lab host-exec {host} {shlex.join(cmd)}", proc, check)

    def ssh(self, host, command, check=True, timeout=300):
        """Run a shell command on ``host`` over real SSH from the controller side."""
        rec = self.host(host)
        return self.exec(["ssh", "-i", os.path.join(self.dir, "id_ed25519"), "-o", "BatchMode=yes",
                          "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                          "-o", "LogLevel=ERROR", f"root@{rec['address']}", command],
                         check=check, timeout=timeout)

    def ansible(self, pattern, module, args=None, check=True, extra=(), timeout=600):
        """Ad hoc ``ansible PATTERN -m MODULE -a ARGS``: {host: result dict}."""
        cmd = [os.path.join(VENV_BIN, "ansible"), pattern, "-m", module, *extra]
        if args is not None:
            cmd += ["-a", args if isinstance(args, str) else json.dumps(args)]
        proc = self.exec(cmd, check=False, timeout=timeout, env=self._json_env())
        run = PlaybookRun(proc)
        if check and (proc.returncode != 0 or not run.data):
            raise LabCommandError(f"ansible {pattern} -m {module}", proc)
        return {host: res for _task, host, res in run.results()}

    def playbook(self, playbook, extra_vars=None, check_mode=False, diff=False, limit=None,
                 extra=(), expect_rc=0, timeout=1200):
        """``ansible-playbook`` on the lab; returns a PlaybookRun. ``expect_rc=None``
        accepts any exit status."""
        cmd = [os.path.join(VENV_BIN, "ansible-playbook"), playbook, *extra]
        if extra_vars:
            cmd += ["-e", json.dumps(extra_vars)]
        if check_mode:
            cmd.append("--check")
        if diff:
            cmd.append("--diff")
        if limit:
            cmd += ["--limit", limit]
        proc = self.exec(cmd, check=False, timeout=timeout, env=self._json_env())
        if expect_rc is not None and proc.returncode != expect_rc:
            raise LabCommandError(f"ansible-playbook {playbook} (expected rc={expect_rc})", proc)
        return PlaybookRun(proc)

    @staticmethod
    def _json_env():
        return {"ANSIBLE_STDOUT_CALLBACK": "lab_json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
                "ANSIBLE_CALLBACK_PLUGINS": CALLBACKS}


def _alive(pid, starttime):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            data = fh.read()
    except OSError:
        return False
    fields = data[data.rindex(")") + 2:].split()
    return fields[0] != "Z" and int(fields[19]) == starttime


def _my_identity():
    with open(f"/proc/{os.getpid()}/stat") as fh:
        data = fh.read()
    return [os.getpid(), int(data[data.rindex(")") + 2:].split()[19])]


@contextlib.contextmanager
def shared_lab(name="it", count=2):
    """A lab shared by concurrent pytest sessions: the first brings it up fresh,
    the last one out takes it down."""
    lab = Lab(name, count)
    os.makedirs(lab.dir, exist_ok=True)
    users_file = os.path.join(lab.dir, "users.json")
    me = _my_identity()

    @contextlib.contextmanager
    def users():
        with open(os.path.join(lab.dir, ".users.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with open(users_file) as fh:
                    current = [u for u in json.load(fh) if _alive(*u)]
            except (OSError, ValueError):
                current = []
            yield current
            with open(users_file, "w") as fh:
                json.dump(current, fh)

    with users() as current:
        if not current:
            lab.down()  # leftovers of a session that died: start clean
        try:
            lab.up()
        except Exception:
            if not current:
                lab.down()
            raise
        current.append(me)
    try:
        yield lab
    finally:
        with users() as current:
            if me in current:
                current.remove(me)
            if not current:
                lab.down()
