"""The mode a migration uses (cold, live pre-copy, lazy post-copy), why it falls back, and
the options refused before anything is touched.

``choose_mode`` decides from what CRIU found on each host (the source's ``_criu.discover``
and the destination's preflight facts); the tests give those facts as the two hosts would.
"""

from __future__ import annotations

import os

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import source as _migrate
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.state import Run, result, timings
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout

CAN = dict(pre_dump=True, pre_dump_reason=None, lazy_pages=True, lazy_pages_reason=None)
NO_DIRTY = dict(CAN, pre_dump=False, pre_dump_reason="the kernel does not track dirty memory")
NO_UFFD = dict(CAN, lazy_pages=False, lazy_pages_reason="no userfaultfd in this kernel")


def decide(asked, src, dst, tmp_path):
    run = Run(Layout(str(tmp_path)), "web1", {}, asked, "host2", None)
    _migrate.choose_mode(run, src, dst)
    return run.mode, run.fallback


@pytest.mark.parametrize("asked, src, dst, mode, why", [
    ("cold", NO_DIRTY, NO_UFFD, "cold", None),
    ("live", CAN, CAN, "live", None),
    ("live", NO_DIRTY, CAN, "cold", "live (pre-copy) is impossible here: the kernel does not "
                                    "track dirty memory; used cold (stop-and-copy)"),
    ("live", CAN, NO_DIRTY, "cold", "live (pre-copy) is impossible here: the destination has no "
                                    "dirty memory tracking; used cold (stop-and-copy)"),
    ("live", CAN, NO_UFFD, "live", None),  # pre-copy needs no userfaultfd
    ("lazy", CAN, CAN, "lazy", None),
    ("lazy", NO_UFFD, CAN, "cold", "lazy (post-copy) is unusable (source: no userfaultfd in this "
                                   "kernel); used cold"),
    ("lazy", CAN, NO_UFFD, "cold", "lazy (post-copy) is unusable (destination: no userfaultfd "
                                   "in this kernel); used cold"),
    ("lazy", NO_UFFD, dict(), "cold", "lazy (post-copy) is unusable (source: no userfaultfd in "
                                      "this kernel); used cold"),  # the source is asked first
    ("lazy", NO_DIRTY, CAN, "lazy", None),  # post-copy needs no dirty tracking
])
def test_the_mode_used_and_why(tmp_path, asked, src, dst, mode, why):
    assert decide(asked, src, dst, tmp_path) == (mode, why)


def test_the_result_says_what_was_asked_what_was_used_and_why(tmp_path):
    run = Run(Layout(str(tmp_path)), "web1", {}, "live", "host2", None)
    _migrate.choose_mode(run, NO_DIRTY, CAN)
    out = result(run, changed=True, preflight=None, where="source (check mode)")
    assert (out["mode_requested"], out["mode"]) == ("live", "cold")
    assert "dirty memory" in out["fallback"] and out["precopy"] is None and out["iterations"] == []


def test_timings_are_the_time_each_step_took():
    steps = [dict(step="preflight", t=0.5), dict(step="freeze", t=0.75), dict(step="dumped", t=1.0)]
    assert timings(steps) == dict(preflight=0.5, freeze=0.25, dumped=0.25)


def test_hooks_run_at_their_step(tmp_path):
    seen = []
    run = Run(Layout(str(tmp_path)), "web1", {}, "cold", "host2", dict(freeze=seen.append))
    run.step("preflight")
    run.step("freeze")
    assert seen == [run] and [s["step"] for s in run.steps] == ["preflight", "freeze"]


@pytest.mark.parametrize("kwargs, field", [
    (dict(mode="warm"), "mode"),
    (dict(dest=""), "dest"),
    (dict(dest=["h2"]), "dest"),
    (dict(name="web 1"), "name"),
    (dict(precopy=dict(max_iterations=0)), "precopy.max_iterations"),
])
def test_bad_options_are_refused_before_anything_is_touched(tmp_path, kwargs, field):
    args = dict(name="web1", dest="host2")
    args.update(kwargs)
    with pytest.raises(ValidationError) as err:
        _migrate.migrate(str(tmp_path), args.pop("name"), args.pop("dest"), **args)
    assert err.value.details["field"] == field, err.value.msg
    assert os.listdir(tmp_path) == []
