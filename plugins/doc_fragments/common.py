# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  root:
    description:
      - Root of the collection's on-host layout (templates, containers, checkpoints, C(host.json)).
    type: path
    default: /var/lib/ctrhost
"""

    RUNTIME = r"""
options:
  runtime:
    description:
      - OCI runtime that runs the containers. C(crun) needs a cgroup layout it accepts (pure cgroup v2 for crun 1.8).
    type: str
    choices: [runc, crun]
    default: runc
  runtime_path:
    description:
      - Absolute path of the runtime binary; found on C(PATH) when omitted.
    type: path
"""
