"""Host facts read from sample /proc and /sys trees (v1, v2, hybrid) and fake tools."""

import os
import stat

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import procfs as _procfs
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import sysinfo as _sysinfo
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import probe as _probe

# ------------------------------------------------------------------ sample trees

HI_MOUNTINFO_V1 = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
25 22 0:21 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:22 / /sys/fs/cgroup/systemd rw,nosuid shared:10 - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
29 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:13 - cgroup cgroup rw,cpu,cpuacct
30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory
31 25 0:27 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid shared:15 - cgroup cgroup rw,net_cls,net_prio
32 25 0:28 / /sys/fs/cgroup/pids rw,nosuid shared:16 - cgroup cgroup rw,pids
33 25 0:29 / /sys/fs/cgroup/cpuset rw,nosuid shared:17 - cgroup cgroup rw,noprefix,cpuset
"""

HI_PROC_CGROUPS_V1 = """\
#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t8\t1\t1
cpu\t3\t60\t1
cpuacct\t3\t60\t1
memory\t4\t80\t1
net_cls\t5\t1\t1
net_prio\t5\t1\t1
pids\t6\t70\t1
hugetlb\t0\t1\t0
"""

HI_MOUNTINFO_V2 = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
25 22 0:21 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""

HI_PROC_CGROUPS_V2 = """\
#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t0\t90\t1
cpu\t0\t90\t1
memory\t0\t90\t1
pids\t0\t90\t1
"""

# The layout of a Debian host booted with systemd.unified_cgroup_hierarchy=0 and a
# controller (hugetlb) left on the cgroup2 side.
HI_MOUNTINFO_HYBRID = """\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

HI_PROC_CGROUPS_HYBRID = """\
#subsys_name\thierarchy\tnum_cgroups\tenabled
cpu\t1\t1\t1
cpuacct\t2\t1\t1
memory\t4\t35\t1
pids\t8\t1\t1
hugetlb\t0\t1\t1
"""


