# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Destination side of a migration, driven by the source over one SSH session.

The source starts ``python3 -c BOOTSTRAP`` on the destination and writes to
its stdin a zip of the collection's module_utils followed by JSON requests,
one per line; each answer is one JSON line on stdout. So the destination
needs Python and the collection's host requirements (runtime, CRIU,
pyroute2), not the collection itself, and no Ansible round trip sits inside
the frozen window.

Requests: ``preflight``, ``prepare``, ``restore`` (also lazy: starts
``criu lazy-pages`` first), ``lazy_wait``, ``commit``, ``abort``,
``status``. Until ``commit`` arrives the restored container is provisional:
when the session ends without it (SSH cut, source gone) the agent removes
what it restored (self-fencing), so the container never runs on both hosts.
After a lazy restore whose pages all arrived the source copy is gone, so the
agent keeps it (``lazy_complete``) even without ``commit``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time

# The bootstrap the source runs with ``python3 -c``; argv[1] is the payload size.
BOOTSTRAP = (
    "import sys,os,io,zipfile,tempfile,shutil;"
    "n=int(sys.argv[1]);d=b'';r=sys.stdin.buffer\n"
    "while len(d)<n:\n"
    " c=r.read(n-len(d))\n"
    " if not c: sys.exit(3)\n"
    " d+=c\n"
    "t=tempfile.mkdtemp(prefix='ctrhost-agent-');zipfile.ZipFile(io.BytesIO(d)).extractall(t)\n"
    "sys.path.insert(0,t)\n"
    "try:\n"
    " from ansible_collections.ctrhost.fleet.plugins.module_utils import _migrate_agent as a\n"
    " sys.exit(a.serve(sys.stdin.buffer,sys.stdout))\n"
    "finally:\n"
    " shutil.rmtree(t,ignore_errors=True)\n"
)


def _mods():
    from ansible_collections.ctrhost.fleet.plugins.module_utils import (
        _checkpoint,
        _criu,
        _paths,
        _restore,
        _state,
        _sysinfo,
        _template,
    )
    return dict(checkpoint=_checkpoint, criu=_criu, paths=_paths, restore=_restore,
                state=_state, sysinfo=_sysinfo, template=_template)


