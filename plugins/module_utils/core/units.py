# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sizes, cpus, rates and cpu sets: parse and normalise.

Conventions (documented for users in the modules):

* Sizes are binary: ``K``/``KB``/``KiB`` = 1024 bytes, ``M`` = 1024 K, ``G``, ``T``
  likewise; case does not matter and the trailing ``B`` is optional, so
  ``1G == 1024M == 1073741824``. A plain integer is a number of bytes.
* Rates follow tc(8): ``bit`` (or a bare number) is bits per second, ``kbit`` =
  1000 bit/s, ``mbit`` = 10^6, ``gbit`` = 10^9, ``tbit`` = 10^12; ``kibit`` etc. are
  binary (1024). ``bps`` is *bytes* per second: ``kbps`` = 1000 bytes/s = 8000 bit/s,
  ``mbps``, ``gbps``, ``tbps`` likewise (``kibps``... binary). Results are bit/s.
* cpus is a positive decimal number of cpus (``1.5``); normalised to the 1/100000
  precision of a CFS quota over the 100000 us period.
* A cpu set is a list such as ``0-1,3``; normalised to a sorted list and its canonical
  string (``0-1,3``).
"""

from __future__ import annotations

import re

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError

_SIZE_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)

_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([kmgt]?)(i?)(bit|bps)?\s*$", re.IGNORECASE)
_RATE_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}

CPU_PERIOD = 100000  # us: the CFS period used for every quota


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_size(value, field="size"):
    """``'512M'``, ``'1G'``, ``'1.5GiB'``, ``'64k'`` or an int of bytes -> int bytes."""
    if _is_number(value):
        if value < 0 or value != value:  # negative or NaN
            raise ValidationError(field, "expected a size >= 0, got %r" % (value,))
        if isinstance(value, float) and not value.is_integer():
            raise ValidationError(field, "a size in bytes must be a whole number, got %r" % (value,))
        return int(value)
    if not isinstance(value, str):
        raise ValidationError(field, "expected a size such as 512M or 1G, got %r" % (value,))
    match = _SIZE_RE.match(value)
    if not match or (match.group(3) and match.group(3).lower() == "i"):
        raise ValidationError(
            field, "expected a size such as 512M, 1G, 1.5GiB or a number of bytes, got %r" % value)
    number, unit, suffix = match.groups()
    if suffix.lower() == "ib" and not unit:
        raise ValidationError(field, "%r: 'iB' needs a unit letter (K, M, G, T)" % value)
    multiplier = 1024 ** _SIZE_UNITS[unit.lower()]
    if "." in number:
        # exact decimal arithmetic: '1.5G' -> 3 * 512M
        whole, frac = number.split(".")
        scaled = int(whole or "0") * multiplier + int(frac) * multiplier // (10 ** len(frac))
        if int(frac) * multiplier % (10 ** len(frac)):
            raise ValidationError(field, "%r is not a whole number of bytes" % value)
        return scaled
    return int(number) * multiplier


def format_size(nbytes):
    """Shortest exact binary form: 1073741824 -> '1G', 1536 MiB -> '1536M', 1000 -> '1000'."""
    nbytes = int(nbytes)
    if nbytes < 0:
        return str(nbytes)
    for letter, power in (("T", 4), ("G", 3), ("M", 2), ("K", 1)):
        unit = 1024 ** power
        if nbytes and nbytes % unit == 0:
            return "%d%s" % (nbytes // unit, letter)
    return str(nbytes)


def human_size(nbytes):
    """For messages: 65011712 -> '62M', 63626240 -> '60.7M'."""
    nbytes = int(nbytes)
    for letter, power in (("T", 4), ("G", 3), ("M", 2), ("K", 1)):
        unit = 1024 ** power
        if abs(nbytes) >= unit:
            text = "%.1f" % (nbytes / unit)
            return (text[:-2] if text.endswith(".0") else text) + letter
    return "%dB" % nbytes


def parse_cpus(value, field="cpus"):
    """``'1.5'`` or ``1.5`` -> 1.5 (positive, at the precision of a quota over 100000 us)."""
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValidationError(field, "expected a number of cpus such as 1.5, got %r" % value)
    elif _is_number(value):
        number = float(value)
    else:
        raise ValidationError(field, "expected a number of cpus such as 1.5, got %r" % (value,))
    if not number > 0 or number == float("inf"):
        raise ValidationError(field, "expected a number of cpus > 0, got %r" % (value,))
    quota = round(number * CPU_PERIOD)
    if quota < 1000:
        raise ValidationError(field, "expected at least 0.01 cpus (a 1 ms quota), got %r" % (value,))
    return quota / CPU_PERIOD


def cpus_to_quota(cpus):
    return int(round(cpus * CPU_PERIOD))


def parse_rate(value, field="rate"):
    """tc-style rate -> bits per second: '100mbit' -> 100000000, '1kbps' -> 8000."""
    if _is_number(value):
        if value <= 0 or (isinstance(value, float) and not value.is_integer()):
            raise ValidationError(field, "expected a rate > 0 in bit/s, got %r" % (value,))
        return int(value)
    if not isinstance(value, str):
        raise ValidationError(field, "expected a rate such as 100mbit, got %r" % (value,))
    match = _RATE_RE.match(value)
    if not match or (match.group(3) and not match.group(2)):
        raise ValidationError(
            field, "expected a rate such as 500kbit, 100mbit, 1gbit or 10mbps (tc units), got %r"
            % value)
    number, prefix, binary, kind = match.groups()
    base = 1024 if binary else 1000
    scale = base ** _RATE_POWER[prefix.lower()] * (8 if (kind or "").lower() == "bps" else 1)
    if "." in number:
        whole, frac = number.split(".")
        bits = int(whole or "0") * scale + int(frac) * scale // (10 ** len(frac))
    else:
        bits = int(number) * scale
    if bits <= 0:
        raise ValidationError(field, "expected a rate > 0, got %r" % value)
    return bits


def parse_cpuset(value, field="cpuset"):
    """``'0-1,3'`` (or a list of ints) -> (sorted list of ints, canonical string)."""
    if _is_number(value) and not isinstance(value, float):
        value = str(value)
    if isinstance(value, (list, tuple)):
        items = set()
        for item in value:
            if not isinstance(item, int) or isinstance(item, bool) or item < 0:
                raise ValidationError(field, "expected cpu numbers >= 0, got %r" % (item,))
            items.add(item)
        if not items:
            raise ValidationError(field, "expected at least one cpu")
        ordered = sorted(items)
        return ordered, format_cpuset(ordered)
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "expected a cpu list such as 0-1,3, got %r" % (value,))
    items = set()
    for part in value.replace(" ", "").split(","):
        match = re.match(r"^(\d+)(?:-(\d+))?$", part)
        if not match:
            raise ValidationError(field, "expected a cpu list such as 0-1,3, got %r" % value)
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low:
            raise ValidationError(field, "range %r goes backwards in %r" % (part, value))
        if high - low > 65536:
            raise ValidationError(field, "range %r is absurdly large" % part)
        items.update(range(low, high + 1))
    ordered = sorted(items)
    return ordered, format_cpuset(ordered)


def format_cpuset(items):
    """[0, 1, 3] -> '0-1,3'."""
    parts = []
    items = sorted(set(items))
    start = prev = None
    for item in items:
        if start is None:
            start = prev = item
        elif item == prev + 1:
            prev = item
        else:
            parts.append(str(start) if start == prev else "%d-%d" % (start, prev))
            start = prev = item
    if start is not None:
        parts.append(str(start) if start == prev else "%d-%d" % (start, prev))
    return ",".join(parts)
