"""The checkpoint rows split into CRIU's phases (benchmarks/ckphases.py): from our
checkpoint's result and from Podman's ``--print-stats`` output, into the table's rows."""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "benchmarks"))

import ckphases
import ops
import scenarios


def test_ours_adds_its_own_freeze_to_criu_freezing():
    result = dict(stats=dict(freezing_time=0.0006, frozen_time=0.25, memdump_time=0.13,
                             memwrite_time=0.11, pages_written=65586),
                  checkpoint=dict(images=dict(freeze_time=0.004, staged=True)))
    phases = ckphases.from_ours(result)
    assert round(phases["freezing"], 3) == 4.6 and phases["frozen"] == 250.0
    assert phases["memdump"] == 130.0 and round(phases["memwrite"], 3) == 110.0
    assert ckphases.from_ours(dict(stats={})) == {}  # nothing CRIU did not report


def test_podman_print_stats_in_microseconds():
    text = json.dumps({"podman_checkpoint_duration": 289023, "container_statistics": [
        {"Id": "b4", "runtime_checkpoint_duration": 217661,
         "criu_statistics": {"freezing_time": 3415, "frozen_time": 177212, "memdump_time": 3617,
                             "memwrite_time": 220, "pages_written": 32}}]})
    assert ckphases.from_podman(text) == dict(freezing=3.415, frozen=177.212, memdump=3.617,
                                              memwrite=0.22)
    assert ckphases.from_podman("Error: no such container") == {}


def test_rows_follow_their_checkpoint_row_and_take_samples():
    keys = [op[0] for op in ops.OPS]
    at = keys.index("checkpoint_mem")
    assert keys[at + 1:at + 5] == ["ckphase_mem_%s" % p for p in ckphases.PHASES]
    assert keys[keys.index("checkpoint_idle") + 1] == "ckphase_idle_freezing"
    res = scenarios.Results()
    ckphases.record(res, "mem", "ours", dict(freezing=4.6, memwrite=110.04))
    assert res.samples == {"ckphase_mem_freezing": {"ours": [4.6]},
                           "ckphase_mem_memwrite": {"ours": [110.04]}}
