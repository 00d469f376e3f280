# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The declared spec of a container: validation, defaults, comparison.

``normalize`` validates everything the ``container`` module accepts before
anything is written, and returns the declared spec in one canonical shape so
that two specs can be compared field by field. Options left out (None) keep
the stored value of an existing container (so a ``container_limits`` change or
a network change made elsewhere is not undone), or take their default for a
new one.
"""

from __future__ import annotations

import json
import os
import re
import shlex

from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import idmap as _idmap
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import idranges as _idranges
from ansible_collections.ctrhost.fleet.plugins.module_utils.limits import records as _limits
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import bundle as _oci
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import system as _sysctr
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ValidationError
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime.probe import RUNTIMES
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.validate import (
    reject_unknown_keys,
    validate_name,
)

# Declared fields, in display order.
FIELDS = ("template", "command", "init", "hostname", "env", "secret_env", "mounts", "capabilities",
          "privileged", "idmap_isolated", "limits", "network", "autostart", "runtime")
# Changing one of these needs the container re-created (new config/rootfs).
RECREATE_FIELDS = ("template", "command", "init", "hostname", "env", "secret_env", "mounts", "capabilities",
                   "privileged", "idmap_isolated", "runtime")
# These change live on a running container.
LIVE_FIELDS = ("limits", "network", "autostart")

MOUNT_KEYS = ("source", "destination", "readonly", "type")
MOUNT_TYPES = ("bind", "tmpfs")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                          r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
DEFAULT_COMMAND = ["/bin/sh"]
# What a field stored before it existed means: a container made before user
# namespaces existed here keeps running as it was made, privileged.
STORED_DEFAULTS = {"init": "auto", "privileged": True, "idmap_isolated": False}
# A new container's ``privileged`` when the task leaves it out.
DEFAULT_PRIVILEGED = False
# What a secret value is shown as (diff, results); a changed one says so.
MASK = "********"
MASK_CHANGED = "******** (changed)"


def template_meta(layout, template):
    """template.json of an installed template; NotFoundError naming ``template`` if absent.

    Read directly: ``_template.get_template`` also lists the template's users (every
    container's spec.json) and imports urllib and tarfile, neither needed here; it
    only runs to explain a missing template."""
    validate_name(template, "template")
    if os.path.isdir(layout.template_rootfs(template)):
        try:
            with open(layout.template_meta(template), encoding="utf-8") as handle:
                meta = json.load(handle)
            if isinstance(meta, dict):
                return meta
        except (OSError, ValueError):
            pass
    from ansible_collections.ctrhost.fleet.plugins.module_utils.template import lifecycle as _template

    return _template.get_template(layout, template, field="template")


def default_command(meta):
    """The template's init (``init`` in template.json) if it names one, else /bin/sh."""
    init = meta.get("init")
    if isinstance(init, str) and init:
        return shlex.split(init)
    if isinstance(init, list) and init:
        return [str(a) for a in init]
    return list(DEFAULT_COMMAND)


def norm_command(value):
    if isinstance(value, str):
        value = shlex.split(value)
    if not isinstance(value, (list, tuple)) or not value:
        raise ValidationError("command", "expected a non-empty list of arguments or a string")
    args = [str(a) for a in value]
    if not args[0]:
        raise ValidationError("command", "the program (first argument) must not be empty")
    return args


def norm_hostname(value):
    if not isinstance(value, str) or len(value) > 64 or not _HOSTNAME_RE.match(value):
        raise ValidationError("hostname", "expected a host name of letters, digits, '-' and '.' "
                              "(at most 64 characters), got %r" % (value,))
    return value


def norm_env(value, field="env"):
    if not isinstance(value, dict):
        raise ValidationError(field, "expected a dict of NAME: value, got %s"
                              % ("a " + type(value).__name__ if field == "secret_env" else repr(value)))
    out = {}
    for key, val in value.items():
        if not isinstance(key, str) or not _ENV_KEY_RE.match(key):
            raise ValidationError("%s.%s" % (field, key), "expected a variable name matching "
                                  "[A-Za-z_][A-Za-z0-9_]*")
        if val is None or isinstance(val, (dict, list)):
            raise ValidationError("%s.%s" % (field, key), "expected a string value, got %s"
                                  % ("a " + type(val).__name__ if field == "secret_env" else repr(val)))
        out[key] = str(val).lower() if isinstance(val, bool) else str(val)
    return out


def _abs_clean(value, field):
    if not isinstance(value, str) or not os.path.isabs(value):
        raise ValidationError(field, "expected an absolute path, got %r" % (value,))
    if ".." in value.split("/"):
        raise ValidationError(field, "%r must not contain '..'" % value)
    return os.path.normpath(value)


def norm_mounts(value):
    if not isinstance(value, list):
        raise ValidationError("mounts", "expected a list of {source, destination, readonly, type}")
    out, seen = [], set()
    for i, raw in enumerate(value):
        field = "mounts[%d]" % i
        reject_unknown_keys(raw, MOUNT_KEYS, field)
        kind = raw.get("type") or "bind"
        if kind not in MOUNT_TYPES:
            raise ValidationError(field + ".type", "expected one of %s, got %r"
                                  % (", ".join(MOUNT_TYPES), kind))
        dest = _abs_clean(raw.get("destination"), field + ".destination")
        if dest == "/" or dest in seen:
            raise ValidationError(field + ".destination", "%s is the root or already mounted" % dest)
        seen.add(dest)
        source = None
        if kind == "bind":
            source = _abs_clean(raw.get("source"), field + ".source")
            if not os.path.exists(source):
                raise ValidationError(field + ".source", "%s does not exist on this host" % source)
        out.append(dict(source=source, destination=dest, readonly=bool(raw.get("readonly")),
                        type=kind))
    return out


