# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a restore (``_restore``) takes from the checkpoint, made to fit this host: the
template checked by checksum, the bundle's config.json (the dumped one with this host's
cgroups path, netns and CRIU config file), the container's cgroup tree as it was at
dump time, and the runtime's restore command line.
"""

from __future__ import annotations

import copy
import os

from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime import oci as _ocifile
from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import dump as _checkpoint
from ansible_collections.ctrhost.fleet.plugins.module_utils.criu import config as _criuconf
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import idmap as _idmap
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import prestart_hook as _nethook
from ansible_collections.ctrhost.fleet.plugins.module_utils.net import netns as _netns
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import bundle as _oci
from ansible_collections.ctrhost.fleet.plugins.module_utils.container import system as _sysctr
from ansible_collections.ctrhost.fleet.plugins.module_utils.template import lifecycle as _template
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import ConflictError, NotFoundError


def check_template(layout, meta):
    """The local template must be the one the checkpoint was made on (same sha256)."""
    template = meta["spec"]["template"]
    local = _template.read_meta(layout, template)
    if local is None:
        raise NotFoundError("template: the checkpoint needs template %r, which is not installed "
                            "under %s" % (template, layout.templates_dir), field="template")
    want, have = meta.get("template_sha256"), local.get("sha256")
    if want and have != want:
        raise ConflictError("template: template %r here has sha256 %s but the checkpoint was made "
                            "on sha256 %s; install the same template content first"
                            % (template, have, want), field="template", expected=want, found=have)
    return local


def restore_config(layout, name, spec, image_dir):
    """The bundle's config.json: the dumped one with this host's cgroups path and netns
    (an unprivileged container's: its user and network namespaces made by CRIU, the
    network hook of this host)."""
    cfg = _ocifile.load_config(os.path.join(image_dir, _checkpoint.CONFIG_COPY))
    conf = _criuconf.container_config_path(layout.run_dir, name)  # written by restore_images
    if cfg is None:
        return _oci.build_config(name, spec, _netns.path(name), cgroups=spec["cgroups_path"],
                                 criu_config=conf)
    cfg = copy.deepcopy(cfg)
    cfg["annotations"] = dict(cfg.get("annotations") or {}, **{"org.criu.config": conf})
    cfg["root"] = dict(cfg.get("root") or {}, path="rootfs")
    linux = cfg.setdefault("linux", {})
    linux["cgroupsPath"] = spec["cgroups_path"]
    unprivileged = bool(_idmap.of(spec))
    for ns in linux.get("namespaces") or []:
        if unprivileged and ns.get("type") in ("network", "user"):
            # CRIU makes both (user from the images, network empty: _nethook fills it)
            ns.pop("path", None)
        elif ns.get("type") == "network":
            ns["path"] = _netns.path(name)
    if unprivileged:
        _nethook.with_hook(cfg, name)
    return _sysctr.retarget(cfg)


def recreate_cgroups(cgroups_path, tree):
    """The container's cgroup subtree as it was at dump time (CRIU recreates only the
    cgroups that hold processes; systemd inside also watches empty ones)."""
    if not tree:
        return 0
    from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.cgroups import Cgroup
    return _sysctr.recreate_tree(Cgroup(cgroups_path).dirs(create=True), tree)


def restore_command(rt, criu_path, name, image_dir, work, bundle, options, lazy=False):
    args = _checkpoint.criu_args(rt, criu_path) + [
        "restore", "--detach", "--image-path", image_dir, "--work-path", work, "--bundle", bundle]
    args += [_checkpoint.CRIU_FLAGS[k] for k in _checkpoint.RESTORE_FLAGS if options.get(k)]
    if lazy:
        args.append("--lazy-pages")
    return args + [name]
