# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: roll_moves
short_description: Count the moves of a roll, per container and in total
version_added: 0.2.0
description:
  - Takes the move records of a roll from every host (a list of mappings with C(name), C(from) and C(to), in any
    order) and returns how many times each container moved and the total.
author:
  - ctrhost.fleet contributors
options:
  _input:
    description: The move records, C({name, from, to}) each.
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Moves per container over the whole roll
  ansible.builtin.debug:
    msg: "{{ ansible_play_hosts_all | map('extract', hostvars, 'ctrhost_kernel_upgrade_moves') | flatten
             | ctrhost.fleet.roll_moves }}"
  run_once: true
"""

RETURN = r"""
_value:
  description:
    - C(moves) - container name to the number of times it moved.
    - C(total) - all the moves; C(containers) - how many containers moved; C(most) - the most moves of one container.
  type: dict
  sample: {moves: {web1: 2, db1: 1}, total: 3, containers: 2, most: 2}
"""

from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CtrhostError  # noqa: E402
from ansible_collections.ctrhost.fleet.plugins.module_utils.fleet.rollplan import moves_report  # noqa: E402


def roll_moves(records):
    try:
        return moves_report(records)
    except CtrhostError as exc:
        raise AnsibleFilterError(exc.msg)


class FilterModule(object):
    def filters(self):
        return {"roll_moves": roll_moves}
