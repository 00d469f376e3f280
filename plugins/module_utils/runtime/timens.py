# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Time namespaces: every container's clocks continue across restore and migration.

How, and why this way:

* runc 1.1 (Debian 12's) has no ``time`` namespace type in ``config.json`` (runc
  1.2 added ``linux.timeOffsets``), so the runtime itself is started in a fresh
  time namespace: ``unshare --fork --kill-child --time -- runc run ...``. The
  runtime's children, and so the container's init, are born in it (offsets 0:
  the container's clocks read as the host's until its first restore). crun
  starts the same way, so both runtimes share one mechanism. The offsets must
  stay 0 at birth (no ``--boottime``/``--monotonic``): the runtime records its
  init's start time as its own namespace sees it (below) and would otherwise take
  a running container for stopped.
* CRIU (3.14 and later, ``criu/timens.c``) dumps the clocks of the dumped tree's
  time namespace (``timens.img``; the host's clocks when the tree is in the host's
  namespace) and on restore creates a new time namespace whose offsets make
  CLOCK_MONOTONIC and CLOCK_BOOTTIME continue from the dumped values: a restore
  later on the same host, or on a host (or a rebooted host) with a smaller uptime,
  never jumps the container's clocks. ``runc restore`` needs nothing for this.
  CRIU 3.17 (Debian 12's) has the same code (``prepare_timens``, called by the
  root task before it forks the tree).
* ``runc exec`` joins only the namespaces named in ``config.json``: an exec'd
  process would see the host's clocks and, living in a second time namespace,
  make every later dump fail. Anything that execs into a container therefore
  runs under ``nsenter --time=/proc/<init>/ns/time`` (setns into a time
  namespace also sets the one of the children).
* The runtime checks that the container's init still lives by comparing its
  start time in ``/proc/<init>/stat`` with the one it recorded; the kernel shows
  that start time shifted by the reader's CLOCK_BOOTTIME offset, so after a
  restore a runtime inside the container's time namespace would take the init
  for dead ("cannot exec in a stopped container"). The exec therefore runs with
  a private copy of the runtime's state of that container whose recorded start
  time is the one seen from inside (``exec_argv``); the runtime's own state,
  read by every other call from the host's namespace, is never touched. crun
  keeps the start time in another file under another key (``START_KEYS``).

