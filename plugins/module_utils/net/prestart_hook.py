# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The network of an unprivileged container, set up while the runtime makes it.

An unprivileged container's network namespace must belong to its user namespace.
At a restore CRIU makes the user namespace first (from the images), so a network
namespace made beforehand cannot be joined (it belongs to another user namespace).
So the runtime makes that network namespace, at every start and every restore
(``--empty-ns network``: CRIU makes it empty), and the container's interfaces are
put in while the runtime waits, before any process of the container runs (a start)
or any socket is restored (a restore): the OCI ``prestart`` hook, which runc runs
at both points (a restore: CRIU's ``setup-namespaces`` step) with the new pid.

The hook (``HOOK_SOURCE``, a bash script: a few milliseconds, no second interpreter)
only hands the pid over and waits: it writes ``pid`` into ``/run/ctrhost/nethook/<name>/``
and reads ``done`` or ``failed`` from the FIFO ``go`` there. The library process that runs the runtime watches that
directory (``Birth``, a thread) and does the work with its own code: the namespace
bind-mounted at ``/run/netns/ctrhost-<name>``, ``lo`` up, the interfaces attached.
A failure there makes the hook fail, so the runtime fails the start or restore and
its caller cleans up as for any other failure. A runtime started by anything but
this library finds no waiting directory, and the hook fails at once, saying so.
"""

from __future__ import annotations

import os
import shutil
import threading
import time

from ansible_collections.ctrhost.fleet.plugins.module_utils.linux import syscall as _syscall
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.errors import CtrhostError
from ansible_collections.ctrhost.fleet.plugins.module_utils.core.paths import Layout

# How long the hook waits for the library (a slow host attaching several interfaces).
TIMEOUT = 120
POLL = 0.002
# The hook, run by bash at every start and restore: no second interpreter, no fork (the
# pid is read from the runtime's state with bash's own regex; the answer comes through a
# FIFO the hook holds open read-write, so neither side's open blocks).
HOOK_SOURCE = r"""
d=$1
if [ ! -p "$d/go" ]; then
    echo "ctrhost: nothing sets up this container's network ($d is missing): start and restore it with ctrhost.fleet" >&2
    exit 1
fi
exec 3<>"$d/go"
IFS= read -r -d '' state
if [[ ! $state =~ \"pid\":[[:space:]]*([0-9]+) ]]; then
    echo "ctrhost: the runtime's state on the hook's input has no pid" >&2
    exit 1
fi
printf '%s\n' "${BASH_REMATCH[1]}" >"$d/pid"
if ! IFS= read -r -t "$2" answer <&3; then
    echo "ctrhost: the container's network was not set up within $2 s" >&2
    exit 1
fi
[ "$answer" = done ] && exit 0
IFS= read -r -d '' why <"$d/failed"
echo "ctrhost: $why" >&2
exit 1
"""


def prestart_hook(name, directory=None):
    """The OCI ``prestart`` hook entry of container ``name`` (``directory``: where it
    meets the library, ``/run/ctrhost/nethook/<name>`` unless given)."""
    bash = shutil.which("bash") or "/bin/bash"
    return {"path": bash, "args": ["bash", "-c", HOOK_SOURCE, "ctrhost-nethook",
                                   directory or Layout.nethook_dir(name), str(TIMEOUT)],
            "timeout": TIMEOUT + 10}


def with_hook(cfg, name):
    """``cfg`` (an OCI config, changed in place) with this library's hook as its only
    prestart hook; returned."""
    hooks = cfg.setdefault("hooks", {})
    hooks["prestart"] = [prestart_hook(name)]
    return cfg


class Birth:
    """While the runtime runs (``with``): the container's namespaces handed to
    ``configure(pid)`` when the hook reports the pid. An error of ``configure`` fails
    the hook, and is raised again when the block ends."""

    def __init__(self, name, configure, directory=None):
        self.dir = directory or Layout.nethook_dir(name)
        self.configure = configure
        self.error = None
        self.pid = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir, mode=0o700)
        os.mkfifo(os.path.join(self.dir, "go"), 0o600)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        self._stop.set()
        self._thread.join()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.error is not None:
            raise self.error

    def _watch(self):
        path = os.path.join(self.dir, "pid")
        while not self._stop.is_set():
            try:
                with open(path) as handle:
                    text = handle.read()
            except FileNotFoundError:
                text = ""
            if text.endswith("\n"):  # written whole
                self._answer(int(text))
                return
            time.sleep(POLL)

    def _answer(self, pid):
        self.pid = pid
        try:
            self.configure(self.pid)
        except Exception as exc:  # any failure is the hook's answer
            self.error = exc if isinstance(exc, CtrhostError) else CtrhostError(
                "network of the new container: %s" % exc)
            leaf, text = "failed", str(exc)
        else:
            leaf, text = "done", ""
        if text:
            with open(os.path.join(self.dir, "failed"), "w") as handle:
                handle.write(text)
        try:  # the hook holds the FIFO open since before it wrote the pid
            fd = os.open(os.path.join(self.dir, "go"), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:  # ENXIO: the hook is gone (the runtime's timeout killed it)
            return
        try:
            os.write(fd, (leaf + "\n").encode())
        finally:
            os.close(fd)


def adopt(name, pid):
    """The network namespace of process ``pid`` bind-mounted at the container's netns
    path (a stale one there first removed), ``lo`` up; its path."""
    path = Layout.netns_path(name)
    _syscall.ns_remove(path)
    _syscall.ns_bind("/proc/%d/ns/net" % pid, path, share=True)
    _syscall.netns_lo_up(path)
    return path
