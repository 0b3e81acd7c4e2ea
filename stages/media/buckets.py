"""Aspect-ratio buckets and fitting frames to one: resize to cover, then centre-crop.

Every sample is trained at one of a few pixel sizes of about the same area (480p class: 832x480 =
399,360 pixels) so batches of one bucket stack without padding. A clip goes to the bucket nearest
to its aspect ratio in log space (4:3 is as far from 1:1 as 1:1 is from 3:4), is resized so the
bucket is covered, and the overhang is cut off equally on both sides.
"""
from __future__ import annotations

import math

import numpy as np


def generate_buckets(area: int, multiple: int, min_aspect: float, max_aspect: float) -> list[tuple[int, int]]:
    """The [W, H] buckets of about ``area`` pixels with sides multiples of ``multiple``.

    For every width (a multiple) the height nearest to ``area / width`` is taken, and kept only when
    that width is in turn the nearest for the height (mutual nearest): this gives one bucket per
    aspect step, symmetric under transposition (832x480 and 480x832), without near-duplicates such as
    800x512 beside 768x512. Sorted from the tallest to the widest.
    """
    def nearest(other: int) -> int:
        return max(multiple, int(round(area / other / multiple)) * multiple)

    widest = int(math.sqrt(area * max_aspect)) + multiple
    out = set()
    for w in range(multiple, widest + multiple, multiple):
        h = nearest(w)
        if nearest(h) == w and min_aspect - 1e-9 <= w / h <= max_aspect + 1e-9:
            out.add((w, h))
    return sorted(out, key=lambda b: (b[0] / b[1], b[0]))


def check_buckets(buckets: list[tuple[int, int]], multiple: int, min_aspect: float, max_aspect: float) -> None:
    """Raise ValueError (naming encode.buckets) for a list the VAE / DiT cannot take."""
    if not buckets:
        raise ValueError("encode.buckets: empty; give [W, H] pairs or leave it unset to generate them")
    for b in buckets:
        if len(b) != 2:
            raise ValueError(f"encode.buckets: {list(b)} is not a [W, H] pair")
        w, h = b
        if w <= 0 or h <= 0 or w % multiple or h % multiple:
            raise ValueError(f"encode.buckets: {w}x{h}: sides must be positive multiples of "
                             f"encode.side_multiple ({multiple})")
        if not min_aspect - 1e-9 <= w / h <= max_aspect + 1e-9:
            raise ValueError(f"encode.buckets: {w}x{h} has aspect {w / h:.3f}, outside "
                             f"[{min_aspect}, {max_aspect}] (encode.min_aspect / max_aspect)")
    if len(set(map(tuple, buckets))) != len(buckets):
        raise ValueError("encode.buckets: a bucket is listed twice")


def bucket_name(bucket: tuple[int, int]) -> str:
    return f"{bucket[0]}x{bucket[1]}"


def nearest_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest in log space; ties go to the earlier bucket."""
    ratio = math.log(width / height)
    return min(buckets, key=lambda b: abs(math.log(b[0] / b[1]) - ratio))


def cover_size(width: int, height: int, bucket: tuple[int, int]) -> tuple[int, int]:
    """(W, H) after scaling (aspect kept) so that the bucket is just covered."""
    bw, bh = bucket
    scale = max(bw / width, bh / height)
    # ceil with a tolerance: 1280x720 -> 832 wide is exactly 468 high, not 469.
    return max(bw, math.ceil(width * scale - 1e-6)), max(bh, math.ceil(height * scale - 1e-6))


def fit_to_bucket(frames: np.ndarray, bucket: tuple[int, int]) -> np.ndarray:
    """uint8 frames [T, H, W, 3] resized to cover ``bucket`` and centre-cropped to it: [T, bh, bw, 3].

    The resize is antialiased bilinear on uint8 (torchvision's vectorised path: an area-like filter
    when shrinking, several times faster than PIL per frame).
    """
    # torch is imported here, not at the top: the registry imports this module through the
    # encode stage, and `curate status` / `curate report` must not pay torch's seconds and memory.
    import torch
    import torchvision.transforms.v2.functional as TF

    t, h, w, _ = frames.shape
    bw, bh = bucket
    cw, ch = cover_size(w, h, bucket)
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    if (cw, ch) != (w, h):
        x = TF.resize(x, [ch, cw], antialias=True)
    top, left = (ch - bh) // 2, (cw - bw) // 2
    x = x[:, :, top:top + bh, left:left + bw]
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())
