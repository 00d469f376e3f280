# -*- coding: utf-8 -*-
# Copyright: ctrhost.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""CRIU's page images followed while CRIU still writes them.

CRIU appends to its page images (``pages-N.img``, splice at the file position) and a
file's size grows only once its bytes are in, so what lies below the size seen is
final. ``PageFollower`` runs one thread that looks at a directory every ``interval``
seconds and hands what each page image gained since the last look to ``ship`` (a
subclass's: a copy to disk, ``checkpoint.window.Follower``; a stream to another host,
``migrate.pages.PageStream``). ``done`` holds the bytes shipped per image.
"""

from __future__ import annotations

import os
import re
import threading

PAGE_IMAGE = re.compile(r"^pages-\d+\.img$")


def is_page_image(leaf):
    return bool(PAGE_IMAGE.match(leaf))


class PageFollower:
    """Follows the page images of ``src``; subclasses define ``ship``."""

    ERRORS = (OSError,)  # what ends the thread; kept in ``error`` for the caller

    def __init__(self, src=None, interval=0.005):
        self.src, self.interval = src, interval
        self.done = {}  # page image -> bytes shipped
        self.error = None
        self._stop = threading.Event()
        self._thread = None

    def start(self, src=None):
        """Follow ``src`` (or the directory given at construction) from now on."""
        if src is not None:
            self.src = src
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            try:
                self.step()
            except self.ERRORS as exc:  # the caller's finish() copes, or raises it
                self.error = exc
                return
            self._stop.wait(self.interval)

    def step(self):
        """Ship what every page image gained since the last look."""
        for leaf in sorted(os.listdir(self.src)):
            if is_page_image(leaf):
                self.take(leaf)

    def take(self, leaf):
        start = self.done.get(leaf, 0)
        fdin = os.open(os.path.join(self.src, leaf), os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fdin).st_size
            if size <= start and leaf in self.done:
                return
            self.done[leaf] = self.ship(leaf, fdin, start, size)
        finally:
            os.close(fdin)

    def ship(self, leaf, fdin, start, size):
        """Ship bytes ``start:size`` of ``leaf`` (open as ``fdin``); the new offset."""
        raise NotImplementedError

    def stop(self):
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
