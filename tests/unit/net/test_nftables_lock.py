# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""libnftables is not thread-safe: every call into it holds one process-wide lock.

The boundary (the binding's ``Nftables`` object) is replaced by a fake that records
how many threads are inside ``cmd`` at once; without the lock the boot's and the
batch's threads overlap there (and the real library crashes the process)."""

import threading
import time
import types

import pytest
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import nftables as _nftables


class FakeNftables:
    made = 0

    def __init__(self):
        FakeNftables.made += 1
        self.inside = 0
        self.most = 0
        self.guard = threading.Lock()

    def set_json_output(self, value):
        pass

    def set_handle_output(self, value):
        pass

    def cmd(self, script):
        with self.guard:
            self.inside += 1
            self.most = max(self.most, self.inside)
        time.sleep(0.002)
        with self.guard:
            self.inside -= 1
        return 0, '{"nftables": []}', ""


@pytest.fixture
def fake(monkeypatch):
    FakeNftables.made = 0
    monkeypatch.setattr(_nftables, "_HANDLE", [])
    monkeypatch.setattr(_nftables, "_import", lambda: types.SimpleNamespace(Nftables=FakeNftables))
    return FakeNftables


def _hammer(count=8, rounds=20):
    def work(i):
        for _ in range(rounds):
            _nftables.run("add table bridge t%d" % i, "test")
            _nftables.listing("table bridge t%d" % i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_one_thread_at_a_time_in_libnftables(fake):
    _hammer()
    assert fake.made == 1  # one context for the process, made once even under a race
    assert _nftables.handle().most == 1


def test_the_lock_is_what_serialises(fake, monkeypatch):
    """The control: with the lock taken away the same threads do overlap, so the test
    above would see it."""
    class NoLock:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(_nftables, "LOCK", NoLock())
    _hammer()
    assert _nftables.handle().most > 1
