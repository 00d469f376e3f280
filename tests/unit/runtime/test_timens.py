"""Time namespaces: offsets and start times parsed, the host's verdict, the prefixes
that start a runtime in a new time namespace and exec into a container's, and the
exec script run for real against a fake runtime (entering a real time namespace as root)."""

import json
import os
import shutil
import subprocess
import time

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import timens as _timens


def tool(directory, name, body):
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def fake_proc(base, pid, ns, offsets=None, self_ns="time:[4026531834]"):
    """A /proc with ``pid``'s time namespace link (and offsets), ``self``'s and pid 1's."""
    for who, ident in ((str(pid), ns), ("self", self_ns), ("1", self_ns)):
        (base / who / "ns").mkdir(parents=True, exist_ok=True)
        if not (base / who / "ns" / "time").is_symlink():
            os.symlink(ident, base / who / "ns" / "time")
    (base / "self" / "timens_offsets").write_text("monotonic 0 0\nboottime 0 0\n")
    if offsets is not None:
        (base / str(pid) / "timens_offsets").write_text(offsets)
    return str(base)


@pytest.fixture
def only_fakes(tmp_path, monkeypatch):
    """Tools are looked up in ``tmp_path/bin`` only."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.setattr(_cli, "EXTRA_PATH", ())
    return bindir


# ------------------------------------------------------------------ parsing

def test_parse_offsets_names_numbers_and_negative_values():
    text = "monotonic         -11 714995163\nboottime          -11 714966510\n"
    assert _timens.parse_offsets(text) == pytest.approx({"monotonic": -10.285004837,
                                                         "boottime": -10.28503349})
    # older kernels print clock ids; unknown clocks and junk are skipped
    assert _timens.parse_offsets("1 3600 0\n7 7200 500000000\n4 1 0\nnonsense\n") == \
        {"monotonic": 3600.0, "boottime": 7200.5}
    assert _timens.parse_offsets("") == {}


def test_clock_of_a_container_init(tmp_path):
    proc = fake_proc(tmp_path, 77, "time:[4026532304]", "monotonic -6 883636095\nboottime -6 883619045\n")
    info = _timens.clock(77, proc)
    assert info["namespace"] == "time:[4026532304]" and info["own_namespace"] is True
    assert info["offsets"] == pytest.approx({"monotonic": -5.116363905, "boottime": -5.116380955})
    shared = fake_proc(tmp_path / "b", 78, "time:[4026531834]", "monotonic 0 0\nboottime 0 0\n")
    assert _timens.clock(78, shared)["own_namespace"] is False
    assert _timens.clock(None, proc) is None and _timens.clock(79, proc) is None


def test_clock_without_a_readable_pid_1_compares_with_the_initial_namespace(tmp_path):
    proc = fake_proc(tmp_path, 77, "time:[4026531834]", "monotonic 0 0\nboottime 0 0\n")
    os.unlink(tmp_path / "1" / "ns" / "time")
    assert _timens.clock(77, proc)["own_namespace"] is False
    os.unlink(tmp_path / "77" / "ns" / "time")
    os.symlink("time:[4026532999]", tmp_path / "77" / "ns" / "time")
    assert _timens.clock(77, proc)["own_namespace"] is True


# ------------------------------------------------------------------ the host's verdict

def test_continuity_needs_the_kernel_first(tmp_path):
    (tmp_path / "self").mkdir()
    usable, reason = _timens.continuity(True, str(tmp_path), cache_dir=str(tmp_path / "cache"))
    assert usable is False and "kernel has no time namespaces" in reason


def test_continuity_names_the_missing_or_old_tool_and_criu(tmp_path, only_fakes):
    proc = fake_proc(tmp_path / "proc", 1, "time:[1]")
    cache = str(tmp_path / "cache")
    usable, reason = _timens.continuity(True, proc, cache_dir=cache)
    assert (usable, reason) == (False, "unshare not found on this host (util-linux 2.36 or later)")
    tool(only_fakes, "unshare", "echo ' -T, --time[=<file>]  unshare time namespace'\n")
    tool(only_fakes, "nsenter", "echo ' -t, --target <pid>  target process'\n")
    usable, reason = _timens.continuity(True, proc, cache_dir=cache)
    assert (usable, reason) == (False, "nsenter does not know --time (util-linux 2.36 or later)")
    os.unlink(only_fakes / "nsenter")
    tool(only_fakes, "nsenter", "echo ' -T, --time[=<file>]  enter time namespace'\n")
    assert _timens.continuity(None, proc, cache_dir=cache)[1].startswith("CRIU is too old")
    assert _timens.continuity(False, proc, cache_dir=cache) == \
        (False, "criu check --feature timens failed")
    assert _timens.continuity(True, proc, cache_dir=cache) == (True, None)


def test_birth_argv_only_for_run_and_create(tmp_path, only_fakes):
    proc = fake_proc(tmp_path / "proc", 1, "time:[1]")
    cache = str(tmp_path / "cache")
    assert _timens.birth_argv("run", cache, proc) == []  # no unshare
    unshare = tool(only_fakes, "unshare", "echo ' -T, --time[=<file>]'\n")
    expected = [unshare, "--fork", "--kill-child", "--time", "--"]
    assert _timens.birth_argv("run", cache, proc) == expected
    assert _timens.birth_argv("create", cache, proc) == expected
    assert _timens.birth_argv("restore", cache, proc) == []  # CRIU makes the restored one
    assert _timens.birth_argv("--criu", cache, proc) == []
    os.unlink(tmp_path / "proc" / "self" / "timens_offsets")
    assert _timens.birth_argv("run", cache, proc) == []  # kernel without time namespaces


# ------------------------------------------------------------------ the exec script

FAKE_RUNTIME = """\
root=$2; shift 2
case "$1" in
  state) if [ -n "$FAKE_PID" ]; then printf '{\\n  "id": "%s",\\n  "pid": %s,\\n  "status": "running"\\n}\\n' "$2" "$FAKE_PID"; else exit 1; fi ;;
  exec) shift; name=$1; shift
        echo "root=$root"; echo "ns=$(readlink /proc/self/ns/time)"
        echo "state=$(cat "$root/$name/state.json")"; echo "other=$(cat "$root/$name/other" 2>/dev/null)"
        echo "argv=$*"; cat ;;
