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

Requests: ``preflight``, ``prepare``, ``ready``, ``restore`` (also lazy:
starts ``criu lazy-pages`` first), ``lazy_wait``, ``commit``, ``abort``,
``status``, ``fence``; ``ping`` lines (no answer) keep the lease alive.

Until ``commit`` arrives the staged/restored container is provisional, and
its spec.json carries an ``incoming`` marker {from, since, agent: [pid,
starttime], id, created}. The agent fences itself: when its stdin closes (the
source dropped the session, SSH cut) or no line arrived for ``lease`` seconds,
a watchdog thread kills what the current request runs (runtime restore, CRIU)
and the agent removes what it staged or restored, even while a request is in
flight. ``fence`` (from a new session) waits for an old agent to have done so,
kills it when it did not, and removes what it left; ``preflight`` removes
stagings whose agent is gone (a killed agent cannot fence itself). After a
lazy restore whose pages all arrived the source copy is gone, so the agent
keeps it (``lazy_complete``) even without ``commit``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import queue
import subprocess
import sys
import threading
import time

from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import store as _ckstore
from ansible_collections.ctrhost.fleet.plugins.module_utils.criu import reports as _criu
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import preflight as _migrate_preflight
from ansible_collections.ctrhost.fleet.plugins.module_utils.checkpoint import restore as _restore
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CtrhostError
from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate.leftovers import agent_dir, mark_agent_dir
from ansible_collections.ctrhost.fleet.plugins.module_utils.linux.process import alive, identity, kill_tree, wait_for
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime.oci import cgroups_path
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout
from ansible_collections.ctrhost.fleet.plugins.module_utils.runtime.driver import runtime_for
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.store import ContainerStore
from ansible_collections.ctrhost.fleet.plugins.module_utils.container.rootfs import Overlay

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
    " from ansible_collections.ctrhost.fleet.plugins.module_utils.migrate import agent as a\n"
    " sys.exit(a.serve(sys.stdin.buffer,sys.stdout))\n"
    "finally:\n"
    " shutil.rmtree(t,ignore_errors=True)\n"
)


