"""Every container in a time namespace of its own, with real runc + CRIU: its clocks
continue across a checkpoint and restore (same host here; between the lab's hosts in
``test_clock_continues_across_a_cold_migration``), and commands exec'd into it join it.

Clocks are read by independent paths: the container's own process writes its
/proc/uptime (CLOCK_BOOTTIME) into a file of its rootfs; CLOCK_MONOTONIC is read by a
host Python entering the init's time namespace; the host's clocks are the control
that the gap really happened.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from _local import busybox_root

from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import dump as _checkpoint
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import lifecycle as _container
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import info as _info
from ansible_collections.ctrhost.fleet.plugins.module_utils.core import paths as _paths
from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import restore as _restore
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import driver as _runtime
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import store as _state
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import timens as _timens
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ConflictError

CRIU = shutil.which("criu", path="/usr/local/sbin:/usr/sbin:/usr/bin:/sbin")
# A counter and the container's own uptime, 10 times a second.
CLOCK = ["/bin/sh", "-c", "i=0; while true; do i=$((i+1)); echo \"$i $(cut -d' ' -f1 /proc/uptime)\" "
         "> /tmp/clk.new; mv /tmp/clk.new /tmp/clk; sleep 0.1; done"]
GAP = 5.0

pytestmark = [
    pytest.mark.runtime,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not CRIU, reason="needs CRIU"),
    pytest.mark.skipif(not shutil.which("busybox"), reason="needs a static busybox"),
    pytest.mark.skipif(not _timens.kernel_supported(), reason="needs a kernel with time namespaces"),
]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("tnroot")
    busybox_root(base)
    yield str(base)
    for name in os.listdir(base / "containers") if (base / "containers").exists() else ():
        _container.ensure(dict(root=str(base), name=name, state="absent"))


def start(root, name):
    _container.ensure(dict(root=root, name=name, template="busybox", command=CLOCK, state="started"))
    layout = _paths.Layout(root)
    rt = _runtime.runtime_for(layout, _state.ContainerStore(layout).load(name).get("runtime"))
    return layout, rt


def init_pid(rt, name):
    st = rt.state(name)
    assert st and st["status"] == "running", st
    return st["pid"]


def ns(pid):
    return os.readlink("/proc/%s/ns/time" % pid)


def clk(layout, name):
    """(counter, uptime) the container's own process wrote last."""
    path = layout.container_file(name, "upper/tmp/clk")
    for _ in range(100):
        with open(path) as handle:
            parts = handle.read().split()
        if len(parts) == 2:
            return int(parts[0]), float(parts[1])
        time.sleep(0.01)
    raise AssertionError("no clock line in %s" % path)


def fresh_clk(layout, name):
    """A line written after this call (the loop writes every 0.1 s)."""
    first = clk(layout, name)
    for _ in range(100):
        time.sleep(0.03)
        now = clk(layout, name)
        if now[0] != first[0]:
            return now
    raise AssertionError("the container's counter does not move")


def monotonic_in(pid):
    """CLOCK_MONOTONIC read by a process that enters ``pid``'s time namespace."""
    out = subprocess.run(["nsenter", "--time=/proc/%d/ns/time" % pid, "--", sys.executable, "-c",
                          "import time; print(time.clock_gettime(time.CLOCK_MONOTONIC))"],
                         capture_output=True, text=True, check=True)
    return float(out.stdout)


def host_uptime():
    with open("/proc/uptime") as handle:
        return float(handle.read().split()[0])


def raw_exec(rt, name, *argv):
    """``runc exec`` as the runtime alone does it: no time namespace joined (the control)."""
    return subprocess.run(rt.base_cmd() + ["exec", name, *argv], capture_output=True, text=True,
                          check=True).stdout


