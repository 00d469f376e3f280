"""Unit parsing: sizes (binary), cpus, tc rates, cpu sets."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.units import (
    format_cpuset,
    format_size,
    human_size,
    parse_cpus,
    parse_cpuset,
    parse_rate,
    parse_size,
)

K, M, G, T = 1024, 1024 ** 2, 1024 ** 3, 1024 ** 4


@pytest.mark.parametrize("text,expected", [
    ("512M", 512 * M), ("1G", G), ("1g", G), ("1.5GiB", 3 * G // 2), ("1.5G", 3 * G // 2),
    ("64k", 64 * K), ("64kb", 64 * K), ("64KiB", 64 * K), ("64KB", 64 * K), ("2T", 2 * T),
    ("100", 100), ("100b", 100), (" 8 M ", 8 * M), ("0.5K", 512), (4096, 4096), (0, 0),
    (2.0, 2),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "M", "1.5", "1X", "-1M", "1 GB B", "1iB", "0.1K", -5, 1.5,
                                 None, True, [1], "1e6", "1Gi"])
def test_parse_size_rejects(bad):
    with pytest.raises(ValidationError) as info:
        parse_size(bad, "limits.memory")
    assert info.value.field == "limits.memory"
    assert "limits.memory" in str(info.value)


def test_size_equivalences():
    assert parse_size("1G") == parse_size("1024M") == parse_size("1048576K") == G


@pytest.mark.parametrize("n,text", [(G, "1G"), (1536 * M, "1536M"), (1000, "1000"), (4 * K, "4K"),
                                    (3 * T, "3T"), (0, "0"), (-1, "-1")])
def test_format_size(n, text):
    assert format_size(n) == text


@given(st.integers(min_value=0, max_value=2 ** 50))
def test_format_size_round_trips(n):
    assert parse_size(format_size(n)) == n


def test_human_size():
    assert human_size(62 * M) == "62M"
    assert human_size(int(60.7 * M)) == "60.7M"
    assert human_size(100) == "100B"


@pytest.mark.parametrize("value,expected", [("1.5", 1.5), (1.5, 1.5), (2, 2.0), ("0.01", 0.01),
                                            ("0.333333", 0.33333)])
def test_parse_cpus(value, expected):
    assert parse_cpus(value) == expected


@pytest.mark.parametrize("bad", [0, "0", -1, "-0.5", "abc", "0.001", None, True, float("nan"),
                                 float("inf")])
def test_parse_cpus_rejects(bad):
    with pytest.raises(ValidationError) as info:
        parse_cpus(bad, "limits.cpus")
    assert info.value.field == "limits.cpus"


@pytest.mark.parametrize("text,bits", [
    ("100mbit", 100_000_000), ("10Mbit", 10_000_000), ("1gbit", 10 ** 9), ("500kbit", 500_000),
    ("1kbps", 8000), ("10mbps", 80_000_000), ("1kibit", 1024), ("1mibps", 8 * M), ("100", 100),
    ("100bit", 100), ("1.5mbit", 1_500_000), ("1tbit", 10 ** 12), (1000, 1000),
])
def test_parse_rate_tc_semantics(text, bits):
    assert parse_rate(text) == bits


@pytest.mark.parametrize("bad", ["", "fast", "10ibit", "0mbit", "-1mbit", 0, "10mb", None, 1.5])
def test_parse_rate_rejects(bad):
    with pytest.raises(ValidationError) as info:
        parse_rate(bad, "network[0].rate")
    assert info.value.field == "network[0].rate"


@pytest.mark.parametrize("text,items,canon", [
    ("0-1,3", [0, 1, 3], "0-1,3"), ("3,0,1", [0, 1, 3], "0-1,3"), ("0", [0], "0"),
    ("0-0", [0], "0"), ("1,1,2", [1, 2], "1-2"), ("0-3,2-5", list(range(6)), "0-5"),
    ([3, 1, 2], [1, 2, 3], "1-3"), (0, [0], "0"), ("0 - 1", [0, 1], "0-1"),
])
def test_parse_cpuset(text, items, canon):
    assert parse_cpuset(text) == (items, canon)


@pytest.mark.parametrize("bad", ["", "a", "1-", "3-1", "-1", "0,,1", [], [-1], None, "0-99999999"])
def test_parse_cpuset_rejects(bad):
    with pytest.raises(ValidationError):
        parse_cpuset(bad, "limits.cpuset_cpus")


@given(st.sets(st.integers(min_value=0, max_value=300), min_size=1))
def test_cpuset_canonical_round_trip(items):
    canon = format_cpuset(items)
    assert parse_cpuset(canon) == (sorted(items), canon)