class Agent:
    def __init__(self):
        self.m = _mods()
        self.layout = None
        self.name = None
        self.meta = None
        self.restored = False
        self.committed = False
        self.lazy_complete = False
        self.lazy_proc = None
        self.incoming = None
        self.staged = False
        self.created = True
        self.runtime_path = None
        self.criu_path = None

    # -- requests ---------------------------------------------------------------
    def preflight(self, req):
        """What stops this host from taking the container (``problems``) and its facts."""
        m = self.m
        layout = m["paths"].Layout(req.get("root"))
        name, meta = req["name"], req["meta"]
        spec = meta["spec"]
        problems, facts = [], {}
        local = m["template"].read_meta(layout, spec["template"])
        if local is None:
            problems.append("template %r is not installed" % spec["template"])
        elif meta.get("template_sha256") and local.get("sha256") != meta["template_sha256"]:
            problems.append("template %r has sha256 %s, the container runs on %s"
                            % (spec["template"], local.get("sha256"), meta["template_sha256"]))
        runtime = m["sysinfo"].runtime_info(spec.get("runtime") or "runc", req.get("runtime_path"))
        usable, why = m["sysinfo"].runtime_usable(spec.get("runtime") or "runc", runtime,
                                                  m["sysinfo"].cgroup_layout())
        facts["runtime"] = runtime.get("version")
        if not usable:
            problems.append("runtime: %s" % why)
        try:
            criu = m["criu"].discover(req.get("criu_path"))
            facts.update(criu_version=criu["version"], lazy_pages=criu["lazy_pages"],
                         lazy_pages_reason=criu["lazy_pages_reason"], pre_dump=criu["pre_dump"])
            if not criu["check"]:
                problems.append("criu %s fails 'criu check': %s" % (criu["version"],
                                                                   criu["check_output"]))
        except m["criu"].MissingToolError as exc:
            problems.append(exc.msg)
        mem = m["sysinfo"].meminfo()
        facts.update(mem_available=mem["available"], cpus=m["sysinfo"].cpu_count(),
                     hostname=os.uname().nodename)
        if req.get("memory_needed") and mem["available"] < req["memory_needed"]:
            problems.append("%d bytes of memory available, the container needs %d"
                            % (mem["available"], req["memory_needed"]))
        cpus = (spec.get("limits") or {}).get("cpus")
        if cpus and float(cpus) > facts["cpus"]:
            problems.append("the container's cpus limit %s exceeds this host's %d cpus"
                            % (cpus, facts["cpus"]))
        if os.path.exists(layout.container_dir(name)):
            problems.append("a container named %s exists here (%s)"
                            % (name, layout.container_dir(name)))
        if os.path.lexists(m["paths"].Layout.netns_path(name)):
            problems.append("network namespace %s exists here" % m["paths"].Layout.netns_path(name))
        problems += self._ip_conflicts(layout, name, spec)
        disk = shutil.disk_usage(_existing_parent(layout.root))
        facts["disk_free"] = disk.free
        if req.get("disk_needed") and disk.free < req["disk_needed"]:
            problems.append("%d bytes free under %s, the move needs about %d"
                            % (disk.free, layout.root, req["disk_needed"]))
        facts["lazy_port"] = _free_port()
        return dict(ok=not problems, problems=problems, facts=facts)

    def _ip_conflicts(self, layout, name, spec):
        mine = {str(ipaddress.ip_interface(i[k]).ip) for i in spec.get("network") or []
                for k in ("ipv4", "ipv6") if i.get(k)}
        problems = []
        store = self.m["state"].ContainerStore(layout)
        for other in store.names():
            theirs = store.load(other) or {}
            for iface in theirs.get("network") or []:
                for key in ("ipv4", "ipv6"):
                    if iface.get(key) and str(ipaddress.ip_interface(iface[key]).ip) in mine:
                        problems.append("address %s is used by container %s here"
                                        % (iface[key], other))
        return problems

    def prepare(self, req):
        """Before the source freezes: the incoming dir, and everything of the container
        but its rootfs mount and processes (netns, veths with IP and MAC, config.json
        from the source's ``config``, spec.json, an empty upper layer the source
        pre-syncs into), so that only the mount and ``runtime restore`` remain for the
        frozen window."""
        m = self.m
        self.layout = m["paths"].Layout(req.get("root"))
        self.name, self.meta = req["name"], req["meta"]
        self.runtime_path, self.criu_path = req.get("runtime_path"), req.get("criu_path")
        self.created = not os.path.exists(self.layout.container_dir(self.name))
        base = self.layout.checkpoint_dir(self.name)
        for path in (self.layout.checkpoints_dir, base):
            os.makedirs(path, mode=0o700, exist_ok=True)
        self.incoming = os.path.join(base, ".incoming-%s" % self.meta["id"])
        shutil.rmtree(self.incoming, ignore_errors=True)
        os.makedirs(os.path.join(self.incoming, "images"), mode=0o700)
        os.chmod(self.incoming, 0o700)
        if req.get("config"):
            with open(os.path.join(self.incoming, "config.json"), "w") as handle:
                json.dump(req["config"], handle)
        t0 = time.monotonic()
        self.staged = True  # from here on an abort removes what was staged
        try:
            m["restore"].stage(self.layout, self.name, self.meta, self.incoming, self.created)
        except m["restore"].CtrhostError as exc:
            self.abort({})
            out = exc.to_result()
            return dict(ok=False, error=out.pop("msg"))
        upper = self.layout.container_file(self.name, "upper")
        os.makedirs(upper, mode=0o755, exist_ok=True)
        return dict(ok=True, incoming=self.incoming, upper=upper,
                    stage_seconds=round(time.monotonic() - t0, 3))

    def restore(self, req):
        m = self.m
        layout, name = self.layout, self.name
        images = os.path.join(self.incoming, "images")
        work = m["restore"].work_dir(layout, name, "migrate")
        m["restore"].cleanup_work(work)
        os.makedirs(work, mode=0o700)
        lazy = bool(req.get("lazy"))
        if lazy:
            criu = self.criu_path or m["criu"].require()["path"]
            with open(os.path.join(work, "lazy-pages.out"), "ab") as log:
                self.lazy_proc = subprocess.Popen(
                    [criu, "lazy-pages", "--page-server", "--address", "127.0.0.1",
                     "--port", str(req["port"]), "--images-dir", images, "--work-dir", work,
                     "--log-file", "lazy-pages.log", "-v2"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True)
            _wait_for(lambda: os.path.exists(os.path.join(work, "lazy-pages.socket"))
                      or self.lazy_proc.poll() is not None, 10)
            if self.lazy_proc.poll() is not None:
                cause, hint, lines = m["criu"].classify_work_dir(work, "lazy-pages.log")
                self.abort({})
                return dict(ok=False, error="criu lazy-pages exited at once: %s (%s)" % (cause, hint),
                            cause=cause, criu_log=lines)
        self.restored = True  # from here on an abort must clean up
        t0 = time.monotonic()
        try:
            facts = m["restore"].restore_images(layout, name, images, self.meta, self.runtime_path,
                                                self.criu_path, lazy=lazy, work=work,
                                                created=self.created, staged=True)
        except m["restore"].CtrhostError as exc:
            self.abort({})
            out = exc.to_result()
            return dict(ok=False, error=out.pop("msg"), **{k: v for k, v in out.items()
                                                          if k in ("cause", "criu_log")})
        facts.update(ok=True, running_at=time.time(), restore_seconds=time.monotonic() - t0)
        return facts

    def lazy_wait(self, req):
        """Wait for ``criu lazy-pages`` to have served every page (or to fail)."""
        if self.lazy_proc is None:
            return dict(ok=True, rc=None)
        try:
            rc = self.lazy_proc.wait(timeout=req.get("timeout") or 600)
        except subprocess.TimeoutExpired:
            self.lazy_proc.kill()
            rc = self.lazy_proc.wait()
        work = self.m["restore"].work_dir(self.layout, self.name, "migrate")
        if rc == 0:
            self.lazy_complete = True
            return dict(ok=True, rc=0, stats=self.m["criu"].work_stats(work))
        cause, hint, lines = self.m["criu"].classify_work_dir(work, "lazy-pages.log")
        return dict(ok=False, rc=rc, error="lazy pages transfer failed: %s (%s)" % (cause, hint),
                    cause=cause, criu_log=lines)

    def commit(self, _req):
        self.committed = True
        if self.incoming:
            shutil.rmtree(self.incoming, ignore_errors=True)
        if self.layout is not None:
            self.m["restore"].cleanup_work(self.m["restore"].work_dir(self.layout, self.name,
                                                                     "migrate"))
        return dict(ok=True)

    def abort(self, _req):
        """Remove whatever this session restored or received (never a committed container)."""
        if self.committed or self.layout is None:
            return dict(ok=True, removed=False)
        m, layout, name = self.m, self.layout, self.name
        if self.lazy_proc is not None and self.lazy_proc.poll() is None:
            self.lazy_proc.kill()
            self.lazy_proc.wait()
        from ansible_collections.ctrhost.fleet.plugins.module_utils._oci import cgroups_path
        spec = dict(self.meta["spec"], cgroups_path=cgroups_path(name))
        if self.restored or self.staged:
            rt = m["checkpoint"].runtime_for(layout, spec, self.runtime_path)
            m["restore"].forget_runtime(rt, name, spec["cgroups_path"])
            if self.created:
                from ansible_collections.ctrhost.fleet.plugins.module_utils._storage import Overlay
                m["restore"].remove_created(layout, name, spec, Overlay(layout, name, spec["template"]))
        m["restore"].cleanup_work(m["restore"].work_dir(layout, name, "migrate"))
        if self.incoming:
            shutil.rmtree(self.incoming, ignore_errors=True)
        self.restored = self.staged = False
        return dict(ok=True, removed=True)

    def status(self, req):
        m = self.m
        layout = m["paths"].Layout(req.get("root"))
        spec = m["state"].ContainerStore(layout).load(req["name"])
        st = m["checkpoint"].runtime_for(layout, spec, req.get("runtime_path")).state(req["name"]) \
            if spec else None
        return dict(ok=True, exists=spec is not None, status=(st or {}).get("status", "absent"),
                    pid=(st or {}).get("pid"))

    def finish(self):
        """End of session: fence an uncommitted restore."""
        if (self.restored or self.staged) and not self.committed and not self.lazy_complete:
            with contextlib.suppress(Exception):
                self.abort({})


def _existing_parent(path):
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def _free_port():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)


def serve(stdin, stdout):
    """JSON-lines loop; returns the exit status."""
    agent = Agent()
    handlers = dict(preflight=agent.preflight, prepare=agent.prepare, restore=agent.restore,
                    lazy_wait=agent.lazy_wait, commit=agent.commit, abort=agent.abort,
                    status=agent.status)
    stdout.write(json.dumps(dict(ok=True, hello=os.uname().nodename, pid=os.getpid())) + "\n")
    stdout.flush()
    try:
        for raw in stdin:
            req = json.loads(raw)
            op = req.get("op")
            if op == "bye":
                break
            try:
                answer = handlers[op](req)
            except Exception as exc:  # report, never die mid-protocol
                answer = dict(ok=False, error="%s: %s" % (type(exc).__name__, exc),
                              **getattr(exc, "details", {}))
            try:
                stdout.write(json.dumps(answer, default=str) + "\n")
                stdout.flush()
            except (BrokenPipeError, OSError):
                break
    finally:
        agent.finish()
    return 0


if __name__ == "__main__":  # pragma: no cover - started through BOOTSTRAP
    sys.exit(serve(sys.stdin.buffer, sys.stdout))
