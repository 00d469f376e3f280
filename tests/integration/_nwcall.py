# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run one library function in another network namespace (used by test_network).

Usage: _nwcall.py MODULE FUNC JSON_ARGS ; prints a JSON result or error.
Started with ``nsenter --net=...`` so only the network namespace changes (the
mount namespace stays, so named netns created here persist).
"""

import importlib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), ".cache", "pytest-collections"))

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CtrhostError


def main():
    mod = importlib.import_module("ansible_collections.ctrhost.fleet.plugins.module_utils." + sys.argv[1])
    args, kwargs = json.loads(sys.argv[3])
    try:
        out = dict(result=getattr(mod, sys.argv[2])(*args, **kwargs))
    except CtrhostError as exc:
        out = dict(error=type(exc).__name__, msg=exc.msg, field=getattr(exc, "field", None))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
