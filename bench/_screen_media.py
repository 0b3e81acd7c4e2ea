"""The labelled clips of bench_screen.py, made from real clips with PyAV (apart to keep the bench
under 400 lines): each transformation of a source clip is a known duplicate of it, each still or
camera-only video a known clip without content motion."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


def read_rgb(path: Path) -> tuple[np.ndarray, float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        fps = float(s.average_rate or 24)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return np.stack(frames), fps


def write(path: Path, frames: np.ndarray, fps: float, crf: int = 23) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": str(crf)}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:h, :w]), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def resize(frames: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in frames])


def reencode(frames, fps):
    h, w = frames.shape[1:3]
    return resize(frames, w * 2 // 3, h * 2 // 3), fps, 36  # smaller and at a much lower bitrate


def crop(frames, fps):
    h, w = frames.shape[1:3]
    dy, dx = int(h * 0.08), int(w * 0.08)  # 8 % off, all on one corner's sides
    return frames[:, dy:, dx:], fps, 23


def letterbox(frames, fps):
    h, w = frames.shape[1:3]
    inner = resize(frames, w, int(h * 0.75))
    out = np.zeros_like(frames)
    top = (h - inner.shape[1]) // 2
    out[:, top:top + inner.shape[1]] = inner
    return out, fps, 23


def speed(frames, fps):
    idx = np.round(np.arange(0, len(frames), 1.25)).astype(int)
    return frames[idx[idx < len(frames)]], fps, 23  # 1.25x faster


def subclip(frames, fps):
    n = len(frames)
    return frames[n // 4: n // 4 + max(n // 2, 8)], fps, 23  # a window of the longer clip


DUPLICATE_KINDS = {"reencode": reencode, "crop": crop, "letterbox": letterbox, "speed": speed, "subclip": subclip}


def still(frames, fps):
    return np.stack([frames[len(frames) // 2]] * max(len(frames), 24)), fps, 23


def zoom_pan(frames, fps, pan: bool = False):
    base = frames[len(frames) // 2]
    h, w = base.shape[:2]
    im, out = Image.fromarray(base), []
    n = max(len(frames), 24)
    for k in range(n):
        s = 1 + 0.15 * k / n  # a slow Ken Burns zoom, or a pan across the still
        cw, ch = w / (1.15 if pan else s), h / (1.15 if pan else s)
        x0 = (w - cw) * (k / n if pan else 0.5)
        y0 = (h - ch) * 0.5
        out.append(np.asarray(im.resize((w, h), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))))
    return np.stack(out), fps, 23


STATIC_KINDS = {"still": still, "zoom": zoom_pan, "pan": lambda f, r: zoom_pan(f, r, pan=True)}


def flat_clip(path: Path, kind: str, n: int = 24) -> Path:
    """A black clip, or a title card (white letters on black): frames that carry no information."""
    frames = np.zeros((n, 240, 320, 3), np.uint8)
    if kind == "title":
        frames[:, 110:126, 40:280:12] = 255
    return write(path, frames, 24)


# Image copies of a real frame (RGB): each is a known duplicate of the still it was made from.
def write_still(path: Path, rgb: np.ndarray, quality: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(rgb)).save(path, format="JPEG", quality=quality)
    return path


def image_reencode(rgb):
    h, w = rgb.shape[:2]
    return np.asarray(Image.fromarray(rgb).resize((w * 2 // 3, h * 2 // 3), Image.BILINEAR)), 35  # smaller, low quality


def image_crop(rgb):
    h, w = rgb.shape[:2]
    return rgb[int(h * 0.08):, int(w * 0.08):], 90  # 8 % off, all on one corner's sides


def image_trim(rgb):
    h, w = rgb.shape[:2]
    return rgb[int(h * 0.05):h - int(h * 0.05), int(w * 0.05):w - int(w * 0.05)], 90  # 5 % off every side


def image_letterbox(rgb):
    h, w = rgb.shape[:2]
    inner = np.asarray(Image.fromarray(rgb).resize((w, int(h * 0.75)), Image.BILINEAR))
    out = np.zeros_like(rgb)
    top = (h - inner.shape[0]) // 2
    out[top:top + inner.shape[0]] = inner
    return out, 90


IMAGE_KINDS = {"reencode": image_reencode, "crop": image_crop, "trim": image_trim, "letterbox": image_letterbox}
