# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Converge a set of containers on one host in one call (``ctrhost.fleet.containers``).

Every item is validated before anything is done: a bad item fails the whole
call, naming the item and the field (``containers[3].limits.memory``), and
nothing is changed. Then, optionally, containers of the host that the list
does not declare are removed (``purge``), and each item is converged with
``_container.ensure`` in this one process. An item that fails while being
converged does not stop the others; the call fails at the end naming it.
"""

from __future__ import annotations

from ansible_collections.ctrhost.fleet.plugins.module_utils.container import lifecycle as _container
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import (
    CtrhostError,
    ValidationError,
)
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.store import ContainerStore


def _at(exc, where, name=None):
    """``exc`` re-aimed at item ``where`` (``containers[3]``): its field and message."""
    field = exc.details.get("field")
    msg = exc.msg
    if field and msg.startswith(field + ":"):
        msg = "%s.%s%s" % (where, field, msg[len(field):])
    else:
        msg = "%s: %s" % (where, msg)
    exc.msg = msg
    exc.args = (msg,)
    exc.details["field"] = "%s.%s" % (where, field) if field else where
    exc.details["container"] = name
    if isinstance(exc, ValidationError):
        exc.field = exc.details["field"]
    return exc


def item_params(params, item, index):
    """The ``container`` options of item ``index``, with the call's ``root`` (and run_dir)."""
    where = "containers[%d]" % index
    if not isinstance(item, dict):
        raise ValidationError(where, "expected a dict of container options, got %r" % (item,))
    if "root" in item and item["root"] not in (None, params.get("root")):
        raise ValidationError(where + ".root", "root is common to the call, not set per container")
    out = dict(item, root=params.get("root"))
    if params.get("run_dir"):
        out["run_dir"] = params["run_dir"]
    return out


def validate(params, check_mode=False):
    """[(index, item params)] of every item, all valid; raises naming ``containers[i].field``."""
    items = params.get("containers")
    if not isinstance(items, list):
        raise ValidationError("containers", "expected a list of containers, got %r" % (items,))
    seen, out = {}, []
    for index, item in enumerate(items):
        where = "containers[%d]" % index
        each = item_params(params, item, index)
        name = each.get("name")
        try:
            _container.validate(each, check_mode)
        except CtrhostError as exc:
            raise _at(exc, where, name) from None
        if name in seen:
            raise ValidationError(where + ".name", "container %s is declared twice (also in "
                                  "containers[%d])" % (name, seen[name]), container=name)
        seen[name] = index
        out.append(each)
    return out


def undeclared(params, declared):
    """Names of the host's containers that ``declared`` (names) leaves out, sorted."""
    store = ContainerStore(Layout(params.get("root"), params.get("run_dir")))
    return [name for name in store.names() if name not in declared]


def _entry(name, result):
    container = result.get("container") or {}
    entry = dict(name=name, changed=bool(result.get("changed")), state=container.get("state"),
                 pid=container.get("pid"))
    if result.get("diff"):
        entry["diff"] = result["diff"]
    if result.get("commands"):
        entry["commands"] = result["commands"]
    return entry


def converge(params, check_mode=False):
    """Converge every item of ``params['containers']`` (and purge); return the result."""
    items = validate(params, check_mode)
    names = [each["name"] for each in items]
    work = []
    if params.get("purge"):
        for name in undeclared(params, set(names)):
            gone = dict(name=name, state="absent", root=params.get("root"))
            if params.get("run_dir"):
                gone["run_dir"] = params["run_dir"]
            work.append(("purge", gone))
    work.extend(("containers[%d]" % i, each) for i, each in enumerate(items))
    results, failed, warnings = [], [], []
    before, after = {}, {}
    for where, each in work:
        try:
            result = _container.ensure(each, check_mode)
        except CtrhostError as exc:
            results.append(dict(name=each["name"], changed=False, failed=True, msg=exc.msg,
                                state=None, pid=None))
            failed.append("%s (%s): %s" % (where, each["name"], exc.msg))
            continue
        entry = _entry(each["name"], result)
        if where == "purge":
            entry["purged"] = True
        results.append(entry)
        warnings.extend("%s: %s" % (each["name"], w) for w in result.get("warnings") or ())
        if entry["changed"] and "diff" in entry:
            before[each["name"]] = entry["diff"]["before"]
            after[each["name"]] = entry["diff"]["after"]
    changed = any(r["changed"] for r in results)
    out = dict(changed=changed, results=results)
    if changed:
        out["diff"] = dict(before=before, after=after)
    if warnings:
        out["warnings"] = warnings
    if failed:
        raise CtrhostError("%d of %d containers failed: %s" % (len(failed), len(work),
                                                               "; ".join(failed)), **out)
    return out
