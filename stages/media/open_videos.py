"""Videos kept open between the samples of a unit, so a stage opens each source video once.

Koala-36M's windows of one YouTube video are separate samples, planned into the same unit in time
order; an edit pair's videos are read by more than one key. Opening a ``Video`` indexes the whole
file (decord and the forward reader each demux every packet), and a fresh decoder must restart at
a keyframe; a kept one continues forward from the last window (stages/media/forward_read.py). So
the judge's request building and the encode stage's decode take their videos from here.

Bounded: at most ``capacity`` videos per process (the least recently used is dropped, and with it
its decoders and, for in-memory sources, its bytes). A video is checked out while a thread reads
it, so two threads never share a decoder: a second reader of the same file opens its own, and the
one returned last is kept. An entry is found again only for the same uri, reader settings and
file (path: inode, size and mtime; bytes: length and CRC-32), so a rewritten file is re-opened.
"""
from __future__ import annotations

import io
import os
import threading
import zlib
from collections import OrderedDict
from contextlib import contextmanager

from stages.media.read import Video

DEFAULT_CAPACITY = 8


def _identity(src: str | io.BytesIO) -> tuple:
    if isinstance(src, io.BytesIO):
        data = src.getbuffer()
        try:
            return ("bytes", len(data), zlib.crc32(data))
        finally:
            del data  # a live export would block the BytesIO from being resized or closed
    st = os.stat(src)
    return ("path", st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class OpenVideos:
    def __init__(self, capacity: int = DEFAULT_CAPACITY):
        self.capacity = capacity
        self._items: OrderedDict[tuple, Video] = OrderedDict()
        self._lock = threading.Lock()
        self.opened = 0  # Videos constructed (for benchmarks and tests)

    @contextmanager
    def use(self, uri: str, src: str | io.BytesIO, backend: str = "decord", frames: int | None = None,
            fps: float | None = None):
        """The ``Video`` of ``src`` (found by ``stages.media.locate`` from ``uri``), open while the
        block runs; raises what ``Video`` raises."""
        key = (uri, backend, frames, fps, _identity(src))
        with self._lock:
            video = self._items.pop(key, None)
        if video is None:
            video = Video(src, backend, frames, fps)
            self.opened += 1
        try:
            yield video
        finally:
            with self._lock:
                self._items[key] = video
                self._items.move_to_end(key)
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


# One per process: the units a worker runs one after another share it.
VIDEOS = OpenVideos()
