"""Atomic writes: a reader sees the old file or the new one, never a part, and nothing is
left beside the target."""

import json
import os
import stat
import threading

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.atomic import atomic_write, atomic_write_json


def _read(path):
    with open(path) as handle:
        return handle.read()


def test_write_sets_mode_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / "f.txt")
    atomic_write(path, "one\n", mode=0o640)
    assert _read(path) == "one\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    atomic_write(path, "two\n")
    assert _read(path) == "two\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["f.txt"]


def test_parents_only_on_request(tmp_path):
    path = str(tmp_path / "a" / "b" / "f")
    with pytest.raises(FileNotFoundError):
        atomic_write(path, "x")
    atomic_write(path, "x", parents=True)
    assert _read(path) == "x"
    assert stat.S_IMODE(os.stat(tmp_path / "a" / "b").st_mode) == 0o700


def test_json_failure_keeps_the_old_file(tmp_path):
    path = str(tmp_path / "spec.json")
    atomic_write_json(path, {"b": 1, "a": [1, 2]})
    assert _read(path) == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})
    assert json.loads(_read(path)) == {"a": [1, 2], "b": 1}
    assert os.listdir(tmp_path) == ["spec.json"]


def test_threads_writing_one_file_never_collide_and_readers_see_whole_files(tmp_path):
    path = str(tmp_path / "cache.json")
    atomic_write_json(path, dict(writer=-1, pad="x" * 4096))
    errors, seen = [], set()
    barrier = threading.Barrier(9)

    def write(i):
        barrier.wait()
        try:
            for _ in range(40):
                atomic_write_json(path, dict(writer=i, pad="x" * 4096), durable=False)
        except OSError as exc:
            errors.append(exc)

    def read():
        barrier.wait()
        for _ in range(400):
            with open(path) as handle:
                seen.add(json.load(handle)["writer"])  # a torn file would not parse

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    threads.append(threading.Thread(target=read))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert seen <= set(range(-1, 8))
    assert os.listdir(tmp_path) == ["cache.json"]