def hi_tree(base, files):
    """Write {host path: text} below ``base``; returns ``base`` as a string."""
    for path, text in files.items():
        full = os.path.join(str(base), path.lstrip("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as handle:
            handle.write(text)
    return str(base)


def hi_cgroup_tree(base, kind, unified_controllers="hugetlb\n"):
    files = {
        "v1": {"/proc/self/mountinfo": HI_MOUNTINFO_V1, "/proc/cgroups": HI_PROC_CGROUPS_V1},
        "v2": {"/proc/self/mountinfo": HI_MOUNTINFO_V2, "/proc/cgroups": HI_PROC_CGROUPS_V2,
               "/sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n"},
        "hybrid": {"/proc/self/mountinfo": HI_MOUNTINFO_HYBRID, "/proc/cgroups": HI_PROC_CGROUPS_HYBRID,
                   "/sys/fs/cgroup/unified/cgroup.controllers": unified_controllers},
        "none": {"/proc/self/mountinfo": "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"},
    }[kind]
    return hi_tree(base, files)


def hi_tool(directory, name, script):
    """An executable shell script standing in for a host tool (the command boundary)."""
    path = os.path.join(str(directory), name)
    with open(path, "w") as handle:
        handle.write("#!/bin/sh\n" + script)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


@pytest.fixture(autouse=True)
def hi_fresh_cache():
    _sysinfo.clear_cache()
    yield
    _sysinfo.clear_cache()


# ------------------------------------------------------------------ cpus, memory, kernel

def test_parse_cpu_list():
    assert _sysinfo.parse_cpu_list("0-3,6,8-9\n") == [0, 1, 2, 3, 6, 8, 9]
    assert _sysinfo.parse_cpu_list("5") == [5]
    assert _sysinfo.parse_cpu_list("") == []


def test_cpu_count_follows_affinity_not_online(tmp_path):
    base = hi_tree(tmp_path, {"/proc/self/status": "Name:\tpython\nCpus_allowed:\tf\nCpus_allowed_list:\t0-2,7\n",
                              "/sys/devices/system/cpu/online": "0-15\n"})
    assert _sysinfo.cpu_count(base) == 4
    assert _sysinfo.online_cpu_count(base) == 16


def test_cpu_count_without_status_uses_online(tmp_path):
    base = hi_tree(tmp_path, {"/sys/devices/system/cpu/online": "0-5\n"})
    assert _sysinfo.cpu_count(base) == 6


def test_meminfo_in_bytes(tmp_path):
    base = hi_tree(tmp_path, {"/proc/meminfo": "MemTotal:       16318712 kB\nMemFree:         1000000 kB\n"
                                               "MemAvailable:   12000000 kB\nBuffers:          200 kB\n"
                                               "SwapTotal:             0 kB\nHugePages_Total:       0\n"})
    info = _sysinfo.meminfo(base)
    assert info["total"] == 16318712 * 1024
    assert info["available"] == 12000000 * 1024
    assert info["swap_total"] == 0


def test_meminfo_estimates_available_on_old_kernels(tmp_path):
    base = hi_tree(tmp_path, {"/proc/meminfo": "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 20 kB\nCached: 300 kB\n"})
    assert _sysinfo.meminfo(base)["available"] == 420 * 1024


def test_meminfo_without_total_fails(tmp_path):
    base = hi_tree(tmp_path, {"/proc/meminfo": "garbage\n"})
    with pytest.raises(Exception, match="MemTotal"):
        _sysinfo.meminfo(base)


def test_kernel_release(tmp_path):
    base = hi_tree(tmp_path, {"/proc/sys/kernel/osrelease": "6.1.0-18-amd64\n"})
    assert _sysinfo.kernel_release(base) == "6.1.0-18-amd64"


def test_filesystems_and_modules(tmp_path):
    base = hi_tree(tmp_path, {
        "/proc/filesystems": "nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\toverlay\n",
        "/proc/sys/kernel/osrelease": "6.1.0-18-amd64\n",
        "/lib/modules/6.1.0-18-amd64/modules.dep": "kernel/fs/overlayfs/overlay.ko.xz:\nkernel/fs/fuse/fuse.ko:\n",
    })
    assert {"overlay", "ext4", "tmpfs"} <= _sysinfo.filesystems(base)
    assert _sysinfo.kernel_module_available("overlay", base)
    assert _sysinfo.kernel_module_available("fuse", base)
    assert not _sysinfo.kernel_module_available("over", base)
    assert not _sysinfo.kernel_module_available("btrfs", base)


# ------------------------------------------------------------------ capabilities and pipes

def test_capability_reads_capeff_bits(tmp_path):
    full = hi_tree(tmp_path / "full", {"/proc/self/status": "CapEff:\t000001ffffffffff\n",
                                       "/proc/self/uid_map": "         0          0 4294967295\n"})
    without = hi_tree(tmp_path / "without", {"/proc/self/status": "CapEff:\t000001fffeffffff\n"})
    assert _sysinfo.capability(_sysinfo.CAP_SYS_RESOURCE, full)
    assert not _sysinfo.capability(_sysinfo.CAP_SYS_RESOURCE, without)
    assert _sysinfo.capability(21, without)  # CAP_SYS_ADMIN still there


def test_capability_in_a_user_namespace_does_not_count(tmp_path):
    base = hi_tree(tmp_path, {"/proc/self/status": "CapEff:\t000001ffffffffff\n",
                              "/proc/self/uid_map": "0 100000 65536\n"})
    assert not _sysinfo.capability(_sysinfo.CAP_SYS_RESOURCE, base)


def test_pipe_max_size(tmp_path):
    assert _sysinfo.pipe_max_size(hi_tree(tmp_path, {"/proc/sys/fs/pipe-max-size": "1048576\n"})) == 1048576
    assert _sysinfo.pipe_max_size(str(tmp_path / "nothing")) is None


def test_criu_pipe_bytes_is_rounded_like_the_kernel():
    # 8 pages / 40-byte pipe_buffer = 819 slots, rounded up to 1024 pages
    assert _sysinfo.criu_pipe_bytes(4096) == 4 * 1024 * 1024
    assert _sysinfo.criu_pipe_bytes(65536) == 16384 * 65536


def test_pipe_resize_probe_on_this_kernel():
    assert _sysinfo.pipe_resize_probe(65536) == (True, None)
    ok, error = _sysinfo.pipe_resize_probe(-1)
    assert ok is False and error == "Invalid argument"


def test_pipe_resize_probe_agrees_with_caps_and_sysctl():
    """The kernel lets a pipe grow past fs.pipe-max-size only with CAP_SYS_RESOURCE."""
    with open("/proc/self/status") as handle:
        capeff = [line.split()[1] for line in handle if line.startswith("CapEff:")][0]
    with open("/proc/sys/fs/pipe-max-size") as handle:
        max_size = int(handle.read())
    needed = _sysinfo.criu_pipe_bytes()
    with open("/proc/self/uid_map") as handle:
        in_init_ns = handle.read().split() == ["0", "0", "4294967295"]
    expected = (bool(int(capeff, 16) & (1 << 24)) and in_init_ns) or max_size >= needed
    assert _sysinfo.pipe_resize_probe(needed)[0] is expected


@pytest.mark.parametrize("args, usable, reason", [
    ((False, True, True, 1 << 30, 4 << 20, None), False, "userfaultfd"),
    ((True, False, True, 1 << 30, 4 << 20, None), False, "uffd-noncoop"),
    ((True, True, False, 1 << 20, 4 << 20, None), False, "fs.pipe-max-size=1048576"),
    ((True, True, True, 1 << 20, 4 << 20, None), True, None),
    ((True, True, False, 4 << 20, 4 << 20, None), True, None),
    ((True, True, False, 1 << 20, 4 << 20, True), True, None),
    ((True, True, True, 1 << 30, 4 << 20, False), False, "fails here"),
])
def test_lazy_pages_verdict(args, usable, reason):
    got, why = _sysinfo.lazy_pages_verdict(*args)
    assert got is usable
    if reason:
        assert reason in why
    else:
        assert why is None


# ------------------------------------------------------------------ cgroups

def test_cgroup_v1_layout(tmp_path):
    layout = _sysinfo.cgroup_layout(hi_cgroup_tree(tmp_path, "v1"))
    assert layout["mode"] == "v1" and layout["version"] == 1
    assert layout["v2_mount"] is None and layout["v2_controllers"] == []
    mounts = {name: info["mount"] for name, info in layout["controllers"].items()}
    assert mounts == {
        "cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
        "memory": "/sys/fs/cgroup/memory", "net_cls": "/sys/fs/cgroup/net_cls,net_prio",
        "net_prio": "/sys/fs/cgroup/net_cls,net_prio", "pids": "/sys/fs/cgroup/pids",
        "cpuset": "/sys/fs/cgroup/cpuset",
    }
    assert layout["named"] == {"systemd": "/sys/fs/cgroup/systemd"}


def test_cgroup_v2_layout(tmp_path):
    layout = _sysinfo.cgroup_layout(hi_cgroup_tree(tmp_path, "v2"))
    assert layout["mode"] == "v2" and layout["version"] == 2
    assert layout["v2_mount"] == "/sys/fs/cgroup"
    assert layout["v2_controllers"] == ["cpu", "cpuset", "hugetlb", "io", "memory", "misc", "pids", "rdma"]
    assert all(info == {"version": 2, "mount": "/sys/fs/cgroup"} for info in layout["controllers"].values())


def test_cgroup_hybrid_layout(tmp_path):
    layout = _sysinfo.cgroup_layout(hi_cgroup_tree(tmp_path, "hybrid"))
    assert layout["mode"] == "hybrid" and layout["version"] == 1
    assert layout["v2_mount"] == "/sys/fs/cgroup/unified"
    assert layout["v2_controllers"] == ["hugetlb"]
    assert layout["controllers"]["memory"] == {"version": 1, "mount": "/sys/fs/cgroup/memory"}
    assert layout["controllers"]["hugetlb"] == {"version": 2, "mount": "/sys/fs/cgroup/unified"}
    assert "systemd" not in layout["controllers"]


def test_cgroup_none(tmp_path):
    layout = _sysinfo.cgroup_layout(hi_cgroup_tree(tmp_path, "none"))
    assert layout["mode"] == "none" and layout["version"] is None and layout["controllers"] == {}


def test_cgroup_v1_without_proc_cgroups_filters_options(tmp_path):
    base = hi_tree(tmp_path, {"/proc/self/mountinfo": HI_MOUNTINFO_V1})
    assert sorted(_sysinfo.cgroup_layout(base)["controllers"]) == [
        "cpu", "cpuacct", "cpuset", "memory", "net_cls", "net_prio", "pids"]


def test_mountinfo_unescapes_paths():
    mounts = _procfs.parse_mountinfo(
        "40 31 0:37 / /mnt/my\\040cgroup rw - cgroup2 none rw\n"
        "41 31 0:38 / /a rw shared:3 master:1 - cgroup cgroup rw,memory\nshort line\n")
    assert mounts[0]["mount_point"] == "/mnt/my cgroup" and mounts[0]["fstype"] == "cgroup2"
    assert mounts[1]["super_options"] == ["rw", "memory"]
    assert len(mounts) == 2


# ------------------------------------------------------------------ runtimes

HI_RUNC_VERSION = "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\ngo: go1.19.8\n"
HI_CRUN_VERSION = ("crun version 1.8.1\ncommit: f8a096be\nrundir: /run/crun\nspec: 1.0.0\n"
                   "+SYSTEMD +SELINUX +APPARMOR +CAP +SECCOMP +EBPF +CRIU +YAJL\n")


def test_parse_runtime_version():
    runc = _probe.parse_runtime_version(HI_RUNC_VERSION)
    assert (runc["version"], runc["commit"], runc["spec"]) == ("1.1.5+ds1", "1.1.5+ds1-1+deb12u1", "1.0.2-dev")
    crun = _probe.parse_runtime_version(HI_CRUN_VERSION)
    assert crun["version"] == "1.8.1" and "CRIU" in crun["build_features"]
    assert _probe.parse_version("1.1.5+ds1") == (1, 1, 5)
    assert _probe.parse_version("1.8") == (1, 8, 0)
    assert _probe.parse_version("unknown") is None


def test_runtime_info_runs_the_tool_once(tmp_path):
    counter = tmp_path / "calls"
    runc = hi_tool(tmp_path, "runc", "echo x >> %s\nprintf '%s'\n" % (counter, HI_RUNC_VERSION))
    first = _probe.runtime_info("runc", runc)
    second = _probe.runtime_info("runc", runc)
    assert first == second and first["path"] == runc and first["version"] == "1.1.5+ds1"
    assert counter.read_text().count("x") == 1
    _sysinfo.clear_cache()
    _probe.runtime_info("runc", runc)
    assert counter.read_text().count("x") == 2


def test_runtime_info_missing_and_broken(tmp_path):
    missing = _probe.runtime_info("crun", str(tmp_path / "nope"))
    assert missing["path"] is None and "not found" in missing["error"]
    broken = hi_tool(tmp_path, "crun", "echo 'cannot load libyajl' >&2\nexit 127\n")
    info = _probe.runtime_info("crun", broken)
    assert info["path"] == broken and info["version"] is None and "libyajl" in info["error"]
    usable, reason = _probe.runtime_usable("crun", info, {"mode": "v2"})
    assert not usable and "does not run" in reason


@pytest.mark.parametrize("name, kind, unified, version, usable, reason", [
    ("crun", "hybrid", "hugetlb\n", "1.8.1", False, "hybrid"),
    ("crun", "hybrid", "", "1.8.1", True, None),
    ("crun", "v2", None, "1.8.1", True, None),
    ("crun", "v1", None, "1.8.1", True, None),
    ("runc", "hybrid", "hugetlb\n", "1.1.5+ds1", True, None),
    ("runc", "v2", None, "1.1.5", True, None),
    ("runc", "v2", None, "0.1.1", False, "cgroup v2"),
    ("runc", "none", None, "1.1.5", False, "no cgroup"),
])
def test_runtime_usable(tmp_path, name, kind, unified, version, usable, reason):
    base = hi_cgroup_tree(tmp_path, kind, unified) if unified is not None else hi_cgroup_tree(tmp_path, kind)
    layout = _sysinfo.cgroup_layout(base)
    got, why = _probe.runtime_usable(name, {"path": "/x/" + name, "version": version}, layout)
    assert got is usable
    if reason:
        assert reason in why
        if name == "crun":
            assert "/sys/fs/cgroup/unified" in why and "hugetlb" in why
    else:
        assert why is None


# ------------------------------------------------------------------ CRIU

HI_CRIU = """\
echo x >> "$(dirname "$0")/calls"
case "$1 $2 $3" in
  "--version  ") echo "Version: 4.2.1"; echo "GitID: v4.2.1" ;;
  "check  ") echo "Looks good." ;;
  "check --feature uffd"|"check --feature uffd-noncoop") echo "$3 is supported" ;;
  "check --feature mem_dirty_track")
     echo "Warn  (criu/cr-check.c:824): Dirty tracking is OFF. Memory snapshot will not work." >&2; exit 1 ;;
  "check --feature timens") echo "Error (criu/cr-check.c:1901): Unknown feature timens" >&2; exit 1 ;;
  *) echo "$3 is supported" ;;
esac
"""


def test_trim_output_keeps_the_tail():
    text = "\n".join("line %d" % i for i in range(100))
    trimmed = _sysinfo.trim_output(text, lines=5)
    assert trimmed.splitlines() == ["line %d" % i for i in range(95, 100)]
    assert len(_sysinfo.trim_output("x" * 5000)) == 2000


def test_installed_kernels_newest_first_with_the_running_one(tmp_path):
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/osrelease").write_text("6.1.0-18-amd64\n")
    (tmp_path / "boot").mkdir()
    for name in ("vmlinuz-6.1.0-9-amd64", "vmlinuz-6.12.12+bpo-amd64", "vmlinuz-6.1.0-41-amd64",
                 "config-6.1.0-99-amd64", "vmlinuz-"):
        (tmp_path / "boot" / name).write_text("")
    assert _sysinfo.installed_kernels(str(tmp_path)) == [
        "6.12.12+bpo-amd64", "6.1.0-41-amd64", "6.1.0-18-amd64", "6.1.0-9-amd64"]
    # a running kernel newer than any in /boot comes first; no /boot at all: the running one alone
    (tmp_path / "proc/sys/kernel/osrelease").write_text("6.18.0\n")
    assert _sysinfo.installed_kernels(str(tmp_path))[:2] == ["6.18.0", "6.12.12+bpo-amd64"]
    for name in os.listdir(tmp_path / "boot"):
        (tmp_path / "boot" / name).unlink()
    (tmp_path / "boot").rmdir()
    assert _sysinfo.installed_kernels(str(tmp_path)) == ["6.18.0"]
