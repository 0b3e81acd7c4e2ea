"""Media for fixtures and the demo: bundled real clips, generated H.264 video and images.

H.264 is written with PyAV (opencv's H.264 writer does not work on these machines).
"""
from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

CLIPS_DIR = Path(__file__).resolve().parents[3] / "demo" / "clips"


@dataclass(frozen=True)
class RealPair:
    id: str
    source: Path
    edited: Path | None
    instruction: str
    category: str


def real_pairs() -> list[RealPair]:
    """The bundled real edit pairs (Apache-2.0, see demo/clips/LICENSE.md), in a fixed order."""
    out = []
    for line in (CLIPS_DIR / "pairs.jsonl").read_text().splitlines():
        rec = json.loads(line)
        src = CLIPS_DIR / Path(rec["source"]).name
        edited = CLIPS_DIR / Path(rec["edited"]).name
        out.append(RealPair(rec["id"], src, edited if edited.exists() else None,
                            rec["instruction"], rec["category"]))
    return sorted(out, key=lambda p: p.id)


def copy_clip(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        shutil.copyfile(src, dst)
    return dst


def synthetic_frames(n: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """A moving gradient with a bouncing square: cheap, deterministic, and has real motion."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=3)
    yy, xx = np.mgrid[0:height, 0:width]
    frames = np.empty((n, height, width, 3), dtype=np.uint8)
    for t in range(n):
        frames[t, ..., 0] = (xx * 255 // max(width - 1, 1) + 4 * t + base[0]) % 256
        frames[t, ..., 1] = (yy * 255 // max(height - 1, 1) + base[1]) % 256
        frames[t, ..., 2] = base[2]
        s = max(min(width, height) // 6, 2)
        x0 = (t * 7) % max(width - s, 1)
        y0 = (t * 5) % max(height - s, 1)
        frames[t, y0:y0 + s, x0:x0 + s] = 255
    return frames


def write_video(path: Path, frames: np.ndarray, fps: float = 24, codec: str = "libx264") -> Path:
    """Encode RGB frames (T, H, W, 3) to mp4 with PyAV. Even sides are required by yuv420p."""
    path.parent.mkdir(parents=True, exist_ok=True)
    from fractions import Fraction

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "28"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def synthetic_video(path: Path, n: int = 17, width: int = 320, height: int = 192,
                    fps: float = 24, seed: int = 0, codec: str = "libx264") -> Path:
    if not path.exists():
        write_video(path, synthetic_frames(n, width, height, seed), fps=fps, codec=codec)
    return path


def image_bytes(width: int = 128, height: int = 96, seed: int = 0, fmt: str = "JPEG") -> bytes:
    arr = synthetic_frames(1, width, height, seed)[0]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, quality=90) if fmt == "JPEG" else Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def write_image(path: Path, width: int = 128, height: int = 96, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
        path.write_bytes(image_bytes(width, height, seed, fmt))
    return path