def norm_limits(value, root=None):
    return _limits.normalize_for(_limits.host_facts(root), value)


def normalize(layout, name, params, stored=None):
    """Validate ``params`` (module options) and return the declared spec.

    ``stored`` is the stored spec of an existing container (or None); an option
    left out keeps its stored value. Raises ValidationError/NotFoundError
    naming the field; writes nothing.
    """
    validate_name(name, "name")
    stored = stored or {}
    get = params.get
    spec = {}
    template = get("template") if get("template") is not None else stored.get("template")
    if template is None:
        raise ValidationError("template", "required to create container %s" % name)
    validate_name(template, "template")
    meta = template_meta(layout, template) if (template != stored.get("template")
                                               or get("template") is not None) else {}
    spec["template"] = template
    if get("command") is not None:
        spec["command"] = norm_command(get("command"))
    elif "command" in stored and template == stored.get("template"):
        spec["command"] = stored["command"]
    else:
        spec["command"] = default_command(meta)
    spec["init"] = _sysctr.normalize_init(get("init") if get("init") is not None
                                          else stored.get("init"))
    spec["hostname"] = norm_hostname(get("hostname") if get("hostname") is not None
                                     else stored.get("hostname", name))
    spec["env"] = norm_env(get("env")) if get("env") is not None else stored.get("env", {})
    spec["secret_env"] = (norm_env(get("secret_env"), "secret_env") if get("secret_env") is not None
                          else stored.get("secret_env", {}))
    both = sorted(set(spec["env"]) & set(spec["secret_env"]))
    if both:
        raise ValidationError("secret_env.%s" % both[0], "also set in env; give each variable once")
    spec["mounts"] = norm_mounts(get("mounts")) if get("mounts") is not None \
        else stored.get("mounts", [])
    spec["capabilities"] = _oci.normalize_capabilities(
        get("capabilities") if get("capabilities") is not None else stored.get("capabilities"))
    spec["privileged"], spec["idmap"] = norm_privileged(get("privileged"), stored)
    spec["idmap_isolated"], spec["idmap"] = norm_isolated(
        get("idmap_isolated"), stored, spec["idmap"], name, layout)
    spec["limits"] = norm_limits(get("limits"), layout.root) if get("limits") is not None \
        else stored.get("limits", {})
    spec["network"] = (_norm_network(get("network"), name) if get("network") is not None
                       else stored.get("network", []))
    spec["autostart"] = bool(get("autostart")) if get("autostart") is not None \
        else bool(stored.get("autostart", False))
    runtime = get("runtime") or stored.get("runtime") or "runc"
    if runtime not in RUNTIMES:
        raise ValidationError("runtime", "expected one of %s, got %r" % (", ".join(RUNTIMES), runtime))
    spec["runtime"] = runtime
    return spec


def norm_privileged(value, stored):
    """(privileged, idmap): ``idmap`` is the stored one of an unprivileged container,
    else this host's range (ValidationError naming ``privileged`` when it has none)."""
    if value is None:
        value = stored.get("privileged", STORED_DEFAULTS["privileged"]) if stored \
            else DEFAULT_PRIVILEGED
    if value:
        return True, None
    if stored and not stored.get("privileged", STORED_DEFAULTS["privileged"]) and stored.get("idmap"):
        return False, stored["idmap"]
    return False, _idmap.host_range()


def norm_isolated(value, stored, idmap, name, layout):
    """(idmap_isolated, idmap): an unprivileged container's own range (``_idranges``) when
    asked - the stored one when it has one, else the first free here from its name."""
    if value is None:
        value = stored.get("idmap_isolated", STORED_DEFAULTS["idmap_isolated"]) if stored else False
    if not value:  # the shared range (again, when it turns from isolated)
        return False, _idmap.host_range() if (idmap or {}).get("isolated") else idmap
    if idmap is None:
        raise ValidationError("idmap_isolated", "an isolated id range is for an unprivileged "
                              "container; expected privileged: false")
    if (stored.get("idmap") or {}).get("isolated") and not stored.get("privileged", True):
        return True, stored["idmap"]
    others = _idranges.taken(layout.containers_dir, but=name).values()
    return True, _idranges.allocate_isolated(name, others, _idranges.isolated_pool())


def _norm_network(value, name):
    from ansible_collections.ctrhost.fleet.plugins.module_utils.net import spec as _netconf

    return _netconf.normalize(value, name)


def mask(secrets, before=None):
    """``secret_env`` as shown anywhere: names kept, values masked (``before``: the
    masked or clear values it is compared with; a value that differs says changed)."""
    before = before or {}
    return {k: (MASK_CHANGED if k in before and before[k] not in (v, MASK) else MASK)
            for k, v in sorted((secrets or {}).items())}


def declared(spec, before=None):
    """Only the declared fields of a stored spec (for diffs), secret values masked.
    ``before``: the stored spec (clear values) the result is the after side of."""
    out = {key: spec[key] for key in FIELDS if key in (spec or {})}
    if "secret_env" in out:
        out["secret_env"] = mask(out["secret_env"], (before or {}).get("secret_env"))
    return out


def changed_fields(old, new):
    old = old or {}
    return [key for key in FIELDS
            if old.get(key, STORED_DEFAULTS.get(key)) != new.get(key, STORED_DEFAULTS.get(key))]


def needs_recreate(old, new):
    """Declared fields whose change needs a re-create (empty when none)."""
    return [key for key in changed_fields(old, new) if key in RECREATE_FIELDS]
