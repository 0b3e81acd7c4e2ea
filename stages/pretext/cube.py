"""Cube inpainting: mask spatio-temporal boxes of the source clip.

``layout="cubes"`` (paper): boxes of ``cube_size`` are placed at random (overlaps allowed) until
at least ``cube_mask_ratio`` of the T*H*W pixel positions are masked; the last box is narrowed
so that the clip overshoots by less than one column of one box. The achieved ratio is recorded. A box's origin along an axis of
length D is drawn over ``[-(c-1), D-1]`` and the box clipped to the clip: then each of the D
positions is covered by exactly c of the D+c-1 origins, so every frame, row and column is equally
likely to be masked. (Origins over ``[0, D-c]`` cover the edges c times less often than the
middle: the model would learn that edges are never missing.)
``layout="temporal_block"`` (the public SAMA code): one contiguous run of whole frames,
``round(ratio * T)`` long (at least 1, at most T-1), that never includes frame 0.
"""
from __future__ import annotations

import math

import numpy as np


class PretextError(ValueError):
    """The clip cannot take this operator (e.g. too few frames); the caller records an error row."""


def cube_extent(cfg, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Box size (t, h, w) in frames/pixels for a clip of ``shape`` (T, H, W), clipped to it."""
    out = []
    for size, dim in zip(cfg.cube_size, shape):
        n = round(size * dim) if cfg.cube_size_unit == "fraction" else round(size)
        out.append(int(min(dim, max(1, n))))
    return tuple(out)


def fill_value(cfg, frames: np.ndarray) -> list[int]:
    if cfg.cube_fill == "zero":
        return [0, 0, 0]
    if cfg.cube_fill == "grey":
        return [128, 128, 128]
    return [int(v) for v in np.rint(frames.reshape(-1, frames.shape[-1]).mean(axis=0))]


def place_boxes(cfg, shape: tuple[int, int, int], rng: np.random.Generator) -> tuple[list[list[int]], int]:
    """(boxes ``[t0, t1, h0, h1, w0, w1]`` (half-open) covering the configured ratio of ``shape``,
    positions they mask)."""
    T, H, W = shape
    if cfg.cube_layout == "temporal_block":
        if T < 2:
            raise PretextError(f"cube temporal_block needs >= 2 frames (frame 0 is never masked), got {T}")
        n = min(T - 1, max(1, round(cfg.cube_mask_ratio * T)))
        t0 = int(rng.integers(1, T - n + 1))
        return [[t0, t0 + n, 0, H, 0, W]], n * H * W
    ct, ch, cw = cube_extent(cfg, shape)
    mask = np.zeros(shape, dtype=bool)
    goal = math.ceil(cfg.cube_mask_ratio * T * H * W)
    masked, boxes = 0, []
    while masked < goal:
        box = []
        for c, dim in ((ct, T), (ch, H), (cw, W)):
            start = int(rng.integers(-(c - 1), dim))  # over [-(c-1), dim-1]; never empty after clipping
            box += [max(0, start), min(dim, start + c)]
        t0, t1, h0, h1, w0, w1 = box
        view = mask[t0:t1, h0:h1, w0:w1]
        new_per_column = np.cumsum((~view).sum(axis=(0, 1)))
        if masked + int(new_per_column[-1]) > goal:
            # The box that reaches the goal is cut after the first column that reaches it, so a
            # clip overshoots by less than one column of one box (not a whole box: up to 1.6%
            # at the default size); the cut box's origin stays uniform, so coverage stays flat.
            w1 = w0 + int(np.searchsorted(new_per_column, goal - masked)) + 1
            box[5] = w1
            view = mask[t0:t1, h0:h1, w0:w1]
        masked += int(view.size - np.count_nonzero(view))
        view[...] = True
        boxes.append(box)
    return boxes, masked


def mask_from_boxes(boxes: list[list[int]], shape: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for t0, t1, h0, h1, w0, w1 in boxes:
        mask[t0:t1, h0:h1, w0:w1] = True
    return mask


def apply_cube(frames: np.ndarray, record: dict) -> np.ndarray:
    """The masked source: ``record``'s boxes filled with its fill value (a new array)."""
    out = frames.copy()
    fill = [int(v) for v in record["fill_value"]]
    for t0, t1, h0, h1, w0, w1 in record["boxes"]:
        box = out[t0:t1, h0:h1, w0:w1]
        # A scalar fill (grey levels) is a plain memset; broadcasting a 3-vector over the box is
        # ~20x slower at 480p, so a colour fill goes channel by channel.
        if len(set(fill)) == 1:
            box[...] = fill[0]
        else:
            for c, v in enumerate(fill):
                box[..., c] = v
    return out


def cube_inpainting(frames: np.ndarray, cfg, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    shape = tuple(int(s) for s in frames.shape[:3])
    boxes, masked = place_boxes(cfg, shape, rng)
    ratio = masked / (shape[0] * shape[1] * shape[2])
    record = {
        "op": "cube", "layout": cfg.cube_layout, "target_ratio": cfg.cube_mask_ratio,
        "mask_ratio": round(ratio, 6), "cube_size": list(cube_extent(cfg, shape)),
        "fill": cfg.cube_fill, "fill_value": fill_value(cfg, frames), "boxes": boxes,
    }
    return apply_cube(frames, record), record
