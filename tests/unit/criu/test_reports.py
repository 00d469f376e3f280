"""CRIU stats images and log classification (_criu), on files and lines CRIU 4.2.1 wrote."""

import json
import os
import shutil
import struct
import subprocess

import pytest

from ansible_collections.ctrhost.fleet.plugins.module_utils.criu import reports as _criu

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "criu")


def _read(name):
    with open(os.path.join(DATA, name), "rb") as handle:
        return handle.read()


# -- stats images (captured from runc checkpoint/restore of a busybox container) ----------
def test_dump_stats_of_a_real_image():
    stats = _criu.decode_stats(_read("stats-dump"))
    dump = stats["dump"]
    assert "restore" not in stats
    # values as `crit show stats-dump` decodes them
    assert dump["frozen_time_us"] == 79132
    assert dump["frozen_time"] == pytest.approx(0.079132)
    assert dump["freezing_time_us"] == 101435
    assert dump["memdump_time_us"] == 947
    assert dump["memwrite_time_us"] == 166
    assert dump["pages_scanned"] == 47
    assert dump["pages_written"] == 33
    assert dump["pages_lazy"] == 0
    assert dump["page_pipes"] == 8


def test_restore_stats_of_a_real_image():
    restore = _criu.decode_stats(_read("stats-restore"))["restore"]
    assert restore["pages_compared"] == 9
    assert restore["pages_skipped_cow"] == 2
    assert restore["forking_time_us"] == 496
    assert restore["restore_time_us"] == 155731
    assert restore["restore_time"] == pytest.approx(0.155731)
    assert restore["pages_restored"] == 31


def test_lazy_dump_stats_carry_no_written_pages():
    dump = _criu.decode_stats(_read("stats-dump-lazy"))["dump"]
    assert dump["pages_written"] == 0
    assert dump["frozen_time_us"] == 713537486  # five-byte varint


@pytest.mark.skipif(not shutil.which("crit"), reason="needs CRIU's crit")
@pytest.mark.parametrize("name", ["stats-dump", "stats-restore", "stats-dump-lazy"])
def test_decoding_matches_crit(name):
    """CRIU's own decoder (crit, protobuf-generated) as the independent path."""
    proc = subprocess.run(["crit", "show", os.path.join(DATA, name)], capture_output=True, text=True,
                          check=True)
    entry = json.loads(proc.stdout)["entries"][0]
    ours = _criu.decode_stats(_read(name))
    for section, fields in entry.items():
        raw = {k: v for k, v in ours[section].items() if k.endswith("_us") or k not in _criu.TIME_FIELDS}
        raw = {k[:-3] if k.endswith("_us") else k: v for k, v in raw.items()}
        assert raw == fields


def test_read_stats_of_a_work_dir(tmp_path):
    (tmp_path / "stats-dump").write_bytes(_read("stats-dump"))
    (tmp_path / "stats-restore").write_bytes(_read("stats-restore"))
    both = _criu.work_stats(str(tmp_path))
    assert set(both) == {"dump", "restore"}
    assert _criu.read_stats(str(tmp_path / "missing")) is None


def _image(payload, magic=_criu.IMG_SERVICE_MAGIC, kind=_criu.STATS_MAGIC, size=None):
    return struct.pack("<III", magic, kind, len(payload) if size is None else size) + payload


def test_varint_field_numbers_above_15_and_large_values():
    # dump { frozen_time(2) = 300, pages_written(7) = 2**40 }: multi-byte varints
    inner = bytes([0x10, 0xAC, 0x02, 0x38]) + bytes([0x80, 0x80, 0x80, 0x80, 0x80, 0x20])
    stats = _criu.decode_stats(_image(bytes([0x0A, len(inner)]) + inner))
    assert stats["dump"]["frozen_time_us"] == 300
    assert stats["dump"]["pages_written"] == 2 ** 40


def test_unknown_fields_are_skipped():
    inner = bytes([0x10, 0x05]) + bytes([0xF8, 0x07, 0x01]) + bytes([0x82, 0x08, 0x02, 0x61, 0x62])
    dump = _criu.decode_stats(_image(bytes([0x0A, len(inner)]) + inner))["dump"]
    assert dump == {"frozen_time": 5e-6, "frozen_time_us": 5}


@pytest.mark.parametrize("data, needle", [
    (b"\x00" * 4, "too short"),
    (struct.pack("<III", 0x54564319, _criu.STATS_MAGIC, 0), "not a CRIU stats image"),
    (_image(b"\x0a\x05\x10", size=3), "truncated"),
    (_image(b"\x0a\x05\x10\x01"), "truncated"),
    (_image(b"\x0a\x02\x10\x80"), "truncated varint"),
    (_image(b"\x0b"), "unsupported wire type"),
])
def test_damaged_images_are_refused(data, needle):
    with pytest.raises(ValueError, match=needle):
        _criu.decode_stats(data)


# -- log classification (lines as CRIU 4.2.1 printed them on this kind of host) ---------------
RLIMIT = "(00.034704) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted"
STDIO = ("(00.185624) Error (criu/files-reg.c:1790): Can't lookup mount=27 for fd=1 "
         "path=/var/lib/ctrhost/containers/web1/console.log")
LAZY = ["(00.457436) Error (criu/page-pipe.c:424): page-pipe: splice: -1: Bad file descriptor",
        "(00.458409) Error (criu/cr-dump.c:1883): Lazy pages transfer FAILED.",
        "(00.458459) Error (criu/cr-dump.c:1975): Dumping FAILED."]
