# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Integration fixtures: ``lab`` is a lab named ``it`` with 2 hosts, shared by the
whole session (and by concurrent sessions) and taken down at the end. Set
``CTRHOST_IT_LAB`` to give a second checkout's runs a lab of their own name.

Mark tests that need it with ``@pytest.mark.lab`` (done automatically for
tests that use the fixture).
"""

import os
import shutil

import pytest
from lab import Lab, shared_lab

LAB_NAME = os.environ.get("CTRHOST_IT_LAB") or "it"
LAB_HOSTS = 2
LAB_TOOLS = ("ip", "nsenter", "unshare", "ssh", "ssh-keygen", "/usr/sbin/sshd")


def lab_unavailable():
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the lab needs root"
    missing = [t for t in LAB_TOOLS if not shutil.which(t)]
    if missing:
        return f"the lab needs {', '.join(missing)} (make setup)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = lab_unavailable()
    for item in items:
        if "lab" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("lab"):
            item.add_marker(pytest.mark.lab)
        if reason and item.get_closest_marker("lab"):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def lab():
    """The shared integration lab: hosts ``it1``, ``it2`` (by default) reached over SSH."""
    with shared_lab(LAB_NAME, LAB_HOSTS) as shared:
        yield shared


@pytest.fixture
def make_lab():
    """Factory for a private lab (own name, e.g. for tests that reboot or tear
    down hosts); every lab it made is taken down after the test."""
    made = []

    def factory(name, count=2):
        new = Lab(name, count)
        made.append(new)
        new.down()
        new.up()
        return new

    yield factory
    for each in made:
        each.down()
