# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only stdout callback: every task result and the stats as one JSON
document (ansible-core no longer ships a json callback)."""

from __future__ import annotations

import json

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: lab_json
    type: stdout
    short_description: task results and stats as one JSON document
    description:
        - Used by the integration tests (tests/integration/lab.py) to read results.
"""

DROPPED = ("diff", "warnings", "deprecations", "exception")


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "lab_json"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.plays = []
        self.tasks = {}

    def _play(self, name=""):
        if not self.plays:
            self.plays.append({"play": {"name": name}, "tasks": []})
        return self.plays[-1]

    def v2_playbook_on_play_start(self, play):
        self.plays.append({"play": {"name": play.get_name()}, "tasks": []})

    def _task_entry(self, task):
        entry = self.tasks.get(task._uuid)
        if entry is None:
            entry = {"task": {"name": task.get_name(), "action": task.action}, "hosts": {}}
            self.tasks[task._uuid] = entry
            self._play()["tasks"].append(entry)
        return entry

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task_entry(task)

    def v2_playbook_on_handler_task_start(self, task):
        self._task_entry(task)

    def _record(self, result, **extra):
        # _dump_results drops these from screen output; tests want them
        kept = {f"kept_{k}": result.result[k] for k in DROPPED if k in result.result}
        data = json.loads(self._dump_results({**result.result, **kept}, keep_invocation=True))
        for key in DROPPED:
            if f"kept_{key}" in data:
                data[key] = data.pop(f"kept_{key}")
        data.update(extra)
        self._task_entry(result.task)["hosts"][result.host.get_name()] = data

    def v2_runner_on_ok(self, result):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, failed=True, ignore_errors=ignore_errors)

    def v2_runner_on_skipped(self, result):
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result):
        self._record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats):
        summary = {host: stats.summarize(host) for host in sorted(stats.processed)}
        self._display.display(json.dumps({"plays": self.plays, "stats": summary}, indent=2,
                                         sort_keys=True))
