# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The real libnftables from many threads at once, in a network namespace of its own.

Without the library's lock this crashed the process (SIGSEGV) about one run in three
here, and flex's "start-condition stack underflow" ended a host's boot helper before it
started any container; with it, 8 threads x 150 transactions and listings all succeed."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = os.path.join(ROOT, ".cache", "pytest-collections")

pytestmark = [
    pytest.mark.runtime,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a network namespace, nftables)"),
    pytest.mark.skipif(not os.path.exists("/usr/lib/python3/dist-packages/nftables"),
                       reason="needs python3-nftables (make setup)"),
]

SCRIPT = r"""
import sys, threading
sys.path.insert(0, sys.argv[1])
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import nftables as _nftables
errors = []
def work(i):
    try:
        for _ in range(150):
            _nftables.run("add table bridge t%d\nadd chain bridge t%d c\n" % (i, i), "test")
            assert _nftables.listing("table bridge t%d" % i)
            _nftables.run("delete table bridge t%d" % i, "test")
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
print("errors", errors)
print("left", _nftables.listing("ruleset"))
"""


def test_threads_share_libnftables_safely():
    proc = subprocess.run(["unshare", "--net", sys.executable, "-c", SCRIPT, BASE],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "errors []" in proc.stdout and "left []" in proc.stdout, proc.stdout