def test_clocks_continue_across_restore_and_exec_joins_the_namespace(root):
    name = "tnclk1"
    layout, rt = start(root, name)
    pid = init_pid(rt, name)
    # (a) its init was born in a time namespace of its own, not the host's (nor ours)
    assert ns(pid) != ns("self") and ns(pid) != _timens.INITIAL
    assert os.readlink("/proc/%d/ns/time_for_children" % pid) == ns(pid)
    clock = _info.gather(root, [name], network=False)["containers"][0]["clock"]
    assert clock == dict(namespace=ns(pid), own_namespace=True, offsets=dict(monotonic=0.0, boottime=0.0))

    i0, u0 = fresh_clk(layout, name)
    m0, h0 = monotonic_in(pid), host_uptime()
    _checkpoint.ensure(dict(root=root, name=name, id="gap"))
    time.sleep(GAP)
    _restore.restore(root, name, "gap")
    pid1 = init_pid(rt, name)
    m1 = monotonic_in(pid1)
    i1, u1 = fresh_clk(layout, name)
    h1 = host_uptime()
    print("host uptime %.2f -> %.2f; container uptime %.2f -> %.2f, monotonic %.2f -> %.2f, counter %d -> %d"
          % (h0, h1, u0, u1, m0, m1, i0, i1))
    assert h1 - h0 >= GAP  # control: the gap happened on the host's clocks
    # (b) inside, both clocks moved on by much less than the gap, never backward
    assert 0 <= u1 - u0 < GAP / 2, (u0, u1)
    assert 0 <= m1 - m0 < GAP / 2, (m0, m1)
    assert i0 < i1 < i0 + 40, (i0, i1)  # the counter continued, not restarted
    clock = _info.gather(root, [name], network=False)["containers"][0]["clock"]
    assert clock["own_namespace"] and clock["namespace"] == ns(pid1)
    assert clock["offsets"]["boottime"] < -GAP * 0.8 and clock["offsets"]["monotonic"] < -GAP * 0.8

    # (d) a command exec'd through the library reads the container's clock ...
    up_exec = float(rt.exec(name, ["cut", "-d", " ", "-f1", "/proc/uptime"]).stdout)
    _i, u_now = clk(layout, name)
    assert abs(up_exec - u_now) < 1.0, (up_exec, u_now)
    assert rt.exec(name, ["readlink", "/proc/self/ns/time"]).stdout.strip() == ns(pid1)
    # ... where the runtime's exec alone reads the host's (the control: the gap shows there)
    up_raw = float(raw_exec(rt, name, "cut", "-d", " ", "-f1", "/proc/uptime"))
    print("exec'd: through the library %.2f, runc exec alone %.2f, container %.2f" % (up_exec, up_raw, u_now))
    assert up_raw - u_now > GAP * 0.8, (up_raw, u_now)
    # the runtime's own state is untouched: runc still sees the container running
    assert rt.state(name)["status"] == "running"
    assert not [d for d in os.listdir(os.path.dirname(rt.state_root)) if ".exec-" in d]


@pytest.mark.skipif(not shutil.which("crit"), reason="needs CRIU's crit")
def test_restore_on_a_host_with_a_smaller_uptime_never_goes_backward(root):
    """A checkpoint whose time namespace stood a day ahead of this host's clocks (as if
    dumped on a host up for longer: its ``timens`` image edited with CRIU's own ``crit``)
    restores with positive offsets: the clocks continue from the dump, never backward."""
    name = "tnahead"
    layout, rt = start(root, name)
    _checkpoint.ensure(dict(root=root, name=name, id="ahead"))
    images = layout.checkpoint_dir(name, "ahead")
    [image] = [os.path.join(images, f) for f in os.listdir(images) if f.startswith("timens-")]
    decoded = json.loads(subprocess.run(["crit", "decode", "-i", image], capture_output=True, text=True,
                                        check=True).stdout)
    entry = decoded["entries"][0]
    dumped = entry["boottime"]["tv_sec"] + entry["boottime"]["tv_nsec"] / 1e9 + 86400
    for clock in ("monotonic", "boottime"):
        entry[clock]["tv_sec"] += 86400
    subprocess.run(["crit", "encode", "-o", image], input=json.dumps(decoded), text=True, check=True)
    _restore.restore(root, name, "ahead")
    pid = init_pid(rt, name)
    _i, up = fresh_clk(layout, name)
    mono = monotonic_in(pid)
    print("ahead: dumped boottime %.2f, container uptime after restore %.2f, monotonic %.2f, host %.2f"
          % (dumped, up, mono, host_uptime()))
    assert host_uptime() < dumped - 86000  # control: this host's clocks are far behind the dump's
    assert 0 <= up - dumped < 1.5 and 0 <= mono - dumped < 1.5, (dumped, up, mono)
    offsets = _info.gather(root, [name], network=False)["containers"][0]["clock"]["offsets"]
    assert 86000 < offsets["boottime"] < 86400 and 86000 < offsets["monotonic"] < 86400, offsets


