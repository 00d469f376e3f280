# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Several migrations from this host at once (``container_migrate_batch``).

Every move is one ``_migrate.migrate`` call, unchanged, with its own guarantee
(whatever fails, that container runs on exactly one host with its data); the
moves run in a pool of threads of this one process, so that a drain pays
Ansible's per-task cost once, not once per container.

Admission (``Gate``): a move starts when fewer than ``parallel`` moves run,
fewer than ``per_dest`` go to its destination, and the memory of the moves in
flight plus its own stays within ``memory_in_flight`` (a move alone is always
admitted, so one big container cannot block the drain). The queue is scanned in
order, so a move to a busy destination does not hold back one to an idle host.

The frozen windows are bounded apart (``frozen``): a move waits after its rootfs
pre-copy (step ``presync``, its container still running) until fewer than
``frozen`` moves are between that step and their restore, so that the moves'
expensive but harmless parts (SSH, the agent, preflight, pre-copy) overlap while
few frozen windows compete with each other for the cpus (the other moves' early
parts still do: on a loaded host the downtimes grow with ``parallel``).

A move that fails does not disturb the others: its result says where its
container runs, and the others go on. With ``fallback_cold`` a failed live or
lazy move whose container still runs here is tried once more cold. A move not
yet started at ``deadline`` (epoch seconds) is either left here (``skip``:
reported with ``late``) or made cold (``cold``).

Thread safety of what a migration touches: each move holds its container's
flock (``ContainerStore.lock``), its own SSH ControlMaster in its own
directory (``_migrate_ssh.Link``), its own CRIU image directory
(``checkpoints/<name>/.<id>``) and its own agent on the destination. Shared:
the CRIU config file (written under a directory flock), the probe caches
(written with per-thread temp names) and the libnftables context (behind a
lock in ``_nftables``).
"""

from __future__ import annotations

import threading
import time

from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import source as _migrate
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CtrhostError, NotFoundError, ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.store import ContainerStore
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.units import parse_size
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.validate import validate_name

DEFAULT_PARALLEL = 4
DEFAULT_PER_DEST = 2
DEFAULT_FROZEN = 2
# Steps of _migrate.migrate around its frozen window (Run.step calls the hooks).
WINDOW_OPEN = "presync"
WINDOW_CLOSED = ("restored", "running", "fenced")
AFTER_DEADLINE = ("skip", "cold")


class BatchError(CtrhostError):
    """Some moves of a batch failed; ``results`` has every move's result."""


class Window:
    """At most ``size`` moves at once between ``WINDOW_OPEN`` and ``WINDOW_CLOSED``."""

    def __init__(self, size):
        self.sem = threading.BoundedSemaphore(size)

    def hooks(self, extra=None):
        """Step hooks of one move (``extra``: the caller's, run first) and a ``release``
        to call when the move ends however it ends."""
        held = []
        lock = threading.Lock()

        def release(_run=None):
            with lock:
                if held:
                    held.pop()
                    self.sem.release()

        def enter(run):
            self.sem.acquire()
            with lock:
                held.append(True)

        out = dict(extra or {})
        mine = {WINDOW_OPEN: enter}
        mine.update({step: release for step in WINDOW_CLOSED})
        for step, func in mine.items():
            out[step] = _chain(out.get(step), func)
        return out, release


def _chain(first, then):
    if first is None:
        return then

    def both(run):
        try:
            first(run)
        finally:
            then(run)
    return both


class Gate:
    """Admission of moves: a count in all, a count per destination, memory in flight."""

    def __init__(self, parallel, per_dest, memory_in_flight=None):
        self.parallel, self.per_dest, self.memory = parallel, per_dest, memory_in_flight
        self.running, self.by_dest, self.in_flight = 0, {}, 0
        self.peak, self.peak_memory = 0, 0

    def fits(self, move):
        if self.running >= self.parallel or self.by_dest.get(move["dest"], 0) >= self.per_dest:
            return False
        return self.memory is None or self.running == 0 or \
            self.in_flight + move["memory"] <= self.memory

    def take(self, move):
        self.running += 1
        self.by_dest[move["dest"]] = self.by_dest.get(move["dest"], 0) + 1
        self.in_flight += move["memory"]
        self.peak = max(self.peak, self.running)
        self.peak_memory = max(self.peak_memory, self.in_flight)

    def give(self, move):
        self.running -= 1
        self.by_dest[move["dest"]] -= 1
        self.in_flight -= move["memory"]


