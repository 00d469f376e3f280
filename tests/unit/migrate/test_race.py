"""Two moves of one container at once: the one that waited for the container's lock is
told what the other did, never that its container "is stopped".

The other operator is a thread holding the real lock (``ContainerStore.lock``) as a
migration does: it removes the container here and notes where it went. The SSH query of
the destination is the boundary stood in for (``already_moved.query``).
"""

from __future__ import annotations

import os
import shutil
import threading

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.core import paths as _paths
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ConflictError
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.store import ContainerStore
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import already_moved as _moved
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import source as _migrate


@pytest.fixture
def layout(tmp_path, monkeypatch):
    monkeypatch.setattr(_paths, "RUN_DIR", str(tmp_path / "run"))
    layout = Layout(str(tmp_path / "root"))
    ContainerStore(layout).save("web1", dict(name="web1", runtime="runc", cgroups_path="/ctrhost/h1/web1"))
    return layout


def other_operator_moves_it(layout, dest, started):
    """What a winning migration does under the lock: the source removed, the move noted."""
    store = ContainerStore(layout)
    with store.lock("web1", task="container_migrate to %s" % dest,
                    remove=lambda: not store.exists("web1")) as held:
        started.set()
        threading.Event().wait(0.5)  # the other task asks now, and waits
        shutil.rmtree(layout.container_dir("web1"))
        _moved.record_move(held, dest)


def race(layout, dest):
    started = threading.Event()
    winner = threading.Thread(target=other_operator_moves_it, args=(layout, "host2", started))
    winner.start()
    started.wait(5)
    try:
        return _migrate.migrate(layout.root, "web1", dest)
    finally:
        winner.join()


def test_the_loser_is_told_where_the_container_went(layout, monkeypatch):
    monkeypatch.setattr(_moved, "query", lambda *a, **k: pytest.fail("no SSH: the lock said it all"))
    with pytest.raises(ConflictError) as err:
        race(layout, "host3")
    msg = err.value.msg
    assert "was moved to host2" in msg and "container_migrate to host2 (pid %d" % os.getpid() in msg, msg
    assert "stopped" not in msg and "not moved to host3" in msg
    assert err.value.details["where"] == "host2" and err.value.details["changed"] is False
    assert os.listdir(layout.locks_dir) == []  # the lock file went with the container


def test_the_loser_that_asked_for_the_same_destination_reports_no_change(layout, monkeypatch):
    asked = []

    def query(link, dest_root, timeout=60):
        asked.append(link.dest)
        return dict(root=dest_root, containers=[dict(name="web1", state="running", pid=42)])

    monkeypatch.setattr(_moved, "query", query)
    res = race(layout, "host2")
    assert asked == ["host2"]
    assert res["changed"] is False and res["already_moved"] and res["where"] == "host2", res
    assert not res["source_leftover"]
    assert os.listdir(layout.locks_dir) == []


def test_a_migration_of_a_container_that_is_nowhere_leaves_no_lock_file(layout, monkeypatch):
    monkeypatch.setattr(_moved, "query", lambda link, dest_root, timeout=60: dict(root=dest_root, containers=[]))
    with pytest.raises(Exception) as err:
        _migrate.migrate(layout.root, "nothere", "host2")
    assert "does not exist" in err.value.msg and "host2" in err.value.msg
    assert os.listdir(layout.locks_dir) == []