def sleepers(rt, name):
    """Host pids of the container's ``sleep 1000`` processes (waits up to 3 s for one)."""
    for _ in range(100):
        pids = []
        for pid in rt.ps(name):
            try:
                with open("/proc/%d/cmdline" % pid) as handle:
                    if handle.read().split("\0")[:2] == ["sleep", "1000"]:
                        pids.append(pid)
            except OSError:
                continue
        if pids:
            return pids
        time.sleep(0.03)
    return []


def test_checkpoint_after_exec(root):
    name = "tnclk2"
    layout, rt = start(root, name)
    # control: a process the runtime's exec alone leaves behind lives in the host's time
    # namespace, and the dump is refused before anything is frozen
    subprocess.run(rt.base_cmd() + ["exec", "--detach", name, "sleep", "1000"], check=True)
    stray = sleepers(rt, name)
    assert len(stray) == 1 and ns(stray[0]) != ns(init_pid(rt, name))
    with pytest.raises(ConflictError, match="own time namespace"):
        _checkpoint.ensure(dict(root=root, name=name, id="refused"))
    assert rt.state(name)["status"] == "running"
    os.kill(stray[0], 9)
    # the library's exec joins the init's namespace: the dump and restore take it along
    rt.exec(name, ["sh", "-c", "sleep 1000 </dev/null >/dev/null 2>&1 &"])
    joined = sleepers(rt, name)
    assert len(joined) == 1 and ns(joined[0]) == ns(init_pid(rt, name))
    before = fresh_clk(layout, name)
    res = _checkpoint.ensure(dict(root=root, name=name, id="after-exec"))
    assert res["changed"] and rt.state(name) is None
    _restore.restore(root, name, "after-exec")
    pid = init_pid(rt, name)
    back = sleepers(rt, name)
    assert len(back) == 1 and ns(back[0]) == ns(pid), back
    assert before[0] < fresh_clk(layout, name)[0]


def test_container_started_without_a_time_namespace_keeps_working(root, monkeypatch):
    """A container started before this change (its init in the host's time namespace)
    and its checkpoint: both restore, and the restore gives it a namespace of its own."""
    name = "tnold"
    with monkeypatch.context() as patch:
        patch.setattr(_timens, "birth_argv", lambda *a, **k: [])  # how containers started before
        layout, rt = start(root, name)
    pid = init_pid(rt, name)
    assert ns(pid) == ns("self")
    assert _info.gather(root, [name], network=False)["containers"][0]["clock"]["own_namespace"] is False
    assert float(rt.exec(name, ["cut", "-d", " ", "-f1", "/proc/uptime"]).stdout) > 0
    u0 = fresh_clk(layout, name)[1]
    _checkpoint.ensure(dict(root=root, name=name, id="old"))
    time.sleep(2)
    _restore.restore(root, name, "old")
    pid1 = init_pid(rt, name)
    u1 = fresh_clk(layout, name)[1]
    assert ns(pid1) != ns("self") and 0 <= u1 - u0 < 1.5, (u0, u1)
    up_exec = float(rt.exec(name, ["cut", "-d", " ", "-f1", "/proc/uptime"]).stdout)
    assert abs(up_exec - fresh_clk(layout, name)[1]) < 1.0


# ---------------------------------------------------------------- between lab hosts

