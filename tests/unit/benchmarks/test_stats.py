# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The benchmark harness's statistics and markdown table (benchmarks/bench_stats.py)."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "benchmarks"))

import bench_stats
import run as bench_run
import scenarios


def test_summary_median_min_max_of_odd_and_even_counts():
    odd = bench_stats.summarize([0.3, 0.1, 0.2])
    assert (odd["n"], odd["median"], odd["min"], odd["max"]) == (3, 0.2, 0.1, 0.3)
    even = bench_stats.summarize([4.0, 1.0, 2.0, 3.0])
    assert even["median"] == 2.5
    assert even["stdev"] == pytest.approx(1.2909944, rel=1e-6)


def test_failed_samples_are_counted_not_averaged():
    s = bench_stats.summarize([1.0, None, 3.0, float("nan")])
    assert (s["n"], s["failed"], s["median"]) == (2, 2, 2.0)
    empty = bench_stats.summarize([None])
    assert empty["median"] is None and empty["failed"] == 1
    assert bench_stats.fmt_cell(empty, "s") == "failed x1"


def test_ratio_is_ours_over_peer_and_none_when_unknown():
    assert bench_stats.ratio(0.1, 0.4) == 0.25
    assert bench_stats.ratio(None, 0.4) is None
    assert bench_stats.ratio(0.1, None) is None
    assert bench_stats.ratio(0.1, 0) is None


@pytest.mark.parametrize("target,ours,podman,met", [
    (dict(kind="ratio", peer="podman", max=0.5), [0.1], [0.3], True),
    (dict(kind="ratio", peer="podman", max=0.5), [0.2], [0.3], False),
    (dict(kind="abs", side="ours", max=1.5), [1.49], [9.0], True),
    (dict(kind="abs", side="ours", max=1.5), [1.51], [0.1], False),
    (dict(kind="ratio", peer="podman", max=0.5), [0.1], [], None),
])
def test_targets(target, ours, podman, met):
    op = summarized = bench_stats.summarize_op(
        dict(key="k", sides=dict(ours=ours, podman=podman), target=target))
    assert summarized["met"] is met
    assert op["target_text"]


def test_markdown_table_shape_and_values():
    ops = [
        dict(key="create_start", label="create+start", unit="s",
             target=dict(kind="ratio", peer="podman", max=0.5),
             sides=dict(ours=[0.12, 0.10, 0.11], podman=[0.30, 0.20, 0.25], lxc=[0.05])),
        dict(key="density_host_mem", label="density memory", unit="MiB", target=None,
             sides=dict(ours=[26.4], podman=[120.0])),
        dict(key="converge_second", label="idempotent converge", unit="s",
             target=dict(kind="abs", side="ours", max=15), sides=dict(ours=[20.0, 22.0])),
    ]
    lines = bench_stats.markdown_table(ops).splitlines()
    assert lines[0] == ("| operation | unit | ctrhost.fleet | Podman | ours/Podman | LXC | "
                        "ours/LXC | target | met |")
    assert lines[1] == "|" + "|".join(["---"] * 9) + "|"
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells == ["create+start", "s", "0.110 (0.100-0.120)", "0.250 (0.200-0.300)", "0.44x",
                     "0.050", "2.20x", "<= 0.5x Podman", "yes"]
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert cells[2:5] == ["26", "120", "0.22x"] and cells[5:7] == ["-", "-"]
    cells = [c.strip() for c in lines[4].strip("|").split("|")]
    assert cells[2] == "21.0 (20.0-22.0)" and cells[-2:] == ["< 15 s", "**no**"]
    assert len(lines) == 5


def test_peer_columns_only_for_peers_with_samples():
    ops = [dict(key="a", label="a", unit="s", sides=dict(ours=[1.0], lxc=[]))]
    assert "LXC" not in bench_stats.markdown_table(ops)
    assert "Podman" not in bench_stats.markdown_table(ops)


def test_value_formatting():
    assert bench_stats.fmt_value(0.03456, "s") == "0.035"
    assert bench_stats.fmt_value(1.234, "s") == "1.23"
    assert bench_stats.fmt_value(12.34, "s") == "12.3"
    assert bench_stats.fmt_value(123.4, "s") == "123"
    assert bench_stats.fmt_value(5.25, "MiB") == "5.2"
    assert bench_stats.fmt_value(None, "s") == "-"


def test_results_merge_and_build_ops_shares_peer_runs_and_reports_errors():
    res = scenarios.Results()
    res.add("create_start", "ours", 0.2)
    res.add("create_start", "podman", 0.4)
    res.fail("checkpoint_mem", "ours", RuntimeError("criu said no\nthe last line"))
    other = scenarios.Results()
    other.add("create_start", "ours", 0.3)
    other.add("create_start_proc", "ours", 0.7)
    other.notes.append("n1")
    res.merge(json.loads(json.dumps(other.as_dict())))
    assert res.samples["create_start"]["ours"] == [0.2, 0.3]
    ops = {op["key"]: op for op in bench_run.build_ops(res)}
    assert ops["create_start_proc"]["sides"]["podman"] == [0.4]
    assert ops["checkpoint_mem"]["sides"]["ours"] == [None]
    assert "the last line" in ops["checkpoint_mem"]["note"]
    assert list(ops) == [k for k, *_ in bench_run.OPS if k in ops]  # table order = OPS order
    doc = bench_stats.report_json(list(ops.values()), notes=res.notes)
    assert doc["notes"] == ["n1"]
    assert doc["operations"][0]["stats"]["ours"]["median"] == 0.25
    json.dumps(doc)  # JSON-able


def test_cli_rejects_unknown_groups():
    with pytest.raises(SystemExit):
        bench_run.parse(["--only", "create,bogus"])
    args = bench_run.parse(["--only", "create,migrate", "--reps", "3"])
    assert args.only == ["create", "migrate"] and args.reps == 3
