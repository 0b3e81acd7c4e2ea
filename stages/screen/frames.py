"""A few small grey frames per video, decoded cheaply, on a fixed time grid.

decord decodes straight to a small size (its scaler runs inside the decode, so no full-size RGB
frame is ever copied out) and ``get_batch`` seeks to the keyframe before each wanted frame. The
grid is in seconds, not frame indices, so a re-encode at another frame rate, a speed change or a
window of the same footage lands on frames of the same content.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from stages.media.locate import MediaError, locate
from stages.media.locate import short_error as _short
from stages.media.read import read_image

SIDE = 96  # frames are decoded to SIDE x SIDE grey (the aspect is not kept: hashes and flow need no more)


@dataclass
class Frames:
    gray: np.ndarray  # float32 [n, SIDE, SIDE], 0..255
    times: np.ndarray  # float32 [n], seconds from the start of the clip (window)


def grid(duration_s: float, step_s: float, max_frames: int) -> np.ndarray:
    """Times (s) of the frames to read: every ``step_s`` (wider on long clips), centred in each step."""
    step = max(step_s, duration_s / max_frames) if duration_s > 0 else step_s
    n = max(1, min(max_frames, int(duration_s / step))) if duration_s > 0 else 1
    return ((np.arange(n) + 0.5) * step).astype(np.float32)


def _gray(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114).astype(np.float32)


def read_video(uri: str, roots: list[str] | None, step_s: float, max_frames: int,
               start_s: float | None = None, end_s: float | None = None) -> Frames:
    """Grey SIDE x SIDE frames of a video (or of its window [start_s, end_s))."""
    import decord

    src = locate(uri, roots)
    if isinstance(src, io.BytesIO):
        src.seek(0)
    try:
        reader = decord.VideoReader(src, ctx=decord.cpu(0), width=SIDE, height=SIDE, num_threads=1)
        n, fps = len(reader), float(reader.get_avg_fps())
    except Exception as e:  # decord raises RuntimeError, DECORDError ...
        raise MediaError("undecodable", f"screen decode: {_short(e)}") from None
    if not n or not fps:
        raise MediaError("undecodable", f"no frames or no frame rate ({n} frames, {fps} fps)")
    start = max(0.0, start_s or 0.0)
    end = min(n / fps, end_s) if end_s is not None else n / fps
    times = grid(max(end - start, 0.0), step_s, max_frames)
    idx = np.clip(np.round((start + times) * fps - 0.5).astype(int), 0, n - 1)
    unique, inverse = np.unique(idx, return_inverse=True)
    try:
        rgb = reader.get_batch(unique.tolist()).asnumpy()
    except Exception as e:
        raise MediaError("undecodable", f"screen decode: {_short(e)}") from None
    return Frames(_gray(rgb.astype(np.float32))[inverse], times)


def read_still(uri: str, roots: list[str] | None) -> Frames:
    """An image as one SIDE x SIDE grey frame."""
    from PIL import Image

    rgb = read_image(locate(uri, roots))[0]
    small = np.asarray(Image.fromarray(rgb).resize((SIDE, SIDE), Image.BILINEAR), np.float32)
    return Frames(_gray(small)[None], np.zeros(1, np.float32))


def read_media(uri: str, modality: str, roots: list[str] | None, step_s: float, max_frames: int,
               start_s: float | None = None, end_s: float | None = None) -> Frames:
    if modality == "image":
        return read_still(uri, roots)
    return read_video(uri, roots, step_s, max_frames, start_s, end_s)
