# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a scenario's time goes: wall time per play and per role, and the slowest tasks.

Printed at the end of each playbook run and kept as JSON (``phases-*.json`` in
MOLECULE_EPHEMERAL_DIRECTORY) for the scenario's report. Failed and unreachable tasks are
also appended to the file named by CTRHOST_FAILURES_FILE, so that a test runner can print
them again after Molecule's destroy step has scrolled them away.
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: ctrhost_phases
    type: aggregate
    short_description: wall time per play, per role and of the slowest tasks
    description:
        - Used by the Molecule scenarios of ctrhost.fleet to report where their time goes.
        - Appends each failed or unreachable task to the file named by C(CTRHOST_FAILURES_FILE), when set.
    requirements:
        - enable in ANSIBLE_CALLBACKS_ENABLED
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "ctrhost_phases"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.t0 = time.monotonic()
        self.plays, self.tasks = [], []
        self.current = None
        self.playbook = "playbook"
        self.failures = []

    def v2_playbook_on_start(self, playbook):
        self.playbook = os.path.splitext(os.path.basename(playbook._file_name))[0]

    def _close_task(self):
        if self.current is not None:
            name, role, start = self.current
            self.tasks.append(dict(task=name, role=role, seconds=round(time.monotonic() - start, 1),
                                   play=self.plays[-1]["play"] if self.plays else ""))
            self.current = None

    def v2_playbook_on_play_start(self, play):
        self._close_task()
        now = time.monotonic()
        if self.plays:
            self.plays[-1]["seconds"] = round(now - self.plays[-1]["start"], 1)
        self.plays.append(dict(play=play.get_name().strip(), start=now))

    def _task_start(self, task):
        self._close_task()
        role = task._role.get_name() if task._role else ""
        self.current = (task.get_name().strip(), role, time.monotonic())

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task_start(task)

    def v2_playbook_on_handler_task_start(self, task):
        self._task_start(task)

    def _failed(self, result, what):
        res = result._result or {}
        text = res.get("msg") or ""
        for key in ("stderr", "stdout", "module_stderr"):
            if res.get(key):
                text += "\n%s: %s" % (key, res[key][-1500:])
        entry = "%s | %s | %s %s: %s" % (self.playbook, self.plays[-1]["play"] if self.plays else "",
                                         what, result._host.get_name(), result._task.get_name().strip())
        self.failures.append(entry)
        path = os.environ.get("CTRHOST_FAILURES_FILE")
        if path:
            with open(path, "a") as handle:
                handle.write("%s\n    %s\n" % (entry, str(text)[-3000:].replace("\n", "\n    ")))

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if not ignore_errors:
            self._failed(result, "FAILED")

    def v2_runner_on_unreachable(self, result):
        self._failed(result, "UNREACHABLE")

    def v2_playbook_on_stats(self, stats):
        self._close_task()
        now = time.monotonic()
        if self.plays:
            self.plays[-1]["seconds"] = round(now - self.plays[-1]["start"], 1)
        roles = {}
        for task in self.tasks:
            key = "%s / %s" % (task["play"], task["role"] or "-")
            roles[key] = round(roles.get(key, 0) + task["seconds"], 1)
        report = dict(playbook=self.playbook, total=round(now - self.t0, 1),
                      plays=[dict(play=p["play"], seconds=p.get("seconds", 0)) for p in self.plays],
                      roles=roles, slowest=sorted(self.tasks, key=lambda t: -t["seconds"])[:15])
        self._display.display("\nctrhost_phases: %s took %.0fs" % (self.playbook, report["total"]))
        for play in report["plays"]:
            self._display.display("  play %-60s %7.1fs" % (play["play"][:60], play["seconds"]))
        for key, seconds in sorted(roles.items(), key=lambda kv: -kv[1])[:10]:
            self._display.display("  role %-60s %7.1fs" % (key[:60], seconds))
        for task in report["slowest"][:10]:
            self._display.display("  task %-60s %7.1fs" % (task["task"][:60], task["seconds"]))
        for entry in self.failures:
            self._display.display("  %s" % entry)
        out_dir = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
        if out_dir and os.path.isdir(out_dir):
            with open(os.path.join(out_dir, "phases-%s.json" % self.playbook), "w") as handle:
                json.dump(report, handle, indent=2)