MISSING = ["(00.090729)      1: Error (criu/files-reg.c:2353): Can't open file bin/busybox on restore: "
           "No such file or directory",
           "(00.090734)      1: Error (criu/mem.c:948): Can't fixup VMA's fd",
           "(00.093048) Error (criu/cr-restore.c:2331): Restoring FAILED."]


def _log(*lines):
    return "\n".join(["(00.000000) Version: 4.2.1 (gitid 0)", "(00.000146) net: Dumping netns links"]
                     + list(lines) + ["(00.2) Unfreezing tasks into 1"])


@pytest.mark.parametrize("lines, cause", [
    ([RLIMIT, STDIO, "(00.18) Error (criu/cr-dump.c:1545): Dump files (pid: 27625) failed with -1",
      "(00.23) Error (criu/cr-dump.c:1975): Dumping FAILED."], "external_stdio"),
    ([RLIMIT] + LAZY, "pipe_size"),
    ([RLIMIT] + MISSING, "missing_file"),
    (["(00.1) Error (criu/sk-inet.c:200): Connected TCP socket, consider using --tcp-established option.",
      "(00.2) Error (criu/cr-dump.c:1975): Dumping FAILED."], "tcp_established"),
    (["(00.1) Error (criu/file-lock.c:110): Some file locks are hold by dumping tasks! You can try "
      "--file-locks to dump them."], "file_locks"),
    (["(00.1) Error (criu/sk-unix.c:874): External socket is used. Consider using --ext-unix-sk option."],
     "ext_unix_sk"),
    (["(00.1) Error (criu/image.c:563): Magic doesn't match for /x/pages-1.img",
      "(00.2) Error (criu/cr-restore.c:2331): Restoring FAILED."], "image_corrupt"),
    (["(00.1) Error (criu/image.c:845): Can't write img file: No space left on device"], "no_space"),
    (["(00.333482) Error (criu/page-xfer.c:1660): page-xfer: Remote side closed connection"],
     "page_server"),
])
def test_classify_real_lines(lines, cause):
    found, hint, reported = _criu.classify(_log(*lines))
    assert found == cause
    assert hint
    assert RLIMIT not in reported  # the harmless line of every run without CAP_SYS_RESOURCE is never reported
    assert reported and all("Error" in line or "FAILED" in line for line in reported)


def test_first_error_line_is_the_cause_line():
    _cause, _hint, lines = _criu.classify(_log(RLIMIT, *MISSING))
    assert "Can't open file bin/busybox" in lines[0]


def test_only_benign_errors_is_unknown_with_the_log_tail():
    cause, _hint, lines = _criu.classify(_log(RLIMIT), extra='level=error msg="criu failed: type NOTIFY"')
    assert cause == "unknown"
    assert lines[-1].endswith('type NOTIFY"')
    assert RLIMIT not in lines


def test_runtime_stderr_is_searched_too():
    cause, _hint, _lines = _criu.classify("", extra="Error (criu/image.c:887): Unexpected EOF")
    assert cause == "image_corrupt"


def test_classify_work_dir_reads_the_log(tmp_path):
    (tmp_path / "restore.log").write_text(_log(*MISSING))
    assert _criu.classify_work_dir(str(tmp_path), "restore.log")[0] == "missing_file"
    assert _criu.classify_work_dir(str(tmp_path), "dump.log")[0] == "unknown"


def test_error_lines_limit():
    lines = ["(0.%d) Error (x.c:1): thing %d" % (i, i) for i in range(30)]
    assert len(_criu.error_lines("\n".join(lines))) == 20
    assert _criu.error_lines("\n".join(lines), limit=None)[0].endswith("thing 0")


def test_criu_own_error_lines_win_over_firewall_noise():
    text = _log(
        "(00.05) Running iptables-restore -w for iptables-restore -w",
        "iptables-restore: line 3 failed: Error: chain CRIU does not exist",
        "nft: Error: Could not process rule: No such file or directory",
        "(00.09) 1: Error (criu/files-reg.c:2213): Can't open file etc/x on restore: No such file",
        "(00.10) Error (criu/cr-restore.c:2331): Restoring FAILED.")
    cause, _hint, lines = _criu.classify(text)
    assert cause == "missing_file"
    assert "Can't open file etc/x" in lines[0]
    assert not [x for x in lines if "iptables" in x or x.startswith("nft")]


def test_lazy_dump_stats_drop_the_never_stopped_timer():
    raw = dict(freezing_time=0.002, freezing_time_us=2000, frozen_time=4164.2,
               frozen_time_us=4164200000, memdump_time=0.01, memdump_time_us=10000,
               pages_scanned=9000, pages_written=0, pages_lazy=8800, page_pipes=0)
    fixed = _criu.lazy_dump_stats(raw, 0.42)
    assert fixed["frozen_time"] == 0.42 and fixed["frozen_time_us"] == 420000
    assert fixed["frozen_time_measured"] is True
    assert fixed["freezing_time"] == 0.002 and fixed["memdump_time_us"] == 10000
    assert fixed["pages_lazy"] == 8800 and fixed["pages_scanned"] == 9000
    assert "pages_written" not in fixed and "page_pipes" not in fixed  # never filled in
    assert _criu.lazy_dump_stats(None, 1.0)["frozen_time"] == 1.0
