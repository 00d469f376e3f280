"""The container lock says who holds it: a task that gives up waiting is told the holder,
a task that waited is given the note its predecessor left (even when the predecessor
removed the lock file with the container), and ``remove`` may be asked on release."""

from __future__ import annotations

import json
import os
import threading

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.container.store import ContainerStore, parse_note
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ConflictError
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout


@pytest.fixture
def store(tmp_path):
    return ContainerStore(Layout(str(tmp_path / "root"), run_dir=str(tmp_path / "run")))


def test_a_timeout_names_the_holder(store):
    with store.lock("web1", task="container_migrate to host2") as held:
        assert not held.waited
        with pytest.raises(ConflictError) as err:
            with store.lock("web1", timeout=0.2):
                pass
    msg = err.value.msg
    assert "busy" in msg and "container_migrate to host2 (pid %d, since " % os.getpid() in msg, msg
    assert err.value.details["holder"]["task"] == "container_migrate to host2"


def test_the_lock_file_holds_the_holders_note(store):
    with store.lock("web1", task="container start") as held:
        held.note(step="one")
        with open(store.lock_path("web1")) as handle:
            note = json.load(handle)
    assert note["pid"] == os.getpid() and note["task"] == "container start" and note["step"] == "one"
    assert store.holder("web1") == note  # kept after the release: the container exists


def test_a_waiter_gets_the_note_of_the_task_it_waited_for_even_after_removal(store):
    inside, results = threading.Event(), {}

    def first():
        with store.lock("web1", task="container_migrate to host2", remove=lambda: True) as held:
            inside.set()
            threading.Event().wait(0.3)
            held.note(moved_to="host2")

    thread = threading.Thread(target=first)
    thread.start()
    inside.wait(5)
    with store.lock("web1", task="container_migrate to host3") as held:
        results.update(previous=held.previous, waited=held.waited)
    thread.join()
    assert results["waited"] is True
    assert results["previous"]["moved_to"] == "host2"
    assert results["previous"]["task"] == "container_migrate to host2"


def test_remove_may_be_decided_on_release(store):
    with store.lock("gone", remove=lambda: True):
        pass
    with store.lock("kept", remove=lambda: False):
        pass
    assert not os.path.exists(store.lock_path("gone")) and os.path.exists(store.lock_path("kept"))
    with store.lock("kept") as held:
        assert not held.waited and held.previous["pid"] == os.getpid()


@pytest.mark.parametrize("data, note", [
    (b"", None), (b"123\n", {"pid": 123}), (b"garbage", None), (b'{"pid": 5, "task": "x"}\n', {"pid": 5, "task": "x"}),
])
def test_notes_of_older_writers_are_read(data, note):
    assert parse_note(data) == note