def _positive(value, field):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(field, "expected an integer >= 1, got %r" % (value,))
    return value


def validate(moves, mode, parallel, per_dest, memory_in_flight, after_deadline, frozen=DEFAULT_FROZEN):
    """The moves normalised ({name, dest, mode, dest_python}); raises naming ``moves[i].field``."""
    if mode not in _migrate.MODES:
        raise ValidationError("mode", "expected one of %s, got %r" % (", ".join(_migrate.MODES), mode))
    _positive(parallel, "parallel")
    _positive(per_dest, "per_dest")
    _positive(frozen, "frozen")
    if memory_in_flight is not None:
        memory_in_flight = parse_size(memory_in_flight, "memory_in_flight")
    if after_deadline not in AFTER_DEADLINE:
        raise ValidationError("after_deadline", "expected skip or cold, got %r" % (after_deadline,))
    if not isinstance(moves, list):
        raise ValidationError("moves", "expected a list of {name, dest}, got %r" % (moves,))
    out, seen = [], {}
    for index, item in enumerate(moves):
        where = "moves[%d]" % index
        if not isinstance(item, dict):
            raise ValidationError(where, "expected a mapping with name and dest, got %r" % (item,))
        unknown = sorted(set(item) - {"name", "dest", "mode", "dest_python"})
        if unknown:
            raise ValidationError(where, "unknown key(s) %s; expected name, dest, mode, dest_python"
                                  % ", ".join(unknown))
        name = item.get("name")
        validate_name(name, where + ".name")
        dest = item.get("dest")
        if not isinstance(dest, str) or not dest:
            raise ValidationError(where + ".dest", "expected the destination host name or address, got %r"
                                  % (dest,))
        each = item.get("mode") or mode
        if each not in _migrate.MODES:
            raise ValidationError(where + ".mode", "expected one of %s, got %r"
                                  % (", ".join(_migrate.MODES), each))
        if name in seen:
            raise ValidationError(where + ".name", "container %s is listed twice (also in moves[%d])"
                                  % (name, seen[name]))
        seen[name] = index
        out.append(dict(name=name, dest=dest, mode=each, dest_python=item.get("dest_python")))
    return out, memory_in_flight


def run_moves(moves, move_one, parallel=DEFAULT_PARALLEL, per_dest=DEFAULT_PER_DEST,
              memory_in_flight=None, deadline=None, after_deadline="skip", clock=time.time):
    """Run ``move_one(move, mode)`` for every move within the gate; results in input order.

    ``move_one`` returns a result dict or raises; a raise becomes that move's failure
    (``failed``, ``msg``, ``where``) and the others go on. Returns (results, gate)."""
    gate = Gate(parallel, per_dest, memory_in_flight)
    cond = threading.Condition()
    results = [None] * len(moves)
    pending = list(range(len(moves)))
    threads = []

    def work(index, mode, late):
        move = moves[index]
        try:
            res = move_one(move, mode)
        except Exception as exc:  # one move's failure is its result
            res = failure(move, exc)
        if late:
            res = dict(res, late=True)
        with cond:
            results[index] = res
            gate.give(move)
            cond.notify_all()

    with cond:
        while pending:
            index = next((i for i in pending if gate.fits(moves[i])), None)
            if index is None:
                cond.wait()
                continue
            pending.remove(index)
            move, late = moves[index], deadline is not None and clock() > deadline
            if late and after_deadline == "skip":
                results[index] = _skipped(move)
                continue
            gate.take(move)
            thread = threading.Thread(target=work, args=(index, "cold" if late else move["mode"], late),
                                      name="migrate-%s" % move["name"], daemon=True)
            threads.append(thread)
            thread.start()
    for thread in threads:
        thread.join()
    return results, gate


def _skipped(move):
    return dict(name=move["name"], dest=move["dest"], changed=False, skipped=True, late=True,
                where="source", msg="%s: not started, the deadline had passed" % move["name"])


