# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host state machine kept in ``<root>/host.json``.

``host.json``::

    {"state": "draining", "reason": "kernel upgrade", "since": "2024-05-01T10:00:00Z",
     "history": [{"from": "active", "to": "draining", "reason": "...", "at": "..."}],
     "progress": {...}}

``history`` keeps the last ``HISTORY_LENGTH`` transitions. ``progress`` is free-form data a
workflow records so that a rerun can resume (the evacuate role keeps its placement and the
containers already moved there). A host without the file is ``active``.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import fcntl
import json
import os

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ConflictError, ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.atomic import atomic_write_json

HOST_STATES = ("active", "cordoned", "draining", "drained", "upgrading")
DEFAULT_HOST_STATE = "active"
HISTORY_LENGTH = 20

# Allowed transitions (a state to itself is never a transition, only a reason/progress update).
# Placement only ever chooses `active` hosts; every other state is some form of cordon.
TRANSITIONS = {
    "active": ("cordoned", "draining"),
    "cordoned": ("active", "draining"),
    "draining": ("drained", "cordoned", "active"),
    "drained": ("upgrading", "draining", "cordoned", "active"),
    "upgrading": ("active", "cordoned", "draining", "drained"),
}


def host_state(layout):
    """(state, contents of host.json); ``active`` when the file is absent."""
    path = layout.host_state_file
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return DEFAULT_HOST_STATE, {}
    except (OSError, ValueError) as exc:
        raise ValidationError(path, "expected a JSON object with a 'state' key (%s)" % exc)
    state = data.get("state") if isinstance(data, dict) else None
    if state not in HOST_STATES:
        raise ValidationError("%s: state" % path, "expected one of %s, got %r" % (", ".join(HOST_STATES), state))
    return state, data


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read(layout):
    """The normalised content of host.json (an absent file is an ``active`` host)."""
    state, data = host_state(layout)
    data = dict(data or {})
    data["state"] = state
    data.setdefault("reason", None)
    data.setdefault("since", None)
    history = data.get("history")
    data["history"] = list(history) if isinstance(history, list) else []
    progress = data.get("progress")
    data["progress"] = dict(progress) if isinstance(progress, dict) else {}
    return data


def merge(base, update):
    """Deep merge of mappings: ``update`` wins; a None value deletes the key."""
    result = copy.deepcopy(base)
    for key, value in update.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def validate(state=None, reason=None, progress=None, progress_update=None):
    if state is not None and state not in HOST_STATES:
        raise ValidationError("state", "expected one of %s, got %r" % (", ".join(HOST_STATES), state))
    if reason is not None and not isinstance(reason, str):
        raise ValidationError("reason", "expected a string, got %r" % (reason,))
    for field, value in (("progress", progress), ("progress_update", progress_update)):
        if value is not None and not isinstance(value, dict):
            raise ValidationError(field, "expected a mapping, got %r" % (value,))
    if progress is not None and progress_update is not None:
        raise ValidationError("progress_update", "give either progress (replace) or progress_update (merge), not both")


def plan(current, state=None, reason=None, progress=None, progress_update=None, force=False, at=None):
    """(new content, transition or None) for the request; raises ConflictError on a forbidden transition."""
    validate(state, reason, progress, progress_update)
    new = copy.deepcopy(current)
    transition = None
    old_state = current["state"]
    if state is not None and state != old_state:
        if not force and state not in TRANSITIONS[old_state]:
            raise ConflictError(
                "state: cannot go from %s to %s (allowed from %s: %s; force=true overrides)"
                % (old_state, state, old_state, ", ".join(TRANSITIONS[old_state])),
                field="state", current=old_state, requested=state)
        at = at or now()
        transition = {"from": old_state, "to": state, "reason": reason, "at": at}
        new["state"] = state
        new["since"] = at
        new["reason"] = reason
        new["history"] = (new["history"] + [transition])[-HISTORY_LENGTH:]
    elif reason is not None:
        new["reason"] = reason
    if progress is not None:
        new["progress"] = copy.deepcopy(progress)
    elif progress_update is not None:
        new["progress"] = merge(new["progress"], progress_update)
    return new, transition


@contextlib.contextmanager
def _locked(layout, check_mode):
    if check_mode or not os.path.isdir(layout.root):
        yield
        return
    with open(os.path.join(layout.root, ".host.json.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure(root=None, state=None, reason=None, progress=None, progress_update=None, force=False,
           check_mode=False):
    """Apply the request to host.json; the ``host_state`` module result (without diff mode switch)."""
    validate(state, reason, progress, progress_update)
    layout = Layout(root)
    if not check_mode:
        os.makedirs(layout.root, mode=0o755, exist_ok=True)
    with _locked(layout, check_mode):
        existed = os.path.isfile(layout.host_state_file)
        before = read(layout)
        after, transition = plan(before, state, reason, progress, progress_update, force)
        changed = after != before
        if changed and not check_mode:
            atomic_write_json(layout.host_state_file, after)
    before_diff = before if existed else {}
    return dict(
        changed=changed,
        state=after["state"],
        previous_state=before["state"],
        reason=after["reason"],
        since=after["since"],
        history=after["history"],
        progress=after["progress"],
        transition=transition,
        file=layout.host_state_file,
        diff=dict(before=before_diff, after=after if (changed or existed) else {}),
    )


__all__ = ["DEFAULT_HOST_STATE", "HOST_STATES", "TRANSITIONS", "ensure", "plan", "read", "merge"]


def task(params, check_mode=False):
    """The ``host_state`` module's entry; its diff only when something changed (and,
    through ``_module.run``, only when asked for)."""
    result = ensure(root=params["root"], state=params["state"], reason=params["reason"],
                    progress=params["progress"], progress_update=params["progress_update"],
                    force=params["force"], check_mode=check_mode)
    if not result["changed"]:
        result.pop("diff", None)
    return result


task.diff_on_request = True
