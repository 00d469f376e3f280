#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: template_info
short_description: The OS templates installed on a host, their sizes, checksums, age and users
version_added: 0.1.0
description:
  - Lists the templates installed under O(root) (or the named ones), read-only.
  - For each, the recorded source and sha256 of its content, the size of the source, the space its rootfs takes
    now, when it was installed, the containers made from it (and which of them were made from an older content of
    the same name) and the checkpoints that need it.
author:
  - ctrhost.fleet maintainers (@ctrhost)
requirements:
  - Python 3 on the managed host.
options:
  name:
    description:
      - Names of the templates to report. All templates when omitted. Names that are not installed are listed in
        RV(missing) (not an error).
    type: list
    elements: str
    aliases: [names]
  disk_usage:
    description:
      - Measure the space each rootfs takes (a walk of the tree). V(false) reports RV(templates[].disk_usage) as
        null, for hosts with very large templates.
    type: bool
    default: true
extends_documentation_fragment:
  - ctrhost.fleet.common
  - ctrhost.fleet.attributes
  - ctrhost.fleet.attributes.INFO_MODULE
  - ctrhost.fleet.attributes.ACTIONGROUP
seealso:
  - module: ctrhost.fleet.template
  - module: ctrhost.fleet.checkpoint_info
"""

EXAMPLES = r"""
- name: Templates of the host
  ctrhost.fleet.template_info:
  register: templates

- name: Templates no container uses
  ansible.builtin.debug:
    msg: "{{ templates.templates | rejectattr('in_use') | map(attribute='name') | list }}"

- name: Is debian12 the same content on every host?
  ctrhost.fleet.template_info:
    name: debian12
  register: deb

- name: Containers made from an older debian12
  ansible.builtin.debug:
    var: deb.templates[0].users_outdated
  when: deb.templates | length > 0
"""

RETURN = r"""
templates:
  description: One entry per installed template, sorted by name.
  returned: always
  type: list
  elements: dict
  sample:
    - name: debian12
      sha256: 9f2c1c3d6c0e4f1f0b8e2a7d5c4b3a29181716151413121110f0e0d0c0b0a090
      size: 31457280
      age_seconds: 86400
      users:
      - web1
      in_use: true
  contains:
    name:
      description: Template name.
      type: str
      returned: always
      sample: debian12
    sha256:
      description: Identity of the content (tarball sha256, image manifest digest or debootstrap manifest digest).
      type: str
      returned: always
      sample: 9f2c1c3d6c0e4f1f0b8e2a7d5c4b3a29181716151413121110f0e0d0c0b0a090
    source:
      description: The source it was installed from, as given to M(ctrhost.fleet.template).
      type: dict
      returned: always
      sample: {type: src, src: /srv/templates/debian12.tar.gz}
    size:
      description: Size of the source in bytes when it was installed (tarball or image).
      type: int
      returned: always
      sample: 31457280
    disk_usage:
      description: Bytes the rootfs takes now; null with O(disk_usage=false).
      type: int
      returned: always
      sample: 104857600
    files:
      description: Number of entries of the rootfs when it was installed.
      type: int
      returned: always
      sample: 6523
    created:
      description: When it was installed (UTC, ISO 8601).
      type: str
      returned: always
      sample: "2026-11-30T08:00:00+00:00"
    age_seconds:
      description: Seconds since it was installed.
      type: int
      returned: always
      sample: 86400
    path:
      description: Template directory.
      type: str
      returned: always
      sample: /var/lib/ctrhost/templates/debian12
    rootfs:
      description: The rootfs directory (lower layer of its containers).
      type: str
      returned: always
      sample: /var/lib/ctrhost/templates/debian12/rootfs
    users:
      description: Containers of this host made from it.
      type: list
      elements: str
      returned: always
      sample: [web1, web2]
    users_outdated:
      description: Those of RV(templates[].users) made from another content of the same name (a different sha256).
      type: list
      elements: str
      returned: always
      sample: [web2]
    checkpoints:
      description: Checkpoints of this host (C(container/id)) that need this template to be restored.
      type: list
      elements: str
      returned: always
      sample: [web1/20261130T080000Z]
    in_use:
      description: Whether a container uses it (M(ctrhost.fleet.template) refuses to remove it then, unless forced).
      type: bool
      returned: always
      sample: true
missing:
  description: Requested names that are not installed.
  returned: always
  type: list
  elements: str
  sample: [alpine]
count:
  description: Number of templates reported.
  returned: always
  type: int
  sample: 1
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ctrhost.fleet.plugins.module_utils.host import catalog as _catalog
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.module import COMMON_ARGS, argument_spec, run


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            COMMON_ARGS,
            name=dict(type="list", elements="str", aliases=["names"]),
            disk_usage=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    run(module, _catalog.template_task, module.params, module.check_mode)


if __name__ == "__main__":
    main()
