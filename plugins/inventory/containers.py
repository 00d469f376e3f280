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
  - Each container host is read the way Ansible reaches it in a task. Its connection plugin
    (P(ansible.builtin.ssh#connection) unless C(ansible_connection) names another, such as
    P(ansible.builtin.local#connection)) is set up from the host's variables, as the inventory sources before
    this one and the vars plugins (C(group_vars/) and C(host_vars/) beside the inventory) give them, and
    from C(ansible.cfg) and the environment (C(remote_user), C(private_key_file), C(host_key_checking),
    C(ANSIBLE_REMOTE_USER), ...). So C(ansible_user), C(ansible_port), keys, C(ansible_ssh_common_args)
    (for example a C(ProxyJump)) and the rest apply as they do for the host's own tasks.
  - A host whose variables ask for privilege escalation (C(ansible_become), its method, user and password,
    for a C(sudo) user such as C(admin)) is read through that become plugin; O(become) overrides it.
  - The controller runs the same code as M(ctrhost.fleet.container_info) on the host with the host's Python
    (C(ansible_python_interpreter), or C(python3) where it asks for discovery). The code travels on the
    command's input, as a zip of only the library files the report needs, so the host needs Python and the
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
  - "With O(cache=true) the reports are kept by the cache plugin until O(cache_timeout). The collection's own
    moves do not reach a controller's cache; run C(meta: refresh_inventory) after a play that moves containers
    (for example after the C(ctrhost.fleet.evacuate) role) to read the hosts again, or turn caching off."
  - "Under AWX or Ansible Automation Platform an inventory source gets no machine credential: give the
    source a credential that injects the SSH key (a custom credential type setting C(ANSIBLE_PRIVATE_KEY_FILE)
    from a file injector) and C(ANSIBLE_REMOTE_USER), or read the containers in a job template instead
    (M(ctrhost.fleet.container_info) with C(add_host)); the collection's guide 'Containers as Ansible hosts'
    shows both."
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
  become:
    description:
      - Read the container hosts with privilege escalation (the host's C(ansible_become_method), C(sudo) by
        default, to C(ansible_become_user), C(root) by default). When omitted, each host's C(ansible_become)
        decides, as in its tasks.
    type: bool
    version_added: 0.2.0
  use_vars_plugins:
    description:
      - Take the container hosts' variables from the vars plugins too (C(group_vars/) and C(host_vars/) beside
        the inventory sources), as Ansible does for their tasks. V(false) reads only the inventory sources.
    type: bool
    default: true
    version_added: 0.2.0
  filters:
    description:
      - Include or exclude containers by Jinja2 conditions over their host variables
        (C(ctrhost_container_name), C(ctrhost_container_host), C(ctrhost_container_state),
        C(ctrhost_container_template), ...). Checked in order; the first condition that matches decides. A
        container that no condition matches is included.
    type: list
    elements: dict
    default: []
    version_added: 0.2.0
    suboptions:
      include:
        description: Include the container when this condition is true.
        type: str
      exclude:
        description: Leave the container out when this condition is true.
        type: str
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

# Only the web containers, none of host3's, none made from the old template:
# plugin: ctrhost.fleet.containers
# filters:
#   - exclude: ctrhost_container_host == 'host3'
#   - exclude: ctrhost_container_template == 'debian-old'
#   - include: ctrhost_container_name is match('web')
#   - exclude: true

# Container hosts reached as a sudo user through a bastion (group_vars/ctrhost_hosts.yml):
#   ansible_user: admin
#   ansible_become: true
#   ansible_ssh_common_args: -o ProxyJump=admin@bastion.example.org

# Use: ansible-inventory -i inventory/ -i fleet.containers.yml --graph
"""

from concurrent.futures import ThreadPoolExecutor

from ansible import constants as C
from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleParserError
from ansible.inventory.helpers import get_group_vars
from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.playbook.play_context import PlayContext
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.plugins.loader import become_loader, connection_loader, shell_loader
from ansible.utils.display import Display
from ansible.utils.vars import combine_vars

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.ship import payload
from ansible_collections.ctrhost.fleet.plugins.module_utils.fleet import inventory as _inventory
from ansible_collections.ctrhost.fleet.plugins.module_utils.host import report as _report

display = Display()
# What the report needs on the host: its module and what that imports, nothing else.
REPORT_MODULE = "host.report"


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "ctrhost.fleet.containers"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(("containers.yml", "containers.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        for number, rule in enumerate(self.get_option("filters") or [], 1):  # before any host is read
            if len([key for key in ("include", "exclude") if rule.get(key) is not None]) != 1:
                raise AnsibleParserError("ctrhost.fleet.containers: filters[%d]: expected exactly one of "
                                         "include, exclude, got %s" % (number, sorted(rule)))
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
        for name, hostvars in hosts.items():  # how the containers' connection reaches their host
            hostvars.update(self._host_access(name, hostvars))
        if update_cache:
            self._cache[cache_key] = reports
        self._populate(reports, hosts)

    # -- reading --------------------------------------------------------------
    def _container_hosts(self):
        """{inventory name: variables} of the container hosts already in the inventory: the
        inventory sources' variables, the vars plugins' (group_vars/, host_vars/), as a task
        of the host would see them before its facts."""
        group = self.get_option("hosts")
        if group not in self.inventory.groups:
            display.warning("ctrhost.fleet.containers: no group %r in the inventory sources before this one; "
                            "no container host to read" % group)
            return {}
        sources = getattr(self.inventory, "processed_sources", None) or []
        use_vars = self.get_option("use_vars_plugins") and sources
        if use_vars:
            from ansible.vars.plugins import get_vars_from_inventory_sources
        out = {}
        for host in self.inventory.groups[group].get_hosts():
            groups = host.get_groups()
            hostvars = get_group_vars(groups)
            if use_vars:
                hostvars = combine_vars(hostvars, get_vars_from_inventory_sources(self.loader, sources, groups, "all"))
            hostvars = combine_vars(hostvars, host.get_vars())
            if use_vars:
                hostvars = combine_vars(hostvars, get_vars_from_inventory_sources(self.loader, sources, [host], "all"))
            out[host.name] = hostvars
        return out

    def _read_hosts(self, hosts):
        reports, failed = {}, {}
        if not hosts:
            return reports
        data = payload(REPORT_MODULE)
        prepared = {}
        for name, hostvars in hosts.items():  # plugin loading is not thread-safe: here, in order
            try:
                prepared[name] = self._prepare(name, hostvars, len(data))
            except (ValueError, AnsibleError) as exc:
                failed[name] = exc
        with ThreadPoolExecutor(max_workers=max(1, self.get_option("forks"))) as pool:
            futures = {name: pool.submit(self._read_one, name, conn, remote, data, self.get_option("timeout"))
                       for name, (conn, remote) in prepared.items()}
        for name in sorted(hosts):
            try:
                if name in failed:
                    raise failed[name]
                reports[name] = futures[name].result()
            except (ValueError, AnsibleError) as exc:
                if self.get_option("strict"):
                    raise AnsibleParserError("ctrhost.fleet.containers: %s" % to_native(exc)) from None
                display.warning("ctrhost.fleet.containers: %s; its containers are left out" % to_native(exc))
        return reports

    def _prepare(self, name, hostvars, size):
        """(connection, command) reading host ``name``, as its tasks would reach it."""
        variables = dict(hostvars, inventory_hostname=name, inventory_hostname_short=name.split(".")[0])
        templar = self._templar_for(variables)
        root = templar.template(variables.get("ctrhost_root") or self.get_option("root"))
        python = _inventory.python_of({"ansible_python_interpreter":
                                       templar.template(variables.get("ansible_python_interpreter") or "")})
        remote = "timeout -k 5 %d %s" % (self.get_option("timeout"), _report.remote_command(
            python, _report.BOOTSTRAP, size, dict(root=root)))
        return self._connection(name, variables, templar, remote)

    def _host_access(self, name, hostvars):
        """The user a container host is reached as and whether it escalates, resolved
        as for its tasks, for the containers' connection (``ansible_user`` of a container
        would be a user inside it)."""
        variables = dict(hostvars, inventory_hostname=name)
        templar = self._templar_for(variables)
        user = variables.get("ansible_user") or variables.get("ansible_ssh_user") or C.DEFAULT_REMOTE_USER
        escalate = self.get_option("become")
        if escalate is None:
            escalate = boolean(templar.template(variables.get("ansible_become", False)), strict=False)
        out = {_inventory.HOST_BECOME: bool(escalate)}
        if user:
            out[_inventory.HOST_USER] = templar.template(user)
        return out

    def _templar_for(self, variables):
        if hasattr(self.templar, "copy_with_new_env"):
            return self.templar.copy_with_new_env(available_variables=variables)
        self.templar.available_variables = variables
        return self.templar

    @staticmethod
    def _read_one(name, conn, remote, data, timeout):
        try:
            rc, stdout, stderr = conn.exec_command(remote, in_data=data, sudoable=True)
        except AnsibleConnectionFailure as exc:
            raise ValueError("%s: unreachable, its containers could not be read (%s)" % (name, to_native(exc))) from None
        except AnsibleError as exc:
            raise ValueError("%s: could not read its containers (%s)" % (name, to_native(exc))) from None
        finally:
            conn.close()
        if rc in (124, 137) and not stdout:
            raise ValueError("%s: reading its containers took longer than the timeout option (%d s)" % (name, timeout))
        if rc != 0 and not stdout:
            raise ValueError("%s: reading its containers failed (rc=%d): %s"
                             % (name, rc, to_text(stderr).strip()[-500:]))
        return _report.parse_report(name, to_text(stdout))

    def _connection(self, name, variables, templar, command):
        """The host's connection plugin set up as a task's would be, and ``command``
        wrapped by its become plugin when the host escalates."""
        kind = templar.template(variables.get("ansible_connection") or C.DEFAULT_TRANSPORT or "ssh")
        if kind == "smart":
            kind = "ssh"
        if kind in ("ctrhost.fleet.container", "container"):
            raise ValueError("%s: a container host cannot be reached through ctrhost.fleet.container" % name)
        context = PlayContext()
        context.remote_addr = variables.get("ansible_host") or name
        conn = connection_loader.get(kind, context, new_stdin=None)
        if conn is None:
            raise ValueError("%s: connection plugin %r not found" % (name, kind))
        conn.set_options(var_options=self._plugin_vars(conn, "connection", variables, templar))
        escalate = self.get_option("become")
        if escalate is None:
            escalate = boolean(templar.template(variables.get("ansible_become", False)), strict=False)
        if not escalate:
            return conn, command
        method = templar.template(variables.get("ansible_become_method") or C.DEFAULT_BECOME_METHOD)
        become = become_loader.get(method)
        if become is None:
            raise ValueError("%s: become plugin %r not found" % (name, method))
        become.set_options(var_options=self._plugin_vars(become, "become", variables, templar))
        conn.set_become_plugin(become)
        shell = shell_loader.get(templar.template(variables.get("ansible_shell_type") or "sh"))
        shell.executable = templar.template(variables.get("ansible_shell_executable") or C.DEFAULT_EXECUTABLE)
        return conn, become.build_become_command(command, shell)

    @staticmethod
    def _plugin_vars(plugin, kind, variables, templar):
        """The templated values of the variables that set ``plugin``'s options (as the
        task executor gathers them)."""
        out = {}
        if kind == "connection":
            out["_extras"] = {}
        for var in C.config.get_plugin_vars(kind, plugin._load_name):
            if var in variables:
                out[var] = templar.template(variables[var])
        return out

    # -- populating -----------------------------------------------------------
    def _populate(self, reports, hosts):
        strict = self.get_option("strict")
        entries = _inventory.host_entries(reports, hosts, prefix=self.get_option("group_prefix"),
                                          name_format=self.get_option("name_format"),
                                          states=self.get_option("states") or None,
                                          connection=self.get_option("connection") or None)
        for name, hostvars, groups in entries:
            if not self._wanted(hostvars, name):
                continue
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

    def _wanted(self, hostvars, name):
        """The first of O(filters) that matches decides; included when none does."""
        for number, rule in enumerate(self.get_option("filters") or [], 1):
            keys = [key for key in ("include", "exclude") if rule.get(key) is not None]
            condition = rule[keys[0]]
            try:  # the inventory file's own expression, evaluated as groups/compose are
                matched = condition if isinstance(condition, bool) else \
                    boolean(self._compose(condition, hostvars), strict=False)
            except Exception as exc:
                raise AnsibleParserError("ctrhost.fleet.containers: filters[%d].%s: %s (container %s)"
                                         % (number, keys[0], to_native(exc), name)) from None
            if matched:
                return keys[0] == "include"
        return True