A host without time namespaces (kernel before 5.6, util-linux before 2.36, CRIU
before 3.14) runs its containers in the host's time namespace, as before;
``host_info`` reports ``clock_continuity`` false with the reason.
"""

from __future__ import annotations

import os
import shlex

from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import probecache as _probecache
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import RUN_DIR

CLOCKS = ("monotonic", "boottime")
# Runtime verbs whose children become the container's init.
BIRTH_VERBS = ("run", "create")
UTIL_LINUX = "util-linux 2.36 or later"
# The kernel's initial time namespace (PROC_TIME_INIT_INO): the host's, where pid 1
# cannot be read.
INITIAL = "time:[4026531834]"
# Where each runtime records its init's start time (a state file of the container).
START_KEYS = {"runc": ("state.json", "init_process_start"), "crun": ("status", "process-start-time")}


def kernel_supported(proc="/proc"):
    """Whether this kernel has time namespaces (``/proc/self/timens_offsets``, Linux 5.6+)."""
    return os.path.exists(os.path.join(proc, "self", "timens_offsets"))


def tool_supports_time(tool, cache_dir=None):
    """Whether util-linux ``tool`` (unshare, nsenter) knows ``--time``; False when absent."""
    binary = _cli.which(tool)
    if not binary:
        return False

    def probe():
        result = _cli.run([binary, "--help"], check=False, timeout=15)
        return "--time" in result.stdout + result.stderr

    return bool(_probecache.cached(cache_dir or _probecache.cache_dir_of(RUN_DIR),
                                   "time-%s" % _probecache.leaf(binary),
                                   _probecache.probe_key(binary), probe))


def continuity(criu_timens, proc="/proc", cache_dir=None):
    """(available, reason) of clock continuity on this host. ``criu_timens`` is the
    verdict of ``criu check --feature timens`` (None: this CRIU does not know it)."""
    if not kernel_supported(proc):
        return False, "the kernel has no time namespaces (Linux 5.6 or later with CONFIG_TIME_NS)"
    for tool in ("unshare", "nsenter"):
        if not _cli.which(tool):
            return False, "%s not found on this host (%s)" % (tool, UTIL_LINUX)
        if not tool_supports_time(tool, cache_dir):
            return False, "%s does not know --time (%s)" % (tool, UTIL_LINUX)
    if criu_timens is None:
        return False, "CRIU is too old to restore clocks (3.14 or later restores time namespaces)"
    if not criu_timens:
        return False, "criu check --feature timens failed"
    return True, None


def birth_argv(verb, cache_dir=None, proc="/proc", own=None):
    """The prefix that starts runtime ``verb`` in a new time namespace (for ``run`` and
    ``create``); [] for other verbs or where this host has no time namespaces.

    ``own``: the path of the time namespace made for the container with its user
    namespace (an unprivileged container's: CRIU dumps only namespaces that the
    container's user namespace owns); when it is mounted there, the runtime enters it
    (``nsenter --time``) instead of a new one."""
    if verb not in BIRTH_VERBS or not kernel_supported(proc):
        return []
    if own and _is_time_ns(own, proc) and tool_supports_time("nsenter", cache_dir):
        return [_cli.which("nsenter"), "--time=" + own, "--"]
    if not tool_supports_time("unshare", cache_dir):
        return []
    return [_cli.which("unshare"), "--fork", "--kill-child", "--time", "--"]


def _is_time_ns(path, proc="/proc"):
    try:
        return os.stat(path).st_dev == os.stat(os.path.join(proc, "self", "ns", "time")).st_dev
    except OSError:
        return False


def namespace(pid, proc="/proc"):
    """``time:[inode]`` of process ``pid`` (or ``self``), or None."""
    try:
        return os.readlink(os.path.join(proc, str(pid), "ns", "time"))
    except OSError:
        return None


# ``<runtime> exec`` in the container's time namespace, as one POSIX shell script (the
# library runs it, and so does the ``container`` connection on a host that has no
# Python of ours). "$@" is the runtime's sub-command (``exec ... <name> <argv>``).
EXEC_SCRIPT = r"""b=%(binary)s; r=%(root)s; n=%(name)s; f=%(file)s; k=%(key)s
pid=$("$b" --root "$r" state "$n" 2>/dev/null | sed -n 's/^ *"pid": *\([0-9]*\).*/\1/p')
t=/proc/${pid:-0}/ns/time; own=$(readlink /proc/$$/ns/time)
if [ "${pid:-0}" != 0 ] && [ -n "$own" ] && [ -n "$(readlink "$t" 2>/dev/null)" ] &&
   [ "$(readlink "$t")" != "$own" ] && nsenter --help 2>&1 | grep -q -e --time &&
   s=$(nsenter --time="$t" -- cat "/proc/$pid/stat" | sed 's/.*) //' | cut -d' ' -f20) &&
   [ -n "$s" ] && d=$(mktemp -d "${r%%/}.exec-XXXXXX"); then
  trap 'rm -rf "$d"' EXIT
  mkdir "$d/$n" && find "$r/$n" -maxdepth 1 -type f ! -name "$f" -exec cp -p {} "$d/$n/" ';' &&
    sed "s/\"$k\": *[0-9]*/\"$k\":$s/" "$r/$n/$f" > "$d/$n/$f" &&
    nsenter --time="$t" -- "$b" --root "$d" "$@"
  exit $?
fi
exec "$b" --root "$r" "$@"
"""


def exec_argv(runtime, base_cmd, cid):
    """``[/bin/sh, -c, EXEC_SCRIPT, ...]``: put ``<runtime> exec`` arguments after it.

    The script enters the time namespace of ``cid``'s init when it has one of its
    own (and nsenter knows ``--time``) and then runs the runtime with a private
    copy of ``cid``'s state whose recorded init start time is the one seen from
    inside (see the module's docstring); otherwise it runs ``base_cmd`` as is.
    ``base_cmd`` is ``[binary, --root, state_root]``."""
    name, key = START_KEYS.get(runtime, START_KEYS["runc"])
    script = EXEC_SCRIPT % dict(binary=shlex.quote(base_cmd[0]), root=shlex.quote(base_cmd[2]),
                                name=shlex.quote(cid), file=shlex.quote(name), key=shlex.quote(key))
    return ["/bin/sh", "-c", script, "ctrhost-exec"]


def parse_offsets(text):
    """``/proc/PID/timens_offsets`` -> {monotonic: seconds, boottime: seconds} (floats)."""
    out = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        clock, sec, nsec = parts
        clock = {"1": "monotonic", "7": "boottime"}.get(clock, clock)
        if clock in CLOCKS:
            out[clock] = int(sec) + int(nsec) / 1e9
    return out


def clock(pid, proc="/proc"):
    """{namespace, own_namespace, offsets} of a container's init ``pid``, or None when
    it cannot be read (no pid, gone, no time namespaces). ``own_namespace``: not the
    host's time namespace (pid 1's, or the kernel's initial one)."""
    if not pid:
        return None
    ident = namespace(pid, proc)
    if ident is None:
        return None
    try:
        with open(os.path.join(proc, str(pid), "timens_offsets")) as handle:
            offsets = parse_offsets(handle.read())
    except OSError:
        offsets = {}
    host = namespace(1, proc) or INITIAL
    return dict(namespace=ident, own_namespace=ident != host, offsets=offsets)
