# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Names and generic validation shared by every module.

Each helper returns the (normalised) value or raises ``ValidationError(field, msg)``
whose message names the field and what was expected.
"""

from __future__ import annotations

import os
import re

from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError

NAME_MAX = 63
# Letters, digits, '.', '_' and '-'; first character a letter or digit. Such a name is
# safe as a directory name, an OCI container id, a cgroup leaf and a netns name.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HEX64_RE = re.compile(r"^[0-9a-fA-F]{64}$")

NAME_RULE = ("1 to %d characters: letters, digits, '.', '_' or '-', starting with a letter "
             "or digit" % NAME_MAX)


def validate_name(value, field="name"):
    """A container, template or checkpoint name: returns it unchanged or raises."""
    if value is None or not isinstance(value, str) or value == "":
        raise ValidationError(field, "must not be empty (expected %s)" % NAME_RULE)
    if len(value) > NAME_MAX:
        raise ValidationError(field, "%r is %d characters long; at most %d are allowed"
                              % (value, len(value), NAME_MAX))
    if "/" in value:
        raise ValidationError(field, "%r must not contain '/' (expected %s)" % (value, NAME_RULE))
    if ".." in value:
        raise ValidationError(field, "%r must not contain '..' (expected %s)" % (value, NAME_RULE))
    if any(c.isspace() for c in value):
        raise ValidationError(field, "%r must not contain spaces (expected %s)" % (value, NAME_RULE))
    if not _NAME_RE.match(value):
        raise ValidationError(field, "%r is not a valid name (expected %s)" % (value, NAME_RULE))
    return value


def validate_sha256(value, field="checksum"):
    """``sha256:HEX`` or bare 64-digit hex -> lower-case hex digest."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "must not be empty (expected sha256:<64 hex digits>)")
    text = value.strip()
    algo, sep, digest = text.partition(":")
    if not sep:
        algo, digest = "sha256", text
    if algo.lower() != "sha256":
        raise ValidationError(field, "algorithm %r is not supported (expected sha256:<64 hex digits>)"
                              % algo)
    if not _HEX64_RE.match(digest):
        raise ValidationError(field, "%r is not a sha256 digest (expected sha256:<64 hex digits>)"
                              % value)
    return digest.lower()


def validate_abs_path(value, field, must_exist=False, kind=None):
    """An absolute path; ``kind`` 'file' or 'dir' checks the type when ``must_exist``."""
    if not isinstance(value, str) or not value:
        raise ValidationError(field, "must be an absolute path")
    if not os.path.isabs(value):
        raise ValidationError(field, "%r is not an absolute path" % value)
    if must_exist:
        if not os.path.exists(value):
            raise ValidationError(field, "%s does not exist" % value)
        if kind == "file" and not os.path.isfile(value):
            raise ValidationError(field, "%s is not a regular file" % value)
        if kind == "dir" and not os.path.isdir(value):
            raise ValidationError(field, "%s is not a directory" % value)
    return os.path.normpath(value)


def reject_unknown_keys(value, allowed, field):
    """A dict whose keys all belong to ``allowed``; unknown keys are named in the error."""
    if not isinstance(value, dict):
        raise ValidationError(field, "must be a dictionary (got %s)" % type(value).__name__)
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ValidationError(field, "unknown key(s) %s (expected some of: %s)"
                              % (", ".join(unknown), ", ".join(sorted(allowed))))
    return value


def validate_string_list(value, field, item_pattern=None, what="item"):
    """A list of non-empty strings (a comma-separated string is split); returns the list."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        raise ValidationError(field, "must be a list of strings")
    out = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ValidationError(field, "every %s must be a non-empty string (got %r)" % (what, item))
        if item_pattern is not None and not re.match(item_pattern, item):
            raise ValidationError(field, "%r is not a valid %s" % (item, what))
        out.append(item.strip())
    return out
