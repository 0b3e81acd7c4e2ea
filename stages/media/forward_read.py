"""Decoding only the frames a stage asks for, in forward passes (PyAV).

H.264/HEVC frames decode from their keyframe onward, so a few frames spread over a clip cost
nearly a full decode when read naively, and a window deep inside a long video costs everything
before it. ``ForwardReader`` keeps one open container and its packet index and, for wanted frames
in ascending order:

- seeks to the keyframe before a wanted frame only when that keyframe lies ahead of where the
  decoder already is (or the frame lies behind it), otherwise keeps decoding forward, so windows
  of one video read in time order cost one forward pass over the spans they need;
- tells the decoder to drop non-reference frames it is not asked for (``skip_frame=NONREF``):
  nothing else depends on them, so the frames returned are bit-identical to a full decode.

Frames are numbered by presentation order (the rank of their pts), as decord numbers them; the
RGB conversion is FFmpeg's (the same swscale path decord takes: tests check equality). One
converter serves all frames of a reader: ``frame.to_ndarray(format=...)`` builds a new swscale
context for every frame, which cost four times the conversion itself, and swscale's default of
one thread per core only adds wake-ups for a row-local conversion (same bytes either way).

It refuses (``Unsupported``) files it cannot index exactly: no pts on some packet, duplicate pts,
a pixel format other than the plain 4:2:0 checked against decord. ``stages.media.read.Video``
then falls back to its decord / PyAV path, so error rows and pixels never depend on this module.
"""
from __future__ import annotations

import bisect
import io

import numpy as np

# Codecs whose decoder honours skip_frame=NONREF with the meaning "a frame nothing refers to".
SKIPPABLE_CODECS = ("h264", "hevc")
EXACT_PIXEL_FORMATS = ("yuv420p",)


def packet_index_problem(pts: list[int], keyframe_pts: list[int]) -> str | None:
    """Why the packets (pts of every packet with data, and of its keyframes) cannot be indexed
    exactly, or None. The probe asks the same of its own demux (stages/probe/core.py)."""
    ordered = sorted(pts)
    if len(set(ordered)) != len(ordered) or not ordered:
        return "duplicate or missing pts"
    if ordered[0] not in set(keyframe_pts):
        return "the first frame is not a keyframe"
    return None


def reads_exactly(codec: str | None, pix_fmt: str | None) -> bool:
    """Whether a file of this codec and pixel format is read by ``ForwardReader`` alone when its
    packets index exactly: H.264/HEVC in plain 4:2:0 (the formats checked against decord)."""
    return codec in SKIPPABLE_CODECS and pix_fmt in EXACT_PIXEL_FORMATS


class Unsupported(Exception):
    """This file is not one the forward reader reads exactly; use the general path."""


class ForwardReader:
    """One open video; ``read(indices)`` returns RGB frames by presentation index."""

    def __init__(self, src: str | io.BytesIO):
        import av

        if isinstance(src, io.BytesIO):
            src.seek(0)
        self._container = av.open(src, metadata_errors="replace")
        try:
            self._stream = self._container.streams.video[0]
            self._ctx = self._stream.codec_context
            if self._ctx.pix_fmt not in EXACT_PIXEL_FORMATS:
                raise Unsupported(f"pixel format {self._ctx.pix_fmt}")
            self._ctx.thread_type = "SLICE"  # frame threads would reorder skip_frame changes
            self._skip_ok = self._ctx.name in SKIPPABLE_CODECS
            from av.video.reformatter import VideoReformatter

            self._rgb = VideoReformatter()  # keeps its swscale context from frame to frame
            # What the container declares (0 when it does not): the frame count and rate decord
            # and PyAV report, so a Video that reads through this reader needs no other opener.
            self.declared_frames = int(self._stream.frames or 0)
            rate = self._stream.average_rate
            self.average_rate = float(rate) if rate else 0.0
            self._index()
        except BaseException:
            self._container.close()
            raise
        self._packets = None  # demux iterator of the current forward pass
        self._front = None  # presentation index last seen in this pass (None: must seek first)
        self._floor = 0  # frames below this index in the current pass may be wrong (before its keyframe)

    def _index(self) -> None:
        pts, keys = [], []
        for packet in self._container.demux(self._stream):
            if not packet.size:
                continue
            if packet.pts is None:
                raise Unsupported("a packet without pts")
            pts.append(packet.pts)
            if packet.is_keyframe:
                keys.append(packet.pts)
        problem = packet_index_problem(pts, keys)
        if problem:
            raise Unsupported(problem)
        ordered = sorted(pts)
        self.rank = {p: i for i, p in enumerate(ordered)}
        self.pts_of = ordered
        self.keyframes = sorted(self.rank[p] for p in keys)  # presentation indices
        self.frames = len(ordered)

    def close(self) -> None:
        self._container.close()

    def _keyframe_before(self, index: int) -> int:
        return self.keyframes[bisect.bisect_right(self.keyframes, index) - 1]

    def _seek(self, keyframe: int) -> None:
        self._container.seek(self.pts_of[keyframe], stream=self._stream, backward=True, any_frame=False)
        self._ctx.flush_buffers()
        self._packets = self._container.demux(self._stream)
        self._front, self._floor = keyframe - 1, keyframe

    def read(self, indices: list[int]) -> np.ndarray:
        """uint8 [len(indices), H, W, 3]; raises Unsupported / FFmpegError / KeyError when a frame
        cannot be produced (the caller falls back)."""
        unique = sorted(set(indices))
        if not unique or unique[0] < 0 or unique[-1] >= self.frames:
            raise Unsupported(f"frames {unique[:1]}..{unique[-1:]} outside 0..{self.frames - 1}")
        got: dict[int, np.ndarray] = {}
        remaining = set(unique)
        for want in unique:
            if want in got:
                continue
            key = self._keyframe_before(want)
            if self._front is None or want <= self._front or key > self._front:
                self._seek(key)
            self._forward_until(want, remaining, got)
        return np.stack([got[i] for i in indices])

    def _forward_until(self, want: int, remaining: set[int], got: dict) -> None:
        ctx = self._ctx
        while want not in got:
            packet = next(self._packets, None)
            if packet is None:
                raise Unsupported(f"frame {want} never came out of the decoder")
            if packet.size:
                needed = self.rank.get(packet.pts) in remaining
                if self._skip_ok:
                    ctx.skip_frame = "DEFAULT" if needed else "NONREF"
                frames = ctx.decode(packet)
            else:  # end of stream: drain what the decoder still holds
                frames = ctx.decode(None)
                self._packets = iter(())
            for frame in frames:
                j = self.rank.get(frame.pts)
                if j is None:
                    raise Unsupported("a decoded frame with an unknown pts")
                self._front = j if self._front is None else max(self._front, j)
                if j in remaining and j >= self._floor:
                    got[j] = self._rgb.reformat(frame, format="rgb24", threads=1).to_ndarray()
                    remaining.discard(j)
