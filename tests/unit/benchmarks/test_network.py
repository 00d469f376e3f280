"""The fleet network group's arithmetic (benchmarks/network.py): the longest silence of a
prober around a move, the convergence beyond the move's downtime, throughput, the modes the
installed host_network offers, and the rows of the table."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "benchmarks"))

import network


def test_longest_gap_inside_the_window_and_at_its_edges():
    replies = [10.00, 10.01, 10.02, 10.75, 10.76, 11.5]
    assert network.longest_gap(replies, 10.0, 11.0) == 0.73  # 10.02 -> 10.75
    assert network.longest_gap(list(reversed(replies)), 10.0, 11.0) == 0.73  # any order
    # the silence runs to the window's end (no reply after 10.76 within it)
    assert network.longest_gap(replies[:-1], 10.0, 11.6) == 0.84
    # and from its start
    assert network.longest_gap([12.0, 12.01], 11.0, 12.01) == 1.0
    assert network.longest_gap([], 1.0, 2.5) == 1.5  # nothing came back: the whole window
    assert network.longest_gap([0.5, 3.0], 1.0, 2.0) == 1.0  # replies outside do not count


def test_convergence_is_the_gap_less_the_downtime_signed():
    assert network.convergence(0.9, 0.55) == 0.35
    assert network.convergence(0.5, 0.52) == -0.02  # replies back before the move's clock stopped
    assert network.convergence(None, 0.5) is None and network.convergence(0.5, None) is None


def test_throughput_and_ratio():
    assert network.mb_per_s(256 << 20, 0.5) == 536.9
    assert network.mb_per_s(0, 1.0) is None and network.mb_per_s(100, 0) is None
    assert network.ratio(400.0, 800.0) == 0.5
    assert network.ratio(None, 800.0) is None and network.ratio(400.0, None) is None


def test_mode_choices_from_ansible_doc():
    doc = {"ctrhost.fleet.host_network": {"doc": {"options": {"fleet": {"suboptions": {
        "mode": {"choices": ["routed", "overlay"], "default": "routed"}}}}}}}
    assert network.mode_choices(doc) == ["routed", "overlay"]


def test_rows_per_mode_with_units():
    rows = network.ops()
    assert len(rows) == len(network.MODES) * len(network.ROWS)
    keys = [r[0] for r in rows]
    assert len(set(keys)) == len(keys)
    assert ("network_bridged_converge", "fleet network bridged: convergence (gap - downtime)", "s",
            None) in rows
    assert {r[2] for r in rows if r[0].endswith(("_ctr", "_host"))} == {"MB/s"}
    assert all(key in keys for key in network.NOTES)  # every note belongs to a row
