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
  - Files are streamed through the same command channel, so ownership inside a user-namespaced container is
    the container's root; C(put_file) and C(fetch_file) hold one file in memory at a time.
  - The P(ctrhost.fleet.containers#inventory) inventory sets the host variables this plugin needs.
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
"""

EXAMPLES = r"""
# Inventory: the ctrhost.fleet.containers inventory sets ansible_connection and the host's SSH variables.
# Without it, in an INI inventory:
#   web1 ansible_connection=ctrhost.fleet.container ansible_host=192.0.2.11 ansible_user=root
- name: Inside each running container
  hosts: ctrhost_state_running
  gather_facts: true
  tasks:
    - name: A file inside the container
      ansible.builtin.copy:
        content: "managed\n"
        dest: /etc/motd
        mode: "0644"
"""

import os
import shlex

from ansible.errors import AnsibleConnectionFailure, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_native
from ansible.plugins.connection import ConnectionBase
from ansible.plugins.loader import connection_loader
from ansible.utils.display import Display

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

    def host_command(self, cmd):
        """The command line the container host runs for ``cmd`` (a shell command line).

        When the runtime fails with its own 255 (it could not exec: the container
        is not running), the host answers ``NOT_RUNNING_RC`` and a message naming
        the container's state instead, which becomes an unreachable host."""
        name = self.get_option("container_name")
        prefix = ["sudo", "-n", "--"] if self.get_option("host_become") else []
        runtime = " ".join(shlex.quote(p) for p in prefix + self._runtime_cmd())
        status = ("$(%s state %s 2>/dev/null | sed -n 's/^ *\"status\": *\"\\(.*\\)\".*/\\1/p')"
                  % (runtime, shlex.quote(name)))
        if self.get_option("exec_method") == "nsenter":
            pid = ("$(%s state %s | sed -n 's/^ *\"pid\": *\\([0-9]*\\).*/\\1/p')"
                   % (runtime, shlex.quote(name)))
            run = "%s nsenter --all --target %s -- /bin/sh -c %s" % (
                " ".join(shlex.quote(p) for p in prefix), pid, shlex.quote(cmd))
        else:  # the runtime's exec, in the container's time namespace too (see _timens)
            run = " ".join(shlex.quote(p) for p in prefix + exec_argv(
                self.get_option("runtime"), self._runtime_cmd(), name) + ["exec", name, "/bin/sh", "-c", cmd])
        # 255: runc could not exec; 1: nsenter found no pid (or the command's own 1).
        return ("%s; rc=$?; if [ $rc -eq 255 ] || [ $rc -eq 1 ]; then s=%s; "
                "if [ \"$s\" != running ]; then echo \"%s: container \"%s\" is ${s:-stopped} on $(hostname), "
                "not running\" >&2; rc=%d; fi; fi; exit $rc"
                % (run, status, NOT_RUNNING_MARK, shlex.quote(name), NOT_RUNNING_RC))

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        self._connect()
        name = self.get_option("container_name")
        display.vvv("EXEC in container %s: %s" % (name, cmd), host=self._play_context.remote_addr)
        rc, stdout, stderr = self.ssh_type_conn.exec_command(self.host_command(cmd), in_data=in_data,
                                                             sudoable=sudoable)
        if rc == NOT_RUNNING_RC:  # with a tty (-tt) the message arrives on stdout
            for line in (stderr + b"\n" + stdout).splitlines():
                if line.startswith(to_bytes(NOT_RUNNING_MARK + ":")):
                    raise AnsibleConnectionFailure(to_native(line).strip())
        return rc, stdout, stderr

    # -- files --------------------------------------------------------------------
    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        display.vvv("PUT %s TO %s in container %s" % (in_path, out_path, self.get_option("container_name")),
                    host=self._play_context.remote_addr)
        if not os.path.exists(to_bytes(in_path, errors="surrogate_or_strict")):
            raise AnsibleFileNotFound("file or module does not exist: %s" % to_native(in_path))
        with open(to_bytes(in_path, errors="surrogate_or_strict"), "rb") as handle:
            data = handle.read()
        # ``cat`` also when the file is empty: in_data=b"" would mean no stdin at all.
        cmd = "cat > %s" % shlex.quote(out_path) if data else ": > %s" % shlex.quote(out_path)
        rc, stdout, stderr = self.exec_command(cmd, in_data=data or None, sudoable=False)
        if rc != 0:
            raise AnsibleConnectionFailure("failed to write %s in container %s: %s"
                                           % (out_path, self.get_option("container_name"),
                                              to_native(stderr or stdout).strip()))

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        display.vvv("FETCH %s TO %s from container %s" % (in_path, out_path, self.get_option("container_name")),
                    host=self._play_context.remote_addr)
        rc, stdout, stderr = self.exec_command("cat %s" % shlex.quote(in_path), sudoable=False)
        if rc != 0:
            raise AnsibleConnectionFailure("failed to read %s in container %s: %s"
                                           % (in_path, self.get_option("container_name"),
                                              to_native(stderr or stdout).strip()))
        with open(to_bytes(out_path, errors="surrogate_or_strict"), "wb") as handle:
            handle.write(stdout)