def failure(move, exc):
    """A failed move's result: where its container runs now (``absent`` when it is neither
    here nor on its destination: removed meanwhile), and why."""
    details = dict(getattr(exc, "details", None) or {})
    msg = getattr(exc, "msg", None) or "unexpected error: %s" % exc
    details.pop("msg", None)
    return dict(details, name=move["name"], dest=move["dest"], failed=True, msg=msg,
                changed=bool(details.get("changed", False)),
                where=details.get("where", "absent" if isinstance(exc, NotFoundError) else "source"))


def migrate_batch(root, moves, mode="cold", parallel=DEFAULT_PARALLEL, per_dest=DEFAULT_PER_DEST,
                  frozen=DEFAULT_FROZEN, memory_in_flight=None, deadline=None, after_deadline="skip", fallback_cold=True,
                  check_mode=False, hooks=None, clock=time.time, **common):
    """Move every container of ``moves`` to its ``dest``; return the module result.

    ``common``: the ``_migrate.migrate`` options shared by every move (dest_root,
    ssh_config, identity, ssh_port, ssh_user, tcp_established, file_locks, ext_unix_sk,
    timeout, runtime_path, criu_path, precopy). ``hooks``: {name: hooks} for one move's steps."""
    layout = Layout(root)
    moves, memory_in_flight = validate(moves, mode, parallel, per_dest, memory_in_flight, after_deadline, frozen)
    if deadline is not None and (isinstance(deadline, bool) or not isinstance(deadline, (int, float))):
        raise ValidationError("deadline", "expected epoch seconds, got %r" % (deadline,))
    store = ContainerStore(layout)
    for move in moves:
        move["memory"] = _migrate.memory_needed(store.load(move["name"]) or {})
    t0 = time.monotonic()
    mover = Mover(root, Window(frozen), hooks, fallback_cold, check_mode, common)
    results, gate = run_moves(moves, mover.move, parallel, per_dest, memory_in_flight, deadline,
                              after_deadline, clock)
    out = _summary(results, gate, t0)
    if out["failed_moves"]:
        raise BatchError("%d of %d move(s) failed: %s" % (
            len(out["failed_moves"]), len(results),
            "; ".join(r["msg"] for r in results if r.get("failed"))), **out)
    return out


class Mover:
    """One move of the batch: ``_migrate.migrate`` within the frozen-window bound, tried
    once more cold (``fallback_cold``) when a live or lazy move left it on the source."""

    def __init__(self, root, window, hooks, fallback_cold, check_mode, common):
        self.root, self.window, self.hooks = root, window, hooks or {}
        self.fallback_cold, self.check_mode, self.common = fallback_cold, check_mode, common

    def move(self, move, mode):
        try:
            return self._migrate(move, mode)
        except CtrhostError as exc:
            first = failure(move, exc)
            if not self.fallback_cold or mode == "cold" or self.check_mode or \
                    not str(first["where"]).startswith("source"):
                raise
        res = self._migrate(move, "cold")
        return dict(res, first_error=first["msg"], fallback=(res.get("fallback") or
                                                             "%s failed, moved cold" % mode))

    def _migrate(self, move, mode):
        steps, release = self.window.hooks(self.hooks.get(move["name"]))
        try:
            return _migrate.migrate(self.root, move["name"], move["dest"], mode=mode,
                                    dest_python=move["dest_python"] or self.common.get("dest_python"),
                                    check_mode=self.check_mode, hooks=steps,
                                    **{k: v for k, v in self.common.items() if k != "dest_python"})
        finally:
            release()


def _summary(results, gate, t0):
    downtimes = [r["downtime"] for r in results if r.get("downtime") is not None]
    return dict(changed=any(r.get("changed") for r in results), results=results,
                moved=[r["name"] for r in results if r.get("changed") and not r.get("failed")
                       and r.get("where") == r.get("dest")],
                already_moved=[r["name"] for r in results if r.get("already_moved")],
                late=[r["name"] for r in results if r.get("skipped")],
                failed_moves=[r["name"] for r in results if r.get("failed")],
                wall_time=round(time.monotonic() - t0, 3),
                max_downtime=max(downtimes) if downtimes else None,
                peak_parallel=gate.peak, peak_memory_in_flight=gate.peak_memory)


def task(params, check_mode=False):
    """The ``container_migrate_batch`` module's entry: its options are ``migrate_batch``'s
    keywords (the shared ones go on to every move)."""
    return migrate_batch(check_mode=check_mode, **params)
