# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Glue shared by every module: common options and the one fail_json site."""

from __future__ import annotations

import traceback

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CtrhostError, MissingLibraryError
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import DEFAULT_ROOT

# Options every module accepts; documented once in doc_fragments/common.py.
COMMON_ARGS = dict(
    root=dict(type="path", default=DEFAULT_ROOT),
)

RUNTIME_ARGS = dict(
    runtime=dict(type="str", default="runc", choices=["runc", "crun"]),
    runtime_path=dict(type="path"),
)

# CRIU dump options (doc fragment ctrhost.fleet.common.CRIU).
CRIU_ARGS = dict(
    tcp_established=dict(type="bool", default=False),
    file_locks=dict(type="bool", default=False),
    ext_unix_sk=dict(type="bool", default=False),
)

# Tool paths (doc fragment ctrhost.fleet.common.CRIU_TOOLS).
CRIU_TOOL_ARGS = dict(
    criu_path=dict(type="path"),
    runtime_path=dict(type="path"),
)

# How a migration reaches its destination (doc fragment ctrhost.fleet.common.MIGRATE_SSH).
MIGRATE_SSH_ARGS = dict(
    dest_root=dict(type="path"),
    ssh_config=dict(type="path"),
    identity=dict(type="path"),
    ssh_port=dict(type="int"),
    ssh_user=dict(type="str"),
    dest_python=dict(type="str"),
    timeout=dict(type="int", default=600),
)


def argument_spec(*parts, **extra):
    spec = {}
    for part in parts:
        spec.update(part)
    spec.update(extra)
    return spec


def run(module, func, params, check_mode):
    """``func(params, check_mode)``: every module calls its library entry this way. A
    CtrhostError becomes fail_json, the returned dict the module result (exit_json).

    An entry marked ``diff_on_request`` returns its ``diff`` only when the task asked
    for one (``--diff``)."""
    try:
        result = func(params, check_mode)
        if getattr(func, "diff_on_request", False) and not getattr(module, "_diff", False):
            result.pop("diff", None)
    except MissingLibraryError as exc:
        # Imported here: the library (and _ctrargs, which the host's boot helper loads
        # through _container) stays importable without Ansible.
        from ansible.module_utils.basic import missing_required_lib

        details = exc.to_result()
        details.pop("msg")
        module.fail_json(msg=missing_required_lib(exc.library, reason=exc.reason), **details)
    except CtrhostError as exc:
        module.fail_json(**exc.to_result())
    except Exception as exc:  # pragma: no cover - unexpected bugs keep a trace
        module.fail_json(msg="unexpected error: %s" % exc, exception=traceback.format_exc())
    module.exit_json(**result)
