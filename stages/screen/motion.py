"""Motion of a raw clip, and how much of it the camera alone explains.

OpenCV is not in the project's environment, so the flow is block matching over NumPy: each
textured BLOCK x BLOCK block of frame a is found in frame b within +-SEARCH pixels (sum of
absolute differences, every shift at once over box sums), refined to sub-pixel by a parabola
through the neighbouring costs. A global affine map (what a pan, zoom or camera rotation over a
still produces) is then fitted to the block vectors by least squares, refitted once without the
worst quarter. ``motion`` is the mean flow length and ``content_motion`` the mean length of what
the affine map leaves unexplained, both in % of the frame side per second; ``camera_share`` is
1 - content/motion. A still video reads motion ~ 0; a zoom or pan over a still reads a high
motion but content_motion ~ 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK = 8
SEARCH = 6
MIN_BLOCK_STD = 4.0  # blocks flatter than this (grey levels) carry no reliable vector
SIDE = 64  # frames are averaged down to SIDE x SIDE first


@dataclass
class Motion:
    motion: float | None  # mean flow, % of the frame side per second
    content_motion: float | None  # mean flow the global affine map does not explain, same unit
    camera_share: float | None  # 1 - content/motion (None when there is no motion to share)


def _down(gray: np.ndarray) -> np.ndarray:
    h, w = gray.shape
    f = h // SIDE
    return gray[: f * SIDE, : f * SIDE].reshape(SIDE, f, SIDE, f).mean(axis=(1, 3)) if f > 1 else gray


def block_flow(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centres [k, 2] as x, y; vectors [k, 2]) of the textured blocks of ``a`` found in ``b``."""
    h, w = a.shape
    nby, nbx = (h - 2 * SEARCH) // BLOCK, (w - 2 * SEARCH) // BLOCK
    ys = SEARCH + np.arange(nby) * BLOCK
    xs = SEARCH + np.arange(nbx) * BLOCK
    shifts = range(-SEARCH, SEARCH + 1)
    n = 2 * SEARCH + 1
    cost = np.empty((n, n, nby, nbx), np.float64)
    a_core = a[SEARCH: SEARCH + nby * BLOCK, SEARCH: SEARCH + nbx * BLOCK]
    for iy, dy in enumerate(shifts):
        for ix, dx in enumerate(shifts):
            b_core = b[SEARCH + dy: SEARCH + dy + nby * BLOCK, SEARCH + dx: SEARCH + dx + nbx * BLOCK]
            cost[iy, ix] = np.abs(a_core - b_core).reshape(nby, BLOCK, nbx, BLOCK).sum(axis=(1, 3))
    flat = cost.reshape(n * n, nby, nbx)
    best = flat.argmin(axis=0)
    by, bx = np.divmod(best, n)
    vy, vx = by.astype(np.float64), bx.astype(np.float64)
    gy, gx = np.meshgrid(np.arange(nby), np.arange(nbx), indexing="ij")
    for v, axis in ((vy, 0), (vx, 1)):  # sub-pixel: a parabola through the best cost and its neighbours
        inner = (by > 0) & (by < n - 1) if axis == 0 else (bx > 0) & (bx < n - 1)
        lo_y, hi_y = (np.clip(by - 1, 0, n - 1), np.clip(by + 1, 0, n - 1)) if axis == 0 else (by, by)
        lo_x, hi_x = (bx, bx) if axis == 0 else (np.clip(bx - 1, 0, n - 1), np.clip(bx + 1, 0, n - 1))
        c0, cm, cp = cost[by, bx, gy, gx], cost[lo_y, lo_x, gy, gx], cost[hi_y, hi_x, gy, gx]
        denom = cm - 2 * c0 + cp
        v += np.where(inner & (denom > 0), 0.5 * (cm - cp) / np.where(denom > 0, denom, 1), 0.0)
    texture = a_core.reshape(nby, BLOCK, nbx, BLOCK).std(axis=(1, 3))
    keep = texture >= MIN_BLOCK_STD
    centres = np.stack([(xs[None, :] + BLOCK / 2).repeat(nby, 0), (ys[:, None] + BLOCK / 2).repeat(nbx, 1)], -1)
    vectors = np.stack([vx - SEARCH, vy - SEARCH], -1)
    return centres[keep].reshape(-1, 2), vectors[keep].reshape(-1, 2)


def affine_residual(centres: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Per-block length of the flow a global affine map does not explain (refit once, robustly)."""
    design = np.column_stack([centres, np.ones(len(centres))])
    use = np.ones(len(centres), bool)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(design[use], vectors[use], rcond=None)
        residual = np.linalg.norm(vectors - design @ coef, axis=1)
        use = residual <= np.quantile(residual, 0.75)
    return residual


def clip_motion(gray: np.ndarray, times: np.ndarray) -> Motion:
    """Motion of consecutive grid frames ([n, H, W] grey, their times in s)."""
    if len(gray) < 2:
        return Motion(None, None, None)
    frames = [_down(np.asarray(g, np.float64)) for g in gray]
    side = frames[0].shape[0]
    totals, contents = [], []
    # Frames two grid steps apart: twice the displacement over the same sub-pixel matching noise.
    gap = 2 if len(frames) >= 3 else 1
    for a, b, dt in zip(frames, frames[gap:], times[gap:] - times[:-gap]):
        centres, vectors = block_flow(a, b)
        if len(vectors) < 6 or dt <= 0:
            continue
        scale = 100.0 / side / float(dt)
        totals.append(float(np.linalg.norm(vectors, axis=1).mean()) * scale)
        contents.append(float(affine_residual(centres, vectors).mean()) * scale)
    if not totals:  # nothing textured to follow: a flat clip does not move
        return Motion(0.0, 0.0, None)
    motion, content = float(np.mean(totals)), float(np.mean(contents))
    share = 1.0 - min(content / motion, 1.0) if motion > 1e-9 else None
    return Motion(motion, content, share)
