# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""CRIU: discovery, feature checks, statistics images and log classification.

* ``discover(path)``: the CRIU binary, its version, whether ``criu check``
  passes, and what this host can do with it (pre-dump needs dirty memory
  tracking; lazy pages need userfaultfd and a pipe size CRIU may set); the
  probes are ``_criutool.Criu``'s.
* ``read_stats(path)``: the ``stats-dump`` / ``stats-restore`` images CRIU
  leaves in the work directory: a magic header and one protobuf
  ``stats_entry``, decoded here (no protobuf dependency).
* ``classify(text)``: the cause of a failed dump/restore from CRIU's log,
  with the log lines that say so.
"""

from __future__ import annotations

import os
import re
import struct

from ansible_collections.ctrhost.fleet.plugins.module_utils.criu.tool import Criu

IMG_SERVICE_MAGIC = 0x55105940
STATS_MAGIC = 0x57093306

# stats.proto (CRIU 3.x/4.x): field number -> name; times are microseconds.
DUMP_FIELDS = {
    1: "freezing_time", 2: "frozen_time", 3: "memdump_time", 4: "memwrite_time",
    5: "pages_scanned", 6: "pages_skipped_parent", 7: "pages_written", 8: "irmap_resolve",
    9: "pages_lazy", 10: "page_pipes", 11: "page_pipe_bufs", 12: "shpages_scanned",
    13: "shpages_skipped_parent", 14: "shpages_written",
}
RESTORE_FIELDS = {
    1: "pages_compared", 2: "pages_skipped_cow", 3: "forking_time", 4: "restore_time",
    5: "pages_restored",
}
TIME_FIELDS = ("freezing_time", "frozen_time", "memdump_time", "memwrite_time",
               "irmap_resolve", "forking_time", "restore_time")

# Error lines CRIU prints on every run of a root without CAP_SYS_RESOURCE and that
# do not make it fail: never reported as a cause.
BENIGN = (
    re.compile(r"rlimit: Can't setup RLIMIT_NOFILE for self"),
)

# (cause, pattern, hint): first matching error line wins, in this order.
CAUSES = (
    ("tcp_established", r"Connected TCP socket",
     "the container has an established TCP connection; set tcp_established: true"),
    ("ext_unix_sk", r"External socket (is used|found in image)|name-less external socket",
     "the container holds a unix socket connected outside it; set ext_unix_sk: true"),
    ("file_locks", r"file locks are hold|Dump file lock failed|--file-locks",
     "the container holds file locks; set file_locks: true"),
    ("external_stdio", r"Can't lookup mount=\d+ for fd=[012] ",
     "the container's stdin/stdout/stderr is a host file outside its mounts; CRIU can dump "
     "a pipe or /dev/null there, not a log file: start it with its stdio on a pipe"),
    ("external_file", r"Can't lookup mount=\d+ for fd=",
     "the container holds open a host file outside its mounts"),
    ("no_space", r"No space left on device|Disk quota exceeded",
     "the file system holding the images is full"),
    ("image_corrupt", r"magic doesn't match|Magic doesn't match|Unexpected EOF|Failed unpacking"
     r"|Img trimmed|Read \d+ bytes while \d+ expected|Too old image|Not supported images version",
     "the checkpoint images are damaged or incomplete"),
    ("pipe_size", r"page-pipe: splice|F_SETPIPE_SZ|Cannot create pipe for reading",
     "CRIU cannot grow its pipes (raise fs.pipe-max-size or grant CAP_SYS_RESOURCE)"),
    ("page_server", r"page-xfer|page server|Lazy pages transfer FAILED|uffd:",
     "the page server / lazy-pages connection failed"),
    ("missing_file", r"Can't open file .* on restore|Can't fixup VMA's fd|No such file or directory",
     "a file the process had open is not there (rootfs or mounts differ from the dump)"),
    ("pid_conflict", r"Can't fork for \d+|PID .* is busy|File exists",
     "a process id or object of the checkpoint is taken on this host"),
    ("network", r"net: |netns|Can't restore .*socket|inet: ",
     "network state could not be dumped or restored"),
    ("mounts", r"mnt: |mnt-v2|mount point|Can't mount",
     "a mount of the container could not be dumped or restored"),
    ("cgroup", r"cg: |cgroup",
     "cgroup state could not be dumped or restored"),
    ("permission", r"Operation not permitted|Permission denied",
     "the kernel refused an operation (missing privilege or seccomp/LSM)"),
    ("process_gone", r"No such process|Can't attach to|seize",
     "a process exited or could not be seized during the dump"),
)
_ERROR_RE = re.compile(r"\bError\b|\bFAILED\b")
# CRIU's own error lines: "(00.123456) Error (criu/x.c:12): ..." (restore: "     1: Error (").
_CRIU_ERROR_RE = re.compile(r"^\s*\(\s*\d+\.\d+\)\s+(?:\d+:\s+)?Error\s+\(")


# ---------------------------------------------------------------- discovery

def discover(path=None, probe=True, cache_dir=None):
    """Facts about CRIU at ``path`` (PATH and sbin searched when None): ``Criu.facts``.
    Raises MissingToolError when CRIU is absent."""
    return Criu(path, cache_dir).facts(probe)


def require(path=None, cache_dir=None):
    """{path, version} of a CRIU that passes ``criu check``: ``Criu.require``."""
    return Criu(path, cache_dir).require()


# ---------------------------------------------------------------- protobuf / stats

def _varint(buf, pos):
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint at offset %d" % pos)
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long at offset %d" % pos)


def decode_message(buf):
    """A protobuf message as {field number: value}; length-delimited values are bytes."""
    fields, pos = {}, 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise ValueError("truncated fixed64 field %d" % number)
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated field %d (%d bytes)" % (number, length))
            value, pos = bytes(buf[pos:pos + length]), pos + length
        elif wire == 5:
            if pos + 4 > len(buf):
                raise ValueError("truncated fixed32 field %d" % number)
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise ValueError("unsupported wire type %d of field %d" % (wire, number))
        fields[number] = value
    return fields


def _named(raw, names):
    out = {}
    for number, value in raw.items():
        name = names.get(number)
        if name is None:
            continue
        out[name] = value
    return out


def decode_stats(data):
    """Bytes of a ``stats-dump``/``stats-restore`` image -> {dump: {...}} and/or {restore: {...}}.

    Times are converted to seconds (``*_time`` keys, float) next to the raw
    microseconds (``*_time_us``).
    """
    if len(data) < 12:
        raise ValueError("stats image too short (%d bytes)" % len(data))
    magic, kind, size = struct.unpack_from("<III", data, 0)
    if magic != IMG_SERVICE_MAGIC or kind != STATS_MAGIC:
        raise ValueError("not a CRIU stats image (magic %#x %#x)" % (magic, kind))
    if 12 + size > len(data):
        raise ValueError("stats entry truncated: %d bytes announced, %d present"
                         % (size, len(data) - 12))
    entry = decode_message(data[12:12 + size])
    out = {}
    for number, key, names in ((1, "dump", DUMP_FIELDS), (2, "restore", RESTORE_FIELDS)):
        if number in entry:
            section = _named(decode_message(entry[number]), names)
            for name in TIME_FIELDS:
                if name in section:
                    section[name + "_us"] = section[name]
                    section[name] = section[name] / 1e6
            out[key] = section
    return out


def read_stats(path):
    """Decoded stats image at ``path``, or None when absent or unreadable."""
    try:
        with open(path, "rb") as handle:
            return decode_stats(handle.read())
    except (OSError, ValueError):
        return None


def lazy_dump_stats(dump, window):
    """The ``dump`` section of a lazy dump's stats made true: CRIU writes it before the
    page server has served the memory, with the frozen timer never stopped (a value of
    the order of the uptime) and its counters never filled (zeros). Times longer than
    the frozen ``window`` we measured (seconds) and zeros (not measured, not "none")
    are dropped; ``frozen_time`` is that window."""
    out = {}
    for key, value in (dump or {}).items():
        base = key[:-3] if key.endswith("_us") else key
        if isinstance(value, (int, float)) and value == 0:
            continue
        if base in TIME_FIELDS and isinstance(value, (int, float)):
            seconds = value / 1e6 if key.endswith("_us") else value
            if seconds < 0 or seconds > window:
                continue
        out[key] = value
    out.update(frozen_time=round(window, 6), frozen_time_us=int(round(window * 1e6)),
               frozen_time_measured=True)
    return out


def work_stats(work_dir):
    """{dump: ..., restore: ...} of the stats images found in a CRIU work directory."""
    out = {}
    for leaf in ("stats-dump", "stats-restore"):
        stats = read_stats(os.path.join(work_dir, leaf))
        if stats:
            out.update(stats)
    return out


# ---------------------------------------------------------------- logs

def error_lines(text, limit=20):
    """CRIU log lines that report an error, without the known harmless ones.

    CRIU's own ``Error (file:line):`` lines when the log has any: the output of the
    tools CRIU runs (iptables, nft, ip) lands in the same log, and its "error" words
    are consequences or noise, never the cause."""
    lines, own = [], []
    for line in (text or "").splitlines():
        if not _ERROR_RE.search(line):
            continue
        if any(p.search(line) for p in BENIGN):
            continue
        lines.append(line.rstrip())
        if _CRIU_ERROR_RE.match(line):
            own.append(line.rstrip())
    lines = own or lines
    return lines[-limit:] if limit else lines


def classify(text, extra=""):
    """(cause, hint, lines) of a failed CRIU run from its log ``text``.

    The first error line is usually the cause (later ones are consequences), so
    ``lines[0]`` is what a message should quote.

    ``extra`` (the runtime's stderr) is searched too. ``cause`` is ``unknown``
    when no rule matches; ``lines`` are the error lines of the log (or its last
    lines when it has none).
    """
    lines = error_lines(text)
    extra_lines = [x for x in (extra or "").strip().splitlines() if x.strip()][-5:]
    for cause, pattern, hint in CAUSES:
        regex = re.compile(pattern)
        if any(regex.search(line) for line in lines + extra_lines):
            return cause, hint, lines or extra_lines
    if not lines:
        tail = [x for x in (text or "").strip().splitlines()
                if x.strip() and not any(p.search(x) for p in BENIGN)][-10:]
        return "unknown", "CRIU failed without an error line in its log", tail + extra_lines
    return "unknown", "CRIU failed; see the log lines", lines


def read_log(path, max_bytes=4 * 1024 * 1024):
    """Text of a CRIU log (its last ``max_bytes``), '' when absent."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def classify_work_dir(work_dir, leaf, extra=""):
    """classify() of ``<work_dir>/<leaf>`` (dump.log, restore.log, lazy-pages.log)."""
    return classify(read_log(os.path.join(work_dir, leaf)), extra)
