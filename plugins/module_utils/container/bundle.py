# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""OCI ``config.json`` builder and editor.

``build_config`` turns a container's normalised spec into an OCI runtime
config. Defaults are the safe ones of a system container:

* namespaces pid, ipc, uts, mount, network, cgroup when the kernel has it. A
  privileged container joins its netns by path (made first). An unprivileged one
  joins its user namespace by path (with its ``uidMappings``/``gidMappings``: its
  root is the first id of the host's subordinate range, ``_idmap``) and the
  runtime makes its netns, which the ``prestart`` hook of ``_nethook`` fills;
* no host devices: ``linux.devices`` is empty, the runtime adds only its safe
  set (null, zero, full, random, urandom, tty, console, ptmx/pts), and the
  device cgroup denies everything else;
* masked and read-only ``/proc`` and ``/sys`` paths as in the OCI defaults;
* capabilities: Docker's default set *without* CAP_MKNOD (a system container
  has no business creating device nodes), plus ``add`` minus ``drop``;
* a seccomp profile that allows by default and returns EPERM for the calls
  that reach the host kernel's global state (see ``seccomp_profile``).
"""

from __future__ import annotations

import os

from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import idmap as _idmap
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import prestart_hook as _nethook
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import system as _sysctr
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime.oci import OCI_VERSION, cgroups_path
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

ALL_CAPS = [
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
]

# Docker's default set minus MKNOD.
DEFAULT_CAPS = [
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "NET_BIND_SERVICE",
    "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
]

MASKED_PATHS = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/proc/scsi", "/sys/firmware"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

# Seccomp: calls answered with EPERM unless the capability in the key is granted
# (None: always). userfaultfd and ptrace stay allowed: CRIU's lazy restore runs
# userfaultfd inside the restored task. reboot is left to the kernel (in a pid
# namespace it ends the container's init).
SECCOMP_DENY = {
    None: ["kexec_load", "kexec_file_load", "keyctl", "add_key", "request_key",
           "uselib", "_sysctl"],
    "SYS_MODULE": ["init_module", "finit_module", "delete_module"],
    "DAC_READ_SEARCH": ["open_by_handle_at"],
    "SYS_ADMIN": ["mount", "umount2", "pivot_root", "fsopen", "fsmount", "fsconfig",
                  "fspick", "move_mount", "open_tree", "unshare", "setns", "swapon",
                  "swapoff", "lookup_dcookie", "quotactl", "bpf", "perf_event_open"],
    "SYS_PACCT": ["acct"],
    "SYSLOG": ["syslog"],
    "SYS_RAWIO": ["iopl", "ioperm"],
    "SYS_TIME": ["settimeofday", "clock_settime", "clock_adjtime"],
}
SECCOMP_ARCHES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
    "ppc64le": ["SCMP_ARCH_PPC64LE"],
    "s390x": ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
}


def _cap_name(value, field):
    name = str(value).strip().upper()
    if name.startswith("CAP_"):
        name = name[4:]
    if name == "ALL":
        return name
    if name not in ALL_CAPS:
        raise ValidationError(field, "unknown capability %r; expected one of CAP_%s"
                              % (value, ", CAP_".join(ALL_CAPS)))
    return name


def normalize_capabilities(value, field="capabilities"):
    """{add, drop} as sorted ``CAP_*`` lists; ``ALL`` allowed in drop only."""
    value = value or {}
    if not isinstance(value, dict):
        raise ValidationError(field, "expected a dict with add and drop lists")
    unknown = set(value) - {"add", "drop"}
    if unknown:
        raise ValidationError(field, "unknown keys %s; expected add, drop" % sorted(unknown))
    out = {}
    for key in ("add", "drop"):
        items = value.get(key) or []
        if isinstance(items, str):
            items = [items]
        names = sorted({_cap_name(c, "%s.%s" % (field, key)) for c in items})
        if key == "add" and "ALL" in names:
            raise ValidationError(field + ".add", "ALL is only accepted in drop")
        out[key] = ["CAP_" + n if n != "ALL" else "ALL" for n in names]
    both = set(out["add"]) & set(out["drop"])
    if both:
        raise ValidationError(field, "%s both added and dropped" % ", ".join(sorted(both)))
    return out


def effective_capabilities(caps):
    caps = normalize_capabilities(caps)
    base = set() if "ALL" in caps["drop"] else {"CAP_" + c for c in DEFAULT_CAPS}
    return sorted((base | set(caps["add"])) - set(caps["drop"]))


def seccomp_profile(capabilities, machine=None):
    """Default-allow profile returning EPERM for host-global calls not covered by a granted cap."""
    granted = {c[4:] for c in capabilities}
    names = []
    for cap, calls in SECCOMP_DENY.items():
        if cap is None or cap not in granted:
            names.extend(calls)
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": SECCOMP_ARCHES.get(machine or os.uname().machine, []),
        "syscalls": [{"names": sorted(names), "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }


def base_mounts():
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]


def user_mount(mount):
    """OCI mount entry of one normalised user mount {source, destination, readonly, type}."""
    ro = ["ro"] if mount.get("readonly") else []
    if mount.get("type", "bind") == "tmpfs":
        return {"destination": mount["destination"], "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=755"] + ro}
    return {"destination": mount["destination"], "type": "bind", "source": mount["source"],
            "options": ["rbind", "rprivate"] + ro}


def namespaces(netns_path, cgroupns=None, userns_path=None):
    if cgroupns is None:
        cgroupns = os.path.exists("/proc/self/ns/cgroup")
    out = [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
           {"type": "network", "path": netns_path} if netns_path else {"type": "network"}]
    if cgroupns:
        out.append({"type": "cgroup"})
    if userns_path:
        out.append({"type": "user", "path": userns_path})
    return out


def build_config(name, spec, netns_path, cgroups=None, seccomp=True,
                 cgroupns=None, machine=None, criu_config=None):
    """The OCI config of container ``name`` from its normalised ``spec``, with no
    resources but the device rules (``_limits.persist`` writes the limits).

    ``criu_config``: the CRIU configuration file runc hands to CRIU on checkpoint and
    restore (annotation ``org.criu.config``, instead of runc's default
    /etc/criu/runc.conf); CRIU ignores it while it does not exist."""
    caps = effective_capabilities(spec.get("capabilities"))
    env = {"PATH": DEFAULT_PATH, "HOME": "/root", "TERM": "xterm", "container": "ctrhost"}
    env.update(spec.get("env") or {})
    env.update(spec.get("secret_env") or {})
    idmap = _idmap.of(spec)
    linux = {
        # Unprivileged: the runtime makes the netns inside the user namespace (_nethook).
        "namespaces": namespaces(None if idmap else netns_path, cgroupns,
                                 Layout.userns_path(name) if idmap else None),
        "cgroupsPath": cgroups or cgroups_path(name),
        "resources": {},
        "devices": [],
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
        "rootfsPropagation": "rprivate",
    }
    linux["resources"]["devices"] = [{"allow": False, "access": "rwm"}]
    if idmap:
        linux["uidMappings"], linux["gidMappings"] = _idmap.oci_mappings(idmap)
    if seccomp:
        linux["seccomp"] = seccomp_profile(caps, machine)
    annotations = {"org.ctrhost.name": name, "org.ctrhost.template": spec.get("template", "")}
    if criu_config:
        annotations["org.criu.config"] = criu_config
    cfg = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(spec["command"]),
            "env": ["%s=%s" % kv for kv in sorted(env.items())],
            "cwd": spec.get("cwd") or "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": False,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": spec.get("hostname") or name,
        "mounts": base_mounts() + [user_mount(m) for m in spec.get("mounts") or []],
        "linux": linux,
        "annotations": annotations,
    }
    if idmap:
        _nethook.with_hook(cfg, name)
    return _sysctr.apply_config(cfg, spec)