# Runs inside a lab host: python -c LAB_HELPER OP JSON-ARGS -> one JSON line.
LAB_HELPER = r'''
import json, os, shutil, subprocess, sys, time
sys.path.insert(0, os.path.join(@ROOT@, ".cache", "pytest-collections"))
from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import dump as _checkpoint
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import lifecycle as _container
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import source as _migrate
from ansible_collections.ctrhost.fleet.plugins.module_utils.core import paths as _paths
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import driver as _runtime
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import timens as _timens
R = "/var/lib/ctrhost"
op, a = sys.argv[1], json.loads(sys.argv[2])
out = {}
if op == "template":
    base = R + "/templates/busybox"
    if not os.path.exists(base + "/template.json"):
        for d in ("bin", "etc", "dev", "proc", "sys", "root", "tmp", "run"):
            os.makedirs(base + "/rootfs/" + d, exist_ok=True)
        bb = shutil.which("busybox")
        shutil.copy2(bb, base + "/rootfs/bin/busybox")
        for x in subprocess.run([bb, "--list"], capture_output=True, text=True).stdout.split():
            if x != "busybox":
                os.symlink("busybox", base + "/rootfs/bin/" + x)
        json.dump(dict(name="busybox", sha256="d" * 64, source=dict(type="src", src="t"),
                       size=0, created="2000-01-01T00:00:00Z"), open(base + "/template.json", "w"))
elif op == "start":
    _container.ensure(dict(root=R, name=a["name"], template="busybox", state="started",
                           command=a["command"]))
elif op == "remove":
    _container.ensure(dict(root=R, name=a["name"], state="absent"))
elif op == "clock":
    st = _runtime.runtime_for(_paths.Layout(R)).state(a["name"])
    out = dict(status=(st or {}).get("status", "absent"))
    if out["status"] == "running":
        path = R + "/containers/%s/upper/tmp/clk" % a["name"]
        first = open(path).read().split()
        for _ in range(100):  # a line written after this call
            time.sleep(0.03)
            line = open(path).read().split()
            if len(line) == 2 and line != first:
                break
        mono = subprocess.run(["nsenter", "--time=/proc/%d/ns/time" % st["pid"], "--", sys.executable,
                               "-c", "import time; print(time.clock_gettime(time.CLOCK_MONOTONIC))"],
                              capture_output=True, text=True, check=True).stdout
        out.update(counter=int(line[0]), uptime=float(line[1]), monotonic=float(mono),
                   host_uptime=float(open("/proc/uptime").read().split()[0]),
                   clock=_timens.clock(st["pid"]))
elif op == "migrate":
    def pause(run):  # the container stays dumped a while before it travels
        time.sleep(a["gap"])
    try:
        out = _migrate.migrate(R, a["name"], a["dest"], mode=a["mode"], timeout=120,
                               hooks=dict(dumped=pause))
    except Exception as exc:
        out = dict(failed=True, msg=str(exc))
print(json.dumps(out, default=str))
'''


def lab_helper(lab, host, op, **args):
    from lab import ROOT

    code = LAB_HELPER.replace("@ROOT@", repr(ROOT))
    proc = lab.host_exec(host, [os.path.join(ROOT, ".venv", "bin", "python"), "-c", code, op,
                                json.dumps(args)], timeout=300)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["cold", "lazy"])
def test_clock_continues_across_a_migration(lab, mode):
    """(c) The lab's hosts share one kernel clock, so a pause after the dump stands for
    the time a migration takes between hosts: inside, the clocks move on by much less."""
    a, b = lab.hosts
    name = "tnmig%s" % mode[0]
    for host in (a, b):
        lab_helper(lab, host, "template")
        lab_helper(lab, host, "remove", name=name)
    try:
        lab_helper(lab, a, "start", name=name, command=CLOCK)
        before = lab_helper(lab, a, "clock", name=name)
        assert before["clock"]["own_namespace"], before
        res = lab_helper(lab, a, "migrate", name=name, dest=lab.host(b)["address"], mode=mode, gap=GAP)
        assert not res.get("failed"), res
        if res["mode"] != mode:
            pytest.skip("%s migration unusable here: %s" % (mode, res["fallback"]))
        after = lab_helper(lab, b, "clock", name=name)
        assert lab_helper(lab, a, "clock", name=name)["status"] == "absent"
        print("%s: host uptime %.2f -> %.2f; container uptime %.2f -> %.2f, monotonic %.2f -> %.2f, "
              "counter %d -> %d, offsets there %s" % (
                  mode, before["host_uptime"], after["host_uptime"], before["uptime"], after["uptime"],
                  before["monotonic"], after["monotonic"], before["counter"], after["counter"],
                  after["clock"]["offsets"]))
        assert after["host_uptime"] - before["host_uptime"] >= GAP  # control: the gap happened
        assert 0 <= after["uptime"] - before["uptime"] < after["host_uptime"] - before["host_uptime"] - GAP / 2
        assert 0 <= after["monotonic"] - before["monotonic"] < \
            after["host_uptime"] - before["host_uptime"] - GAP / 2
        assert before["counter"] < after["counter"] < before["counter"] + 200
        assert after["clock"]["own_namespace"] and after["clock"]["offsets"]["boottime"] < -GAP * 0.8
    finally:
        for host in (a, b):
            lab_helper(lab, host, "remove", name=name)
