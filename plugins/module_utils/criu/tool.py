# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""CRIU as one object, like ``_runtime.Runtime``: the binary, its version, ``criu check``
and its feature verdicts, every probe through one cache (``_probecache``: in this process
and on disk under ``<run_dir>/cache``, keyed by the binary's path and stat and the kernel
release).

* ``criu_for(layout, path)``: the one way to build a ``Criu`` (its cache follows the
  layout's run directory).
* ``Criu.require()``: {path, version} of a CRIU that passes ``criu check`` (cheap).
* ``Criu.facts(probe)``: everything ``discover`` reports, feature verdicts included;
  ``Criu.host_features(base, probe)``: the verdicts plus what lazy migration needs of
  this process (CAP_SYS_RESOURCE, ``fs.pipe-max-size``).
"""

from __future__ import annotations

import ctypes
import os
import re

from ansible_collections.ctrhost.fleet.plugins.module_utils.core import cli as _cli
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import probecache as _probecache
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import procfs as _procfs
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import sysinfo as _sysinfo
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CommandError, MissingToolError

# Features probed with `criu check --feature NAME` (names as CRIU spells them).
FEATURES = ("uffd", "uffd-noncoop", "mem_dirty_track", "pidfd_store", "timens",
            "network_lock_nftables")
NFT_FEATURE = "network_lock_nftables"
# CRIU before 4.2 reads a ``network-lock`` line of the configuration file runc hands it
# (RPC mode, ``criu swrk``) with no command line to look at, and dies of a NULL
# dereference (SIGSEGV) before it has opened its log: runc then says only "read
# unixpacket @->@: EOF". Seen with 3.17.1 (Debian 12) and 4.1.1 (Debian 13), 4.0 not
# tried; 4.2.1 takes the line. The lock then stays CRIU's default (iptables), which is
# just as much a lock.
NFT_MIN_VERSION = (4, 2)
KDAT_FILE = "/run/criu.kdat"  # CRIU's kernel probe cache (its build's KDAT_RUNDIR)


def criu_for(layout, path=None):
    """The CRIU at ``path`` (PATH and sbin searched when None), probes cached under
    ``layout``'s run directory."""
    return Criu(path, _probecache.cache_dir_of(layout.run_dir))


LIBCRIU = "libcriu.so.2"  # what crun dlopen()s for every checkpoint and restore


def libcriu_loadable(name=LIBCRIU):
    """(True, None) when the dynamic loader finds ``name`` (CRIU's library, which a crun
    built with CRIU loads at each checkpoint and restore), else (False, the loader's
    message). Debian ships it apart (package libcriu2, only recommended by crun)."""
    try:
        ctypes.CDLL(name)
    except OSError as exc:
        return False, str(exc)
    return True, None


def version_tuple(text):
    parts = []
    for piece in (text or "").split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _output(result, lines=20):
    return _sysinfo.trim_output("\n".join(p for p in (result.stdout.strip(), result.stderr.strip())
                                          if p), lines)


class Criu:
    """One CRIU binary and its cached probes."""

    def __init__(self, path=None, cache_dir=None):
        self.path = path
        self.cache_dir = cache_dir or _probecache.cache_dir_of()
        self._binary = None

    @property
    def found(self):
        """The binary's absolute path, or None when there is none."""
        if self._binary is None:
            self._binary = _cli.which(self.path or "criu")
        return self._binary

    @property
    def binary(self):
        if not self.found:
            raise MissingToolError("criu: not found on this host (%s); install a CRIU that passes "
                                   "'criu check' (scripts/install-criu)"
                                   % (self.path or "searched PATH"), tool="criu")
        return self.found

    def _cached(self, kind, compute, keep=lambda value: True, what=None):
        """``compute()`` through the probe cache, in ``criu-<kind>-<binary>[-<what>].json``."""
        name = "criu-%s-%s" % (kind, _probecache.leaf(self.binary)) + ("-" + what if what else "")
        return _probecache.cached(self.cache_dir, name, _probecache.probe_key(self.binary),
                                  compute, keep=keep)

    # -- probes -----------------------------------------------------------
    @property
    def version(self):
        """``criu --version``'s version string (None when unknown; not stored)."""
        def compute():
            try:
                result = _cli.run([self.binary, "--version"], check=True, timeout=15)
            except (CommandError, MissingToolError):
                return None
            match = re.search(r"Version:\s*(\S+)", result.stdout)
            return match.group(1) if match else None
        return self._cached("version", compute, keep=lambda v: v is not None)

    def check(self):
        """(passed, trimmed output) of ``criu check``; only a pass is stored."""
        def compute():
            try:
                result = _cli.run([self.binary, "check"], check=False, timeout=120)
            except (CommandError, MissingToolError) as exc:
                return [False, exc.msg]
            return [result.rc == 0, _output(result)]
        value = self._cached("check", compute, keep=lambda v: bool(v[0]))
        return bool(value[0]), value[1]

    def feature(self, name):
        """(True/False, or None when this CRIU does not know it; message) of
        ``criu check --feature name``; a probe that could not run (timeout) is not stored."""
        failed = []

        def compute():
            try:
                result = _cli.run([self.binary, "check", "--feature", name], check=False,
                                  timeout=60)
            except (CommandError, MissingToolError) as exc:
                failed.append(exc)
                return [False, exc.msg]
            output = _output(result, 3)
            if result.rc == 0:
                return [True, output]
            return [None if "Unknown feature" in output else False, output]
        value = self._cached("feature", compute, keep=lambda v: not failed, what=name)
        return value[0], value[1]

    def nft_lock_usable(self):
        """Whether dumps may ask this CRIU for the nftables network lock in runc's
        configuration file (4.2 or newer: older ones report the feature but crash on
        the line, see ``NFT_MIN_VERSION``)."""
        if version_tuple(self.version) < NFT_MIN_VERSION:
            return False
        return bool(self.feature(NFT_FEATURE)[0])

    # -- what callers ask -------------------------------------------------
    def require(self):
        """{path, version} of a CRIU that passes ``criu check`` (no feature probes)."""
        passed, output = self.check()
        if not passed:
            raise MissingToolError("criu: %s (%s) fails 'criu check': %s"
                                   % (self.binary, self.version, output),
                                   tool="criu", criu=self.binary)
        return dict(path=self.binary, version=self.version)

    def host_features(self, base="/", probe=True):
        """Feature verdicts plus what lazy migration needs of this process."""
        checks = {name: self.feature(name)[0] for name in FEATURES}
        cap = _sysinfo.capability(_sysinfo.CAP_SYS_RESOURCE, base)
        max_size = _sysinfo.pipe_max_size(base)
        needed = _sysinfo.criu_pipe_bytes()
        probe_ok = _sysinfo.pipe_resize_probe(needed)[0] if probe else None
        usable, reason = _sysinfo.lazy_pages_verdict(checks["uffd"], checks["uffd-noncoop"], cap,
                                                     max_size, needed, probe_ok)
        features = {name.replace("-", "_"): value for name, value in checks.items()}
        features.update(
            lazy_pages=bool(checks["uffd"] and checks["uffd-noncoop"]),
            dirty_tracking=bool(checks["mem_dirty_track"]),
            pre_dump=bool(checks["mem_dirty_track"]),
            lazy_pages_usable=usable,
        )
        return dict(features=features, cap_sys_resource=cap, pipe_max_size=max_size,
                    pipe_size_needed=needed, lazy_pages_reason=reason)

    def kdat_cache(self, table=None):
        """(True, None) when CRIU can keep its kernel probe between runs, else (False, why).
        Run as root, CRIU saves what it learnt of the kernel in ``KDAT_FILE`` only when
        ``/run`` is a tmpfs (a reboot must drop it); elsewhere every CRIU run (each dump,
        restore, check) probes the kernel again, 30-40 ms here."""
        fstype = _procfs.fs_type(os.path.dirname(KDAT_FILE), table)
        if fstype == "tmpfs":
            return True, None
        return False, ("%s is on %s, not tmpfs: CRIU does not keep its kernel probe (%s) and "
                       "repeats it on every run" % (os.path.dirname(KDAT_FILE),
                                                    fstype or "an unknown file system", KDAT_FILE))

    def facts(self, probe=True):
        """{path, version, check, check_output, features, pre_dump, pre_dump_reason,
        lazy_pages, lazy_pages_reason, pipe_max_size, pipe_size_needed, cap_sys_resource}."""
        passed, output = self.check()
        feat = self.host_features(probe=probe)
        features = feat["features"]
        pre_dump = bool(features.get("mem_dirty_track"))
        return dict(
            path=self.binary, version=self.version, check=passed, check_output=output,
            features=features, pre_dump=pre_dump,
            pre_dump_reason=None if pre_dump else
            "the kernel does not track dirty memory (criu check --feature mem_dirty_track failed: "
            "no soft-dirty bits), so pre-dump iterations are impossible",
            lazy_pages=bool(features.get("lazy_pages_usable")),
            lazy_pages_reason=feat.get("lazy_pages_reason"),
            pipe_max_size=feat.get("pipe_max_size"), pipe_size_needed=feat.get("pipe_size_needed"),
            cap_sys_resource=feat.get("cap_sys_resource"),
        )
