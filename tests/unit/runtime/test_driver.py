"""One factory builds every ``Runtime``: its state root and probe cache follow the layout."""

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.container import info as _info
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import driver as _runtime
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.lifecycle import Ctx
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import MissingToolError
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout


def test_state_root_and_cache_follow_the_run_dir(tmp_path):
    layout = Layout(str(tmp_path / "root"), str(tmp_path / "run"))
    rt = _runtime.runtime_for(layout)
    assert (rt.name, rt.path) == ("runc", None)
    assert rt.state_root == str(tmp_path / "run" / "runtime" / "runc")
    assert rt.cache_dir == str(tmp_path / "run" / "cache")


def test_path_recorder_and_dry_run_pass_through(tmp_path):
    layout = Layout(str(tmp_path / "root"), str(tmp_path / "run"))
    rt = _runtime.runtime_for(layout, "crun", "/opt/crun", recorder="rec", dry_run=True)
    assert (rt.name, rt.path, rt.recorder, rt.dry_run) == ("crun", "/opt/crun", "rec", True)
    assert rt.state_root == str(tmp_path / "run" / "runtime" / "crun")
    with pytest.raises(MissingToolError, match="runtime: expected one of runc, crun"):
        _runtime.runtime_for(layout, "lxc")


def test_callers_build_through_the_factory(tmp_path):
    """``container`` applies runtime_path to the container's runtime; ``container_info``
    documents it as runc's and searches for the others."""
    params = dict(root=str(tmp_path / "root"), run_dir=str(tmp_path / "run"), name="web1",
                  runtime_path="/opt/bin/rt")
    ctx = Ctx(params, check_mode=True)
    for name in ("runc", "crun"):
        rt = ctx.runtime(name)
        assert (rt.path, rt.dry_run, rt.recorder) == ("/opt/bin/rt", True, ctx.recorder)
        assert rt.state_root == str(tmp_path / "run" / "runtime" / name)
    cache = {}
    assert _info.runtime_of(ctx.layout, "runc", "/opt/bin/runc", cache).path == "/opt/bin/runc"
    assert _info.runtime_of(ctx.layout, "crun", "/opt/bin/runc", cache).path is None
    assert _info.runtime_of(ctx.layout, "runc", None, cache) is cache["runc"]