esac
"""


def state_root(tmp_path, name, start=12345):
    root = tmp_path / "runtime" / "runc"
    (root / name).mkdir(parents=True)
    (root / name / "state.json").write_text(json.dumps({"id": name, "init_process_start": start,
                                                        "config": {"x": 1}}, separators=(",", ":")))
    (root / name / "other").write_text("kept")
    return root


def run_script(runtime, root, name, argv, pid, stdin=""):
    env = dict(os.environ, FAKE_PID=str(pid) if pid else "")
    cmd = _timens.exec_argv("runc", [runtime, "--root", str(root)], name) + ["exec", name] + argv
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env, timeout=30)


def test_exec_script_runs_the_runtime_as_is_without_a_namespace_to_enter(tmp_path):
    runtime = tool(tmp_path, "rt", FAKE_RUNTIME)
    root = state_root(tmp_path, "c1")
    for pid in (None, os.getpid()):  # not running / in our own time namespace
        out = run_script(runtime, root, "c1", ["/bin/sh", "-c", "echo hi"], pid, stdin="from stdin")
        assert out.returncode == 0, out.stderr
        assert "root=%s\n" % root in out.stdout and "argv=/bin/sh -c echo hi\n" in out.stdout
        assert '"init_process_start":12345' in out.stdout and out.stdout.endswith("from stdin")
    assert os.listdir(root.parent) == ["runc"]  # no private copy made


def test_exec_script_passes_the_runtime_exit_status(tmp_path):
    runtime = tool(tmp_path, "rt", "exit 255\n")
    root = state_root(tmp_path, "c1")
    assert run_script(runtime, root, "c1", ["true"], None).returncode == 255


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")
def test_exec_script_enters_a_real_time_namespace_with_a_private_state(tmp_path):
    runtime = tool(tmp_path, "rt", FAKE_RUNTIME)
    holder = subprocess.Popen(["unshare", "--fork", "--kill-child", "--time", "--boottime", "1000",
                               "--", "sleep", "60"])
    try:
        for _ in range(100):  # the forked child of unshare is the namespace's process
            with open("/proc/%d/task/%d/children" % (holder.pid, holder.pid)) as handle:
                children = handle.read().split()
            if children:
                break
            time.sleep(0.02)
        pid = int(children[0])
        ns = os.readlink("/proc/%d/ns/time" % pid)
        assert ns != os.readlink("/proc/self/ns/time")
        with open("/proc/%d/stat" % pid) as handle:
            host_view = int(handle.read().rsplit(")", 1)[1].split()[19])  # starttime, field 22
        root = state_root(tmp_path, "c2", start=host_view)
        out = run_script(runtime, root, "c2", ["cat"], pid, stdin="in")
        assert out.returncode == 0, out.stderr
        lines = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
        assert lines["ns"] == ns  # the runtime ran in the container's time namespace
        assert lines["root"] != str(root) and lines["root"].startswith(str(root) + ".exec-")
        seen = json.loads(lines["state"])["init_process_start"]
        ticks = os.sysconf("SC_CLK_TCK")
        assert abs(seen - (host_view + 1000 * ticks)) <= 1, (host_view, seen)  # the boottime offset
        assert json.loads(lines["state"])["config"] == {"x": 1} and lines["other"] == "kept"
        assert out.stdout.endswith("in")
        assert not os.path.exists(lines["root"])  # the private copy is gone
        assert json.loads((root / "c2" / "state.json").read_text())["init_process_start"] == host_view
    finally:
        holder.kill()
        holder.wait()
