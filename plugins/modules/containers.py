#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: containers
short_description: Converge a set of containers on one host in one call
version_added: 0.1.0
description:
  - Converges every container of O(containers) on the host, in one module run, as
    M(ctrhost.fleet.container) would one by one (same options, same behaviour, same results per
    container), without paying for one module run per container.
  - Every item is validated before anything is done. A bad item fails the whole task naming the item
    and the field (for example C(containers[3].limits.memory)) and nothing is changed.
  - An item that fails while being converged (a runtime error, a refused re-create) does not stop the
    others; the task then fails, naming each failed item, and RV(results) shows what was done.
  - With O(purge=true), containers on the host that the list does not declare are removed first.
author:
  - ctrhost.fleet maintainers (@ctrhost)
requirements:
  - Python 3 on the managed host; pyroute2 for containers with a C(network)
  - runc or crun
  - overlayfs in the kernel
options:
  purge:
    description:
      - Remove every container of the host (under O(root)) that O(containers) does not name.
    type: bool
    default: false
extends_documentation_fragment:
  - ctrhost.fleet.container.batch
  - ctrhost.fleet.common
  - ctrhost.fleet.attributes
  - ctrhost.fleet.attributes.ACTIONGROUP
attributes:
  check_mode:
    support: full
    details: Reports the same C(changed) as a real run, per container and in all.
  diff_mode:
    support: full
    details: The declared spec of each changed container, before and after, keyed by name.
  idempotent:
    support: partial
    details: An item with O(containers[].state=restarted) always restarts.
notes:
  - The containers are converged one after the other, in list order (purged ones first).
seealso:
  - module: ctrhost.fleet.container
  - module: ctrhost.fleet.container_info
"""

EXAMPLES = r"""
- name: The containers of this host, in one task
  ctrhost.fleet.containers:
    containers:
      - name: web1
        template: busybox
        command: [/bin/sh, -c, "trap 'exit 0' TERM; while :; do sleep 1; done"]
        limits:
          memory: 256M
      - name: web2
        template: busybox
        state: stopped

- name: Declared per host (e.g. ctrhost_containers), removing any other container
  ctrhost.fleet.containers:
    containers: "{{ ctrhost_containers }}"
    purge: true
"""

RETURN = r"""
results:
  description: One entry per container converged, purged ones first, then in list order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Container name.
      type: str
      returned: always
    changed:
      description: Whether this container changed (or would, in check mode).
      type: bool
      returned: always
    state:
      description: V(running), V(frozen), V(stopped), V(created) or V(absent) after the task.
      type: str
      returned: always
    pid:
      description: Host pid of the init process; null when not running (or not known in check mode).
      type: int
      returned: always
    diff:
      description: Declared spec before and after.
      type: dict
      returned: when changed
    commands:
      description: Commands run for this container (in check mode, those that would run).
      type: list
      elements: str
      returned: when any
    purged:
      description: True for a container removed because O(purge) is set and the list does not name it.
      type: bool
      returned: when purged
    failed:
      description: True when converging this container failed.
      type: bool
      returned: when failed
    msg:
      description: Why it failed.
      type: str
      returned: when failed
  sample:
    - name: web1
      changed: false
      state: running
      pid: 12345
diff:
  description: Declared specs of the changed containers, before and after, keyed by name.
  returned: when changed
  type: dict
  sample: {"web1": {"before": {"limits": {"memory": 268435456}}, "after": {"limits": {"memory": 536870912}}}}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ctrhost.fleet.plugins.module_utils.container import batch as _batch
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.args import containers_spec
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.module import run


def main():
    module = AnsibleModule(argument_spec=containers_spec(), supports_check_mode=True)
    run(module, _batch.converge, module.params, module.check_mode)


if __name__ == "__main__":
    main()
