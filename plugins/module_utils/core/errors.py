# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Exception hierarchy of the ctrhost library.

Every failure the library can explain is a CtrhostError; a module turns it
into ``fail_json`` in exactly one place (see ``_module.run``).
"""

from __future__ import annotations


class CtrhostError(Exception):
    """Base class: ``msg`` is for humans, ``details`` go into the result."""

    def __init__(self, msg, **details):
        super().__init__(msg)
        self.msg = msg
        self.details = details

    def to_result(self):
        result = dict(self.details)
        result["msg"] = self.msg
        return result


class ValidationError(CtrhostError):
    """Bad input; ``field`` names the option at fault."""

    def __init__(self, field, msg, **details):
        super().__init__("%s: %s" % (field, msg), field=field, **details)
        self.field = field


class NotFoundError(CtrhostError):
    """A named object (container, template, checkpoint) does not exist."""


class ConflictError(CtrhostError):
    """The request conflicts with existing state (in use, taken, locked)."""


class MissingToolError(CtrhostError):
    """A required host tool (runtime, CRIU, rsync...) is absent or unusable."""


class CommandError(CtrhostError):
    """An external command failed; carries cmd, rc, stdout and stderr."""

    def __init__(self, msg, cmd, rc, stdout="", stderr="", **details):
        super().__init__(msg, cmd=list(cmd), rc=rc, stdout=stdout, stderr=stderr, **details)
        self.cmd = list(cmd)
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr


class LimitError(CtrhostError):
    """A resource limit could not be applied or verified."""


class MissingLibraryError(MissingToolError):
    """A Python library the managed host needs (pyroute2) cannot be imported; modules
    report it with Ansible's ``missing_required_lib`` message."""

    def __init__(self, library, reason, exception=None):
        super().__init__("%s: not importable (%s), needed %s" % (library, exception, reason),
                         library=library)
        self.library = library
        self.reason = reason
