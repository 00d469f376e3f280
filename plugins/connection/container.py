# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: container
short_description: Run tasks inside a container of a container host, through the host's SSH connection
version_added: 0.1.0
description:
  - Runs every command of a task inside a system container managed by this collection, on a remote container
    host reached with Ansible's own P(ansible.builtin.ssh#connection) connection. All of that connection's
    options and variables (C(ansible_host), C(ansible_port), C(ansible_user), C(ansible_ssh_private_key_file),
    C(ansible_ssh_common_args), ...) describe the container host, and its SSH multiplexing is shared with the
    host's own tasks.
  - Commands enter the container with the OCI runtime's C(exec) (the container's namespaces, cgroup,
    capabilities and environment) or, with O(exec_method=nsenter), with C(nsenter) into the namespaces of its
    init process.
  - Either way a command joins the container's time namespace, so that it reads the container's clocks and
    a later checkpoint meets one time namespace; the runtime's C(exec) is wrapped in C(nsenter --time) for this
    (util-linux 2.36 or later; without it the command runs in the host's time namespace).
  - Commands run as O(user) inside the container, the container's root by default. Privilege escalation inside
    the container (C(become)) is the task's own become plugin (C(sudo), C(su), ...) run there, with its password
    prompt answered through the same channel; the container needs that tool.
  - The container host is reached as O(host_user) (its own C(ansible_user) as the
    P(ctrhost.fleet.containers#inventory) inventory copies it), with C(sudo -n) on the host when
    O(host_become) is set.
  - Files are streamed. C(put_file) copies the file to a temporary file on the container host with the SSH
    connection's own transfer (SFTP or SCP) and feeds it into the container from there, C(fetch_file) the other
    way round, so neither holds a file in memory. A file written in the container belongs to O(user).
  - The P(ctrhost.fleet.containers#inventory) inventory sets the host variables this plugin needs.
  - A container that is not running on its host makes the task unreachable with the reason, read on the host
    at that moment - its state there (stopped, paused), or, when the host ran it no more, the destination its
    last move from there took it to (the host's note of the move, kept in its run directory until it reboots),
    or that it moved or was removed. The inventory is then read again with C(ansible.builtin.meta) C(refresh_inventory).
author:
  - ctrhost.fleet maintainers (@ctrhost)
requirements:
  - On the container host, the OCI runtime (runc or crun) the container runs under, or nsenter
    (util-linux) with O(exec_method=nsenter). In the container, C(/bin/sh), and Python 3 for modules other
    than M(ansible.builtin.raw) and M(ansible.builtin.script).
extends_documentation_fragment:
  - ansible.builtin.connection_pipelining
options:
  container_name:
    description: The name of the container on its host.
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ctrhost_container_name
  runtime:
    description: The OCI runtime the container runs under.
    type: str
    default: runc
    choices: [runc, crun]
    vars:
      - name: ctrhost_container_runtime
  runtime_path:
    description: Path of the runtime binary on the container host; found on the host's C(PATH) when omitted.
    type: str
    vars:
      - name: ctrhost_container_runtime_path
  runtime_state_root:
    description: The runtime's state directory on the container host (the collection's layout).
    type: str
    default: /run/ctrhost/runtime
    vars:
      - name: ctrhost_container_runtime_state_root
  exec_method:
    description:
      - V(runtime) runs C(<runtime> exec), which also puts the command in the container's cgroup.
      - V(nsenter) enters the namespaces of the container's init process (pid from the runtime's state)
        without joining its cgroup; for runtimes or hosts where C(exec) is not wanted.
    type: str
    default: runtime
    choices: [runtime, nsenter]
    vars:
      - name: ctrhost_container_exec_method
  host_become:
    description:
      - Prefix the command run on the container host with C(sudo -n), for a host user that is not root.
    type: bool
    default: false
    vars:
      - name: ctrhost_container_host_become
  user:
    description:
      - The user inside the container that commands run as - a name of the container's C(/etc/passwd) (read on
        the host from the container's root filesystem under O(root)) or C(UID[:GID]). The container's root
        when omitted.
    type: str
    vars:
      - name: ctrhost_container_user
    version_added: 0.2.0
  host_user:
    description:
      - The user the container host is reached as over SSH. When omitted, the SSH connection's own user
        (C(ansible_user), C(remote_user), C(ANSIBLE_REMOTE_USER), ...).
    type: str
    vars:
      - name: ctrhost_container_host_user
    version_added: 0.2.0
  root:
    description: The collection's root directory on the container host (where O(user) is looked up).
    type: str
    default: /var/lib/ctrhost
    vars:
      - name: ctrhost_root
    version_added: 0.2.0
  command_timeout:
    description:
      - Seconds a command may run inside the container before the container host ends it (C(timeout) on the
        host; the task then fails with rc 124). V(0) sets no limit.
      - A frozen container refuses commands at once, naming its state, instead of hanging.
    type: int
    default: 0
    vars:
      - name: ctrhost_container_command_timeout
    version_added: 0.2.0
"""

EXAMPLES = r"""
# Inventory: the ctrhost.fleet.containers inventory sets ansible_connection and the host's SSH variables.
# Without it, in an INI inventory:
#   web1 ansible_connection=ctrhost.fleet.container ansible_host=192.0.2.11 ctrhost_container_host_user=root
- name: Inside each running container
  hosts: ctrhost_state_running
  gather_facts: true
  tasks:
    - name: A file inside the container
      ansible.builtin.copy:
        content: "managed\n"
        dest: /etc/motd
        mode: "0644"

- name: As an application user inside, with a limit per command
  hosts: web1
  vars:
    ctrhost_container_user: app
    ctrhost_container_command_timeout: 600
  tasks:
    - name: The application's config, owned by app
      ansible.builtin.copy:
        src: app.conf
        dest: /home/app/app.conf
        mode: "0600"
"""

import os
import re
import shlex

from ansible.errors import AnsibleConnectionFailure, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_native
from ansible.plugins.connection import ConnectionBase
from ansible.plugins.loader import connection_loader
from ansible.utils.display import Display

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime.timens import exec_argv

display = Display()

# What the host answers when the container cannot be entered because it is not running.
NOT_RUNNING_RC = 125
NOT_RUNNING_MARK = "ctrhost.fleet.container"


class Connection(ConnectionBase):
    """The container's commands, wrapped in the runtime's exec, over the host's ssh connection."""

    transport = "ctrhost.fleet.container"
    has_pipelining = True
    has_tty = False

    def __init__(self, play_context, *args, **kwargs):
        super().__init__(play_context, *args, **kwargs)
        # The task executor sets this one's options from the ssh plugin's variables
        # (the hook network_cli uses for its inner ssh connection).
        self.ssh_type_conn = connection_loader.get("ansible.builtin.ssh", play_context, "/dev/null")

    # -- connection ---------------------------------------------------------------
    def _connect(self):
        if not self._connected:
            self.ssh_type_conn._connect()
            self._connected = True
        return self

    def close(self):
        self.ssh_type_conn.close()
        self._connected = False

    def reset(self):
        self.ssh_type_conn.reset()

    # -- commands -----------------------------------------------------------------
    def _runtime_cmd(self):
        runtime = self.get_option("runtime")
        return [self.get_option("runtime_path") or runtime, "--root",
                os.path.join(self.get_option("runtime_state_root"), runtime)]

    def _user_lookup(self):
        """Shell lines that set ``cu`` (uid:gid), ``ch`` (home) and ``cn`` (name) of O(user)
        from the container's /etc/passwd, or fail naming what is missing."""
        user = self.get_option("user")
        if not user:
            return None
        passwd = os.path.join(self.get_option("root"), "containers", self.get_option("container_name"),
                              "rootfs", "etc", "passwd")
        numeric = re.fullmatch(r"(\d+)(?::(\d+))?", str(user))
        fallback = ('cu=%s; ch=/; cn=%s' % (shlex.quote("%s:%s" % (numeric.group(1), numeric.group(2) or "0")),
                                            shlex.quote(str(user)))) if numeric else \
            ('echo "%s: user %s is not in the /etc/passwd of container %s on $(hostname)" >&2; exit %d'
             % (NOT_RUNNING_MARK, shlex.quote(str(user)), shlex.quote(self.get_option("container_name")),
                NOT_RUNNING_RC))
        return ("ent=$(awk -F: -v u=%s '$1 == u || ($3 == u && u ~ /^[0-9]+$/) { print $1\":\"$3\":\"$4\":\"$6; exit }' "
                "%s 2>/dev/null); if [ -n \"$ent\" ]; then cn=${ent%%%%:*}; r=${ent#*:}; cu=${r%%%%:*}:$(echo \"$r\" "
                "| cut -d: -f2); ch=${r##*:}; [ -n \"$ch\" ] || ch=/; else %s; fi"
                % (shlex.quote(str(user).split(":")[0]), shlex.quote(passwd), fallback))

    def host_command(self, cmd, stdin_path=None, stdout_path=None):
        """The command line the container host runs for ``cmd`` (a shell command line).
        When the runtime fails with its own 255 (it could not exec: the container
        is not running, frozen or gone), the host answers ``NOT_RUNNING_RC`` and a
        message naming the container's state instead, which becomes an unreachable host.
        ``stdin_path``/``stdout_path``: files on the host the command reads or writes."""
        name = self.get_option("container_name")
        runtime = " ".join(shlex.quote(p) for p in self._runtime_cmd())
        lookup = self._user_lookup()
        status = ("$(%s state %s 2>/dev/null | sed -n 's/^ *\"status\": *\"\\(.*\\)\".*/\\1/p')"
                  % (runtime, shlex.quote(name)))
        if self.get_option("exec_method") == "nsenter":
            pid = ("$(%s state %s | sed -n 's/^ *\"pid\": *\\([0-9]*\\).*/\\1/p')"
                   % (runtime, shlex.quote(name)))
            who = (' --setuid "${cu%%:*}" --setgid "${cu#*:}" -- env HOME="$ch" USER="$cn" LOGNAME="$cn"'
                   if lookup else " --")
            run = "nsenter --all --target %s%s /bin/sh -c %s" % (pid, who, shlex.quote(cmd))
        else:  # the runtime's exec, in the container's time namespace too (see _timens)
            argv = exec_argv(self.get_option("runtime"), self._runtime_cmd(), name) + ["exec"]
            who = (' --user "$cu" --cwd "$ch" --env HOME="$ch" --env USER="$cn" --env LOGNAME="$cn"'
                   if lookup else "")
            run = "%s%s %s" % (" ".join(shlex.quote(p) for p in argv), who,
                               " ".join(shlex.quote(p) for p in (name, "/bin/sh", "-c", cmd)))
        limit = self.get_option("command_timeout") or 0
        if limit > 0:
            run = "timeout -k 5 %d %s" % (limit, run)
        if stdin_path:
            run += " < %s" % shlex.quote(stdin_path)
        if stdout_path:
            run += " > %s" % shlex.quote(stdout_path)
        # 255: runc could not exec; 1: nsenter found no pid (or the command's own 1).
        script = ("%s%s; rc=$?; if [ $rc -eq 255 ] || [ $rc -eq 1 ]; then s=%s; "
                  "if [ \"$s\" != running ]; then if [ -z \"$s\" ] && [ ! -d %s ]; then "
                  "m=$(sed -n 's/.*\"moved_to\": \"\\([^\"]*\\)\".*/\\1/p' %s 2>/dev/null); "
                  "w='moved to another host or removed'; [ -z \"$m\" ] || w=\"it was moved to $m\"; "
                  "echo \"%s: container \"%s\" is not on $(hostname): $w; "
                  "read the inventory again (meta: refresh_inventory)\" >&2; else "
                  "echo \"%s: container \"%s\" is ${s:-stopped} on $(hostname), not running\" >&2; fi; "
                  "rc=%d; fi; fi; exit $rc"
                  % ((lookup + "; ") if lookup else "", run, status,
                     shlex.quote(os.path.join(self.get_option("root"), "containers", name)),
                     shlex.quote(self._lock_path(name)),
                     NOT_RUNNING_MARK, shlex.quote(name), NOT_RUNNING_MARK, shlex.quote(name), NOT_RUNNING_RC))
        if self.get_option("host_become"):
            return "sudo -n -- /bin/sh -c %s" % shlex.quote(script)
        return script

    def _lock_path(self, name):
        """The container's lock file on its host (where a move from there notes where it went):
        in the run directory whose ``runtime`` holds the runtimes' state."""
        run_dir = os.path.dirname(self.get_option("runtime_state_root").rstrip("/"))
        return os.path.join(Layout(run_dir=run_dir).locks_dir, name + ".lock")

    def _on_host(self, become=True):
        """The SSH connection to the container host, as O(host_user) when given, with the
        task's become plugin (so that a password prompt inside the container is answered)
        unless ``become`` is false."""
        if self.get_option("host_user"):
            self.ssh_type_conn.set_option("remote_user", self.get_option("host_user"))
        self.ssh_type_conn.set_become_plugin(self.become if become else None)
        return self.ssh_type_conn

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        self._connect()
        name = self.get_option("container_name")
        display.vvv("EXEC in container %s: %s" % (name, cmd), host=self._play_context.remote_addr)
        return self._run(self.host_command(cmd), in_data=in_data, sudoable=sudoable)

    def _run(self, host_cmd, in_data=None, sudoable=False):
        rc, stdout, stderr = self._on_host().exec_command(host_cmd, in_data=in_data, sudoable=sudoable)
        if rc == NOT_RUNNING_RC:  # with a tty (-tt) the message arrives on stdout
            for line in (stderr + b"\n" + stdout).splitlines():
                if line.startswith(to_bytes(NOT_RUNNING_MARK + ":")):
                    raise AnsibleConnectionFailure(to_native(line).strip())
        return rc, stdout, stderr

    def _host_temp(self):
        """A new empty file on the container host, the host user's (for a transfer)."""
        self._connect()
        rc, stdout, stderr = self._on_host_plain("umask 077; mktemp \"${TMPDIR:-/tmp}/ctrhost-xfer.XXXXXXXX\"")
        path = to_native(stdout).strip().splitlines()[-1] if rc == 0 and stdout.strip() else ""
        if not path:
            raise AnsibleConnectionFailure("no temporary file on the container host of %s: %s"
                                           % (self.get_option("container_name"), to_native(stderr).strip()))
        return path

    def _on_host_plain(self, cmd):
        """``cmd`` on the container host as the host user, nothing escalated."""
        return self._on_host(become=False).exec_command(cmd, sudoable=False)

    # -- files --------------------------------------------------------------------
    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        name = self.get_option("container_name")
        display.vvv("PUT %s TO %s in container %s" % (in_path, out_path, name), host=self._play_context.remote_addr)
        if not os.path.exists(to_bytes(in_path, errors="surrogate_or_strict")):
            raise AnsibleFileNotFound("file or module does not exist: %s" % to_native(in_path))
        tmp = self._host_temp()
        try:
            self.ssh_type_conn.put_file(in_path, tmp)  # streamed by the SSH connection (sftp/scp)
            rc, stdout, stderr = self._run(self.host_command("cat > %s" % shlex.quote(out_path), stdin_path=tmp))
        finally:
            self._on_host_plain("rm -f %s" % shlex.quote(tmp))
        if rc != 0:
            raise AnsibleConnectionFailure("failed to write %s in container %s: %s"
                                           % (out_path, name, to_native(stderr or stdout).strip()))

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        name = self.get_option("container_name")
        display.vvv("FETCH %s TO %s from container %s" % (in_path, out_path, name),
                    host=self._play_context.remote_addr)
        tmp = self._host_temp()
        try:
            rc, stdout, stderr = self._run(self.host_command("cat %s" % shlex.quote(in_path), stdout_path=tmp))
            if rc != 0:
                raise AnsibleConnectionFailure("failed to read %s in container %s: %s"
                                               % (in_path, name, to_native(stderr or stdout).strip()))
            self.ssh_type_conn.fetch_file(tmp, out_path)  # streamed by the SSH connection
        finally:
            self._on_host_plain("rm -f %s" % shlex.quote(tmp))
