"""Frames of one sample for the threshold contact sheets: a few source and edited frames side by
side, read with the encode stage's readers (``stages.encode.decode``) inside the dataset roots."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

CELL_H = 72
PAD = 3
BG, FG = (24, 24, 24), (235, 235, 235)


def _indices(frames: int, fps: float | None, start_s: float | None, end_s: float | None, n: int) -> list[int]:
    """n frames spread over the clip, or over its window (Koala clips are windows of a video)."""
    lo, hi = 0, max(frames - 1, 0)
    if fps and start_s is not None:
        lo = min(hi, int(start_s * fps))
        if end_s is not None:
            hi = max(lo, min(hi, int(end_s * fps) - 1))
    return sorted(set(np.linspace(lo, hi, n).round().astype(int).tolist()))


def read_frames(sample: dict, role: str, roots: list[str] | None, n: int = 3) -> np.ndarray | None:
    """uint8 [k, H, W, 3] of the sample's ``role`` (source / target), or None when it has none."""
    from stages.media.locate import locate
    from stages.media.read import Video, read_image

    if not sample.get(f"{role}_uri"):
        return None
    src = locate(sample[f"{role}_uri"], roots)
    if sample.get("modality") == "image":
        return read_image(src)
    video = Video(src, "decord", sample.get(f"{role}_frames"), sample.get(f"{role}_fps"))
    return video.read(_indices(video.frames, video.fps, sample.get("clip_start_s"), sample.get("clip_end_s"), n))


def _cell(frame: np.ndarray) -> Image.Image:
    img = Image.fromarray(frame)
    return img.resize((max(1, round(img.width * CELL_H / img.height)), CELL_H), Image.BILINEAR)


def strip(sample: dict, roots: list[str] | None) -> bytes:
    """PNG: a row 'source' (when the sample has one) and a row 'edited' / 'clip' of frames."""
    rows = []
    for role, label in (("source", "source"), ("target", "edited" if sample.get("source_uri") else "clip")):
        try:
            frames = read_frames(sample, role, roots)
        except Exception as e:  # media moved or unreadable: the sheet says so instead of failing the page
            rows.append((label, None, f"{type(e).__name__}: {str(e)[:60]}"))
            continue
        if frames is not None:
            rows.append((label, [_cell(f) for f in frames], None))
    width = 64 + max((sum(c.width + PAD for c in cells) for _, cells, _ in rows if cells), default=300)
    sheet = Image.new("RGB", (width, len(rows) * (CELL_H + PAD) + PAD), BG)
    draw = ImageDraw.Draw(sheet)
    for r, (label, cells, err) in enumerate(rows):
        y = PAD + r * (CELL_H + PAD)
        draw.text((PAD, y + 4), label, fill=FG)
        if err:
            draw.text((64, y + 4), err, fill=(255, 120, 90))
            continue
        x = 64
        for c in cells:
            sheet.paste(c, (x, y))
            x += c.width + PAD
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()
