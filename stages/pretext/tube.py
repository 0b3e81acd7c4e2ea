"""Tube shuffle: cut the source clip into a (t, h, w) grid of equal tubes and permute them.

When T, H or W is not a multiple of the grid, the tubes are ``floor(dim / grid)`` long and only
the leading ``grid * floor(dim / grid)`` frames/rows/columns (the region) are shuffled; the
trailing remainder stays where it is (with 4n+1 frames and a temporal grid of 2 that is the last
frame). Tubes are numbered row-major over (t, h, w); output tube ``i`` is input tube
``permutation[i]``; the permutation is never the identity.
"""
from __future__ import annotations

import numpy as np

from stages.pretext.cube import PretextError


def tube_geometry(grid: tuple[int, int, int], shape: tuple[int, int, int]) -> tuple[list[int], list[int]]:
    """(tube size, shuffled region) for a clip of ``shape`` (T, H, W)."""
    size = [dim // g for dim, g in zip(shape, grid)]
    if min(size) < 1:
        raise PretextError(f"tube_grid {list(grid)} is larger than the clip {list(shape)} (T, H, W)")
    return size, [s * g for s, g in zip(size, grid)]


def random_permutation(n: int, rng: np.random.Generator) -> list[int]:
    """A uniform random permutation of ``n`` >= 2 items, redrawn until it is not the identity."""
    while True:
        perm = rng.permutation(n)
        if np.any(perm != np.arange(n)):
            return [int(i) for i in perm]


def apply_tube(frames: np.ndarray, record: dict, inverse: bool = False) -> np.ndarray:
    """Permute ``frames`` as ``record`` says (``inverse``: undo it). Returns a new array.

    Each tube is one slice copy into its place (every pixel read and written once: no full-clip
    temporaries, which matters at 81 x 480 x 832).
    """
    gt, gh, gw = record["grid"]
    tt, th, tw = record["tube_size"]
    rt, rh, rw = record["region"]
    perm = np.asarray(record["permutation"])
    if inverse:
        perm = np.argsort(perm)
    out = np.empty_like(frames)
    # the remainder the grid does not divide stays in place
    out[rt:] = frames[rt:]
    out[:rt, rh:] = frames[:rt, rh:]
    out[:rt, :rh, rw:] = frames[:rt, :rh, rw:]

    def block(i: int) -> tuple[slice, slice, slice]:
        t, h, w = np.unravel_index(int(i), (gt, gh, gw))
        return slice(t * tt, (t + 1) * tt), slice(h * th, (h + 1) * th), slice(w * tw, (w + 1) * tw)

    for dst, src in enumerate(perm):
        out[block(dst)] = frames[block(src)]
    return out


def tube_shuffle(frames: np.ndarray, cfg, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    grid = tuple(int(g) for g in cfg.tube_grid)
    size, region = tube_geometry(grid, tuple(int(s) for s in frames.shape[:3]))
    record = {"op": "tube", "grid": list(grid), "tube_size": size, "region": region,
              "permutation": random_permutation(grid[0] * grid[1] * grid[2], rng)}
    return apply_tube(frames, record), record