class Agent:
    """One session's state on the destination; each request of ``REQUESTS`` is a method."""

    REQUESTS = ("preflight", "prepare", "ready", "restore", "lazy_wait", "commit", "abort",
                "status", "fence")

    def __init__(self):
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
        self.lock = threading.Lock()  # commit against fence
        self.work = threading.Lock()  # ``busy`` against the watchdog's kills
        self.fenced = self.gone = self.busy = False
        self.lease = None
        self.last_heard = time.monotonic()
        self.me = identity(os.getpid())
        self.links = None  # the staged host veths, looked up ahead

    def handle(self, req):
        """The answer to one request; a failure is reported, never raised (the session
        must not die mid-protocol)."""
        with self.work:
            self.busy = True
        try:
            op = req.get("op")
            if op not in self.REQUESTS:
                raise KeyError(op)
            return getattr(self, op)(req)
        except Exception as exc:
            return dict(ok=False, error="%s: %s" % (type(exc).__name__, exc),
                        **getattr(exc, "details", {}))
        finally:
            with self.work:
                self.busy = False

    # -- requests ---------------------------------------------------------------
    def preflight(self, req):
        """Can this host take the container? (``_migrate_preflight``)"""
        return _migrate_preflight.check(req)

    def prepare(self, req):
        """Before the source freezes: the incoming dir, and everything of the container
        but its rootfs mount and processes (netns, veths with IP and MAC, config.json
        from the source's ``config``, spec.json, an empty upper layer the source
        pre-syncs into), so that only the mount and ``runtime restore`` remain for the
        frozen window."""
        self.layout = Layout(req.get("root"))
        self.name, self.meta = req["name"], req["meta"]
        self.runtime_path, self.criu_path = req.get("runtime_path"), req.get("criu_path")
        self.lease = req.get("lease")
        self.created = not os.path.exists(self.layout.container_dir(self.name))
        self.incoming = _incoming_dir(self.layout, self.name, self.meta["id"], req.get("config"))
        t0 = time.monotonic()
        self.staged = True  # from here on an abort removes what was staged
        try:
            marker = dict(since=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                          agent=list(self.me), id=self.meta["id"], **{"from": req.get("source")})
            _restore.stage(self.layout, self.name, self.meta, self.incoming, self.created,
                           incoming=marker)
        except CtrhostError as exc:
            self.abort({})
            out = exc.to_result()
            return dict(ok=False, error=out.pop("msg"))
        if self.meta["spec"].get("network"):
            self.links = _restore.HostLinks(self.meta["spec"]["network"],
                                            Layout.netns_path(self.name))
        upper = self.layout.container_file(self.name, "upper")
        os.makedirs(upper, mode=0o755, exist_ok=True)
        return dict(ok=True, incoming=self.incoming, upper=upper,
                    stage_seconds=round(time.monotonic() - t0, 3))

    def restore(self, req):
        layout, name = self.layout, self.name
        if req.get("meta"):  # known only once the source has dumped: options, cgroup tree
            self.meta = dict(self.meta, **req["meta"])
        images = os.path.join(self.incoming, "images")
        work = _restore.work_dir(layout, name, "migrate")
        _restore.cleanup_work(work)
        os.makedirs(work, mode=0o700)
        lazy = bool(req.get("lazy"))
        if lazy:
            failed = self._start_lazy_pages(work, images, req["port"])
            if failed:
                return failed
        self.restored = True  # from here on an abort must clean up
        t0 = time.monotonic()
        try:
            facts = _restore.restore_images(layout, name, images, self.meta, self.runtime_path,
                                            self.criu_path, lazy=lazy, work=work,
                                            created=self.created, staged=True)
        except CtrhostError as exc:
            self.abort({})
            out = exc.to_result()
            return dict(ok=False, error=out.pop("msg"), **{k: v for k, v in out.items()
                                                           if k in ("cause", "criu_log", "log")})
        t1 = time.monotonic()
        _restore.links_up(self.meta["spec"].get("network"), self.links)
        facts["timings"]["links_up"] = round(time.monotonic() - t1, 3)
        facts.update(ok=True, running_at=time.time(), restore_seconds=time.monotonic() - t0)
        return facts

    def _start_lazy_pages(self, work, images, port):
        """``criu lazy-pages`` serving the restore's page faults from the source's page
        server (forwarded to ``port``); the failed answer when it exits at once."""
        criu = self.criu_path or _criu.require()["path"]
        with open(os.path.join(work, "lazy-pages.out"), "ab") as log:
            self.lazy_proc = subprocess.Popen(
                [criu, "lazy-pages", "--page-server", "--address", "127.0.0.1",
                 "--port", str(port), "--images-dir", images, "--work-dir", work,
                 "--log-file", "lazy-pages.log", "-v2"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True)
        wait_for(lambda: os.path.exists(os.path.join(work, "lazy-pages.socket"))
                 or self.lazy_proc.poll() is not None, 10)
        if self.lazy_proc.poll() is None:
            return None
        cause, hint, lines = _criu.classify_work_dir(work, "lazy-pages.log")
        self.abort({})
        return dict(ok=False, error="criu lazy-pages exited at once: %s (%s)" % (cause, hint),
                    cause=cause, criu_log=lines)

    def ready(self, _req):
        """A round trip right before the source freezes: the agent is there and not fenced."""
        return dict(ok=not self.fenced and self.staged, fenced=self.fenced)

    def lazy_wait(self, req):
        """Wait for ``criu lazy-pages`` to have served every page (or to fail)."""
        if self.lazy_proc is None:
            return dict(ok=True, rc=None)
        try:
            rc = self.lazy_proc.wait(timeout=req.get("timeout") or 600)
        except subprocess.TimeoutExpired:
            self.lazy_proc.kill()
            rc = self.lazy_proc.wait()
        work = _restore.work_dir(self.layout, self.name, "migrate")
        if rc == 0:
            self.lazy_complete = True
            return dict(ok=True, rc=0, stats=_criu.work_stats(work))
        cause, hint, lines = _criu.classify_work_dir(work, "lazy-pages.log")
        return dict(ok=False, rc=rc, error="lazy pages transfer failed: %s (%s)" % (cause, hint),
                    cause=cause, criu_log=lines)

    def commit(self, _req):
        with self.lock:
            if self.fenced or not self.restored:
                return dict(ok=False, error="nothing to commit (fenced=%s)" % self.fenced)
            _restore.clear_incoming(self.layout, self.name)
            self.committed = True
        if self.incoming:
            shutil.rmtree(self.incoming, ignore_errors=True)
        if self.layout is not None:
            _restore.cleanup_work(_restore.work_dir(self.layout, self.name, "migrate"))
        return dict(ok=True)

    def abort(self, _req):
        """Remove whatever this session restored or received (never a committed container)."""
        if self.committed or self.layout is None:
            return dict(ok=True, removed=False)
        layout, name = self.layout, self.name
        if self.lazy_proc is not None and self.lazy_proc.poll() is None:
            self.lazy_proc.kill()
            self.lazy_proc.wait()
        spec = dict(self.meta["spec"], cgroups_path=cgroups_path(name))
        if self.restored or self.staged:
            with contextlib.suppress(Exception):  # no longer answering for its addresses
                _restore.links_down(spec.get("network"), self.links)
            if self.links is not None:  # (its socket in the netns would keep that alive)
                self.links.close()
                self.links = None
            rt = runtime_for(layout, spec.get("runtime"), self.runtime_path)
            _restore.forget_runtime(rt, name, spec["cgroups_path"])
            _restore.kill_cgroup(spec["cgroups_path"])
            if self.created:
                _restore.remove_created(layout, name, spec, Overlay(layout, name, spec["template"]))
        _restore.cleanup_work(_restore.work_dir(layout, name, "migrate"))
        if self.incoming:
            shutil.rmtree(self.incoming, ignore_errors=True)
        self.restored = self.staged = False
        return dict(ok=True, removed=True)

    def status(self, req):
        layout = Layout(req.get("root"))
        spec = ContainerStore(layout).load(req["name"])
        st = runtime_for(layout, spec.get("runtime"), req.get("runtime_path")).state(req["name"]) \
            if spec else None
        return dict(ok=True, exists=spec is not None, status=(st or {}).get("status", "absent"),
                    pid=(st or {}).get("pid"))

    def fence(self, req):
        """From a new session after the source dropped the old one: make sure the old
        agent (``agent`` = [pid, starttime]) fenced what it staged or restored of
        ``name``. Waits ``wait`` seconds for it to exit, kills it when it did not, then
        removes an uncommitted staging. ``state``: absent, committed (the container
        runs here for good), fenced (removed, by the old agent itself or now), busy
        (another migration owns it)."""
        layout = Layout(req.get("root"))
        old, name = req.get("agent"), req["name"]
        deadline = time.monotonic() + float(req.get("wait") or 10)
        while alive(old) and time.monotonic() < deadline:
            time.sleep(0.02)
        killed = alive(old)
        if killed:
            kill_tree(old[0])
            wait_for(lambda: not alive(old), 10)
        spec = ContainerStore(layout).load(name)
        if spec is None:  # nothing here (any more: the old agent fenced itself)
            return dict(ok=True, state="fenced" if old else "absent", killed=killed)
        marker = spec.get("incoming")
        if not marker:
            st = runtime_for(layout, spec.get("runtime"), req.get("runtime_path")).state(name)
            return dict(ok=True, state="committed", killed=killed,
                        status=(st or {}).get("status", "absent"))
        if list(marker.get("agent") or []) != list(old or []) and alive(marker.get("agent")):
            return dict(ok=True, state="busy", killed=killed, marker=marker)
        _restore.remove_incoming(layout, name, spec, req.get("runtime_path"))
        return dict(ok=True, state="fenced", killed=killed)

    def watchdog(self, requests):
        """Self-fencing: once the session is gone (stdin closed) or the lease ran out,
        kill what the current request runs and let the main loop remove the rest."""
        while True:
            time.sleep(0.05)
            with self.lock:
                provisional = (self.staged or self.restored) and not self.committed \
                    and not self.lazy_complete
                expired = bool(self.lease) and time.monotonic() - self.last_heard > self.lease
                if self.gone and not provisional:
                    return
                if not provisional or not (self.gone or expired):
                    continue
                self.fenced = True
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with self.work:  # only while a request runs, never during the cleanup
                    if not self.busy:
                        break
                    kill_tree(os.getpid(), include_self=False)
                time.sleep(0.05)
            requests.put(None)
            return

    def finish(self):
        """End of session: fence an uncommitted restore; a lazy restore whose pages
        all arrived is this host's for good (the source copy is gone)."""
        if self.lazy_complete and not self.committed and self.layout is not None:
            with contextlib.suppress(Exception):
                _restore.clear_incoming(self.layout, self.name)
            return
        if self.fenced and self.layout is not None:
            self.staged = True  # a cleanup the watchdog cut short is done again, whole
        if (self.restored or self.staged) and not self.committed:
            with contextlib.suppress(Exception):
                self.abort({})


def _incoming_dir(layout, name, cid, config):
    """The directory the source's images (``images/``) and ``config.json`` go to, new."""
    base = layout.checkpoint_dir(name)
    _ckstore.checkpoints_root(layout)
    os.makedirs(base, mode=0o700, exist_ok=True)
    os.chmod(base, 0o700)  # the images hold the container's memory and secrets
    incoming = os.path.join(base, ".incoming-%s" % cid)
    shutil.rmtree(incoming, ignore_errors=True)
    os.makedirs(os.path.join(incoming, "images"), mode=0o700)
    os.chmod(incoming, 0o700)
    if config:
        fd = os.open(os.path.join(incoming, "config.json"),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(config, handle)
    return incoming


def serve(stdin, stdout):
    """JSON-lines loop; returns the exit status."""
    agent = Agent()
    home = agent_dir(__file__)
    if home and agent.me:
        with contextlib.suppress(OSError):
            mark_agent_dir(home, agent.me)
    requests = queue.Queue()
    threading.Thread(target=_read, args=(agent, stdin, requests), daemon=True).start()
    threading.Thread(target=agent.watchdog, args=(requests,), daemon=True).start()
    stdout.write(json.dumps(dict(ok=True, hello=os.uname().nodename, pid=os.getpid(),
                                 agent=list(agent.me))) + "\n")
    stdout.flush()
    try:
        while True:
            req = requests.get()
            if req is None or req.get("op") == "bye" or agent.fenced:
                break
            answer = agent.handle(req)
            if agent.fenced:
                break
            try:
                stdout.write(json.dumps(answer, default=str) + "\n")
                stdout.flush()
            except (BrokenPipeError, OSError):
                break
    finally:
        agent.finish()
    return 0


def _read(agent, stdin, requests):
    """The session's lines into ``requests`` (pings only renew the lease); None at its end."""
    for raw in stdin:
        agent.last_heard = time.monotonic()
        try:
            req = json.loads(raw)
        except ValueError:
            continue
        if req.get("op") != "ping":
            requests.put(req)
    agent.gone = True
    requests.put(None)


if __name__ == "__main__":  # pragma: no cover - started through BOOTSTRAP
    sys.exit(serve(sys.stdin.buffer, sys.stdout))
