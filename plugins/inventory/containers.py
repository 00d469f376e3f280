# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: containers
short_description: The containers of the container hosts as Ansible hosts
version_added: 0.1.0
description:
  - Lists every container of the container hosts already in the inventory (for example an INI or YAML
    inventory given before this source with C(-i)) as an Ansible host of its own.
  - Each container host is read over SSH the way Ansible reaches it, with its C(ansible_host), C(ansible_port),
    C(ansible_user), private key and SSH arguments. The controller runs the same code as
    M(ctrhost.fleet.container_info) on the host with the host's Python, so the host needs Python and the
    collection's host requirements, not the collection.
  - A container host that cannot be read is reported in a warning and its containers are left out, unless
    O(strict=true).
  - "Host variables of each container: C(ctrhost_container_host) (the inventory name of its container host),
    C(ctrhost_container_name), C(ctrhost_container_state), C(ctrhost_container_pid),
    C(ctrhost_container_template), C(ctrhost_container_runtime), C(ctrhost_container_hostname),
    C(ctrhost_container_limits) (declared), C(ctrhost_container_effective_limits) (read from the cgroup
    files), C(ctrhost_container_interfaces), C(ctrhost_container_ipv4) and C(ctrhost_container_ipv6) (plain
    addresses), C(ctrhost_root), and the container host's SSH connection variables, so that the
    P(ctrhost.fleet.container#connection) connection reaches the container through its host."
  - "Groups: C(ctrhost_containers) (all), C(ctrhost_host_<host>), C(ctrhost_state_<state>) and
    C(ctrhost_template_<template>); characters that are not letters, digits or C(_) become C(_)."
  - The inventory source is a YAML file whose name ends in C(containers.yml) or C(containers.yaml).
    Give it after the source that defines the container hosts (C(-i hosts.ini -i fleet.containers.yml));
    in an inventory directory, name it so that it sorts after that source.
author:
  - ctrhost.fleet maintainers (@ctrhost)
requirements:
  - ssh on the controller, Python 3 (with pyroute2 for live addresses) on the container hosts
extends_documentation_fragment:
  - ansible.builtin.constructed
  - ansible.builtin.inventory_cache
options:
  plugin:
    description: The name of this plugin; it makes the file an inventory source for it.
    type: str
    required: true
    choices: [ctrhost.fleet.containers]
  hosts:
    description:
      - The group of the inventory whose hosts are the container hosts.
    type: str
    default: ctrhost_hosts
  root:
    description:
      - The collection's root directory on the container hosts. A host's own C(ctrhost_root) variable wins.
    type: path
    default: /var/lib/ctrhost
  states:
    description:
      - Only containers in these states. All containers when empty.
    type: list
    elements: str
    default: []
  name_format:
    description:
      - The inventory name of a container; C({name}) is the container name and C({host}) the inventory name of
        its container host. A container name is unique across the fleet while it runs (migration moves it),
        so the default is the container name.
    type: str
    default: "{name}"
  group_prefix:
    description: Prefix of the groups and of the host variables this plugin makes.
    type: str
    default: ctrhost_
  connection:
    description:
      - The C(ansible_connection) of the containers. An empty string leaves it unset (for example to reach
        containers that run their own sshd at their own address with O(compose)).
    type: str
    default: ctrhost.fleet.container
  timeout:
    description: Seconds to wait for one container host's answer (connection and reading).
    type: int
    default: 60
  forks:
    description: Container hosts read at the same time.
    type: int
    default: 8
"""

EXAMPLES = r"""
# fleet.containers.yml: every container of the group ctrhost_hosts, reached through its host
plugin: ctrhost.fleet.containers

# Only running containers, with a group per memory limit and the first address as a variable:
# plugin: ctrhost.fleet.containers
# states: [running]
# compose:
#   container_address: ctrhost_container_ipv4 | first | default(omit)
# keyed_groups:
#   - key: ctrhost_container_limits.memory | default('none')
#     prefix: memory
# groups:
#   big: (ctrhost_container_limits.memory | default(0)) > 1073741824
# cache: true
# cache_plugin: ansible.builtin.jsonfile
# cache_connection: ~/.cache/ctrhost-inventory
# cache_timeout: 300

# Use: ansible-inventory -i hosts.ini -i fleet.containers.yml --graph
"""

import subprocess
from concurrent.futures import ThreadPoolExecutor

from ansible.errors import AnsibleParserError
from ansible.inventory.helpers import get_group_vars
from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.utils.display import Display

from ansible_collections.ctrhost.fleet.plugins.module_utils.host import report as _report
from ansible_collections.ctrhost.fleet.plugins.module_utils.fleet import inventory as _inventory
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.ship import payload

display = Display()


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "ctrhost.fleet.containers"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(("containers.yml", "containers.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        hosts = self._container_hosts()
        cache_key = self.get_cache_key(path)
        use_cache = self.get_option("cache") and cache
        update_cache = self.get_option("cache") and not cache
        reports = None
        if use_cache:
            try:
                reports = self._cache[cache_key]
            except KeyError:
                update_cache = True
            else:
                if sorted(reports) != sorted(hosts):  # the container hosts changed
                    reports, update_cache = None, True
        if reports is None:
            reports = self._read_hosts(hosts)
        if update_cache:
            self._cache[cache_key] = reports
        self._populate(reports, hosts)

    # -- reading --------------------------------------------------------------
    def _container_hosts(self):
        """{inventory name: variables} of the container hosts already in the inventory."""
        group = self.get_option("hosts")
        if group not in self.inventory.groups:
            display.warning("ctrhost.fleet.containers: no group %r in the inventory sources before this one; "
                            "no container host to read" % group)
            return {}
        out = {}
        for host in self.inventory.groups[group].get_hosts():
            out[host.name] = dict(get_group_vars(host.get_groups()), **host.get_vars())
        return out

    def _read_hosts(self, hosts):
        reports = {}
        if not hosts:
            return reports
        data = payload()
        with ThreadPoolExecutor(max_workers=max(1, self.get_option("forks"))) as pool:
            futures = {name: pool.submit(self._read_one, name, hostvars, data)
                       for name, hostvars in hosts.items()}
        for name, future in sorted(futures.items()):
            try:
                reports[name] = future.result()
            except ValueError as exc:
                if self.get_option("strict"):
                    raise AnsibleParserError("ctrhost.fleet.containers: %s" % to_native(exc)) from None
                display.warning("ctrhost.fleet.containers: %s; its containers are left out" % to_native(exc))
        return reports

    def _read_one(self, name, hostvars, data):
        root = hostvars.get("ctrhost_root") or self.get_option("root")
        remote = _report.remote_command(_inventory.python_of(hostvars), _report.BOOTSTRAP, len(data),
                                           dict(root=root))
        timeout = self.get_option("timeout")
        cmd = _inventory.ssh_command(name, hostvars, remote, connect_timeout=min(timeout, 30))
        try:
            proc = subprocess.run(cmd, input=data, capture_output=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ValueError("%s: could not read its containers over SSH (%s)" % (name, exc)) from None
        if proc.returncode == 255:
            raise ValueError("%s: unreachable over SSH: %s" % (name, to_text(proc.stderr).strip()))
        if proc.returncode != 0 and not proc.stdout:
            raise ValueError("%s: reading its containers failed (rc=%d): %s"
                             % (name, proc.returncode, to_text(proc.stderr).strip()[-500:]))
        return _report.parse_report(name, to_text(proc.stdout))

    # -- populating -----------------------------------------------------------
    def _populate(self, reports, hosts):
        strict = self.get_option("strict")
        entries = _inventory.host_entries(reports, hosts, prefix=self.get_option("group_prefix"),
                                          name_format=self.get_option("name_format"),
                                          states=self.get_option("states") or None,
                                          connection=self.get_option("connection") or None)
        for name, hostvars, groups in entries:
            for group in groups:
                self.inventory.add_group(group)
            self.inventory.add_host(name, group=groups[0])
            for group in groups[1:]:
                self.inventory.add_child(group, name)
            for key, value in hostvars.items():
                self.inventory.set_variable(name, key, value)
            self._set_composite_vars(self.get_option("compose"), hostvars, name, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), hostvars, name, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars, name, strict=strict)
