"""Which native frames a sample takes: resampling to the training fps and the 4n+1 rule.

Every clip is read on a fixed time grid: output frame ``i`` shows time ``start + i * speed / fps``
and takes the native frame whose index is ``floor(time * native_fps)``. ``speed`` 1 is normal play;
the speed-perturbation source uses ``speed = pretext.speed_factor`` on the same start, so it covers
``speed`` times as much of the clip in the same number of frames.

Frame counts are of the form 4n+1 (the Wan VAE keeps the first frame and compresses the rest 4x).
With ``policy="longest"`` a clip too short for ``max_frames`` gets the longest 4n+1 count that fits;
with ``policy="exact"`` it gets none (the caller records ``too_short``).
"""
from __future__ import annotations

import math


def largest_4n1(n: int) -> int:
    """The largest count of the form 4k+1 that is <= n (0 when n < 1)."""
    return 0 if n < 1 else 4 * ((n - 1) // 4) + 1


def frames_that_fit(n_native: int, native_fps: float, fps: float, speed: float = 1.0,
                    start_s: float | None = None, end_s: float | None = None) -> int:
    """How many output frames at ``fps`` (played ``speed`` times faster) lie inside the clip."""
    if n_native <= 0 or native_fps <= 0:
        return 0
    first = 0.0 if start_s is None else max(0.0, start_s)
    last_native = (n_native - 1) / native_fps  # time of the last native frame
    last = last_native if end_s is None else min(last_native, end_s)
    if last < first:
        return 0
    step = speed / fps
    return int(math.floor((last - first) / step + 1e-9)) + 1


def frame_count(fit: int, max_frames: int, policy: str) -> int:
    """Frames to take when ``fit`` fit: ``max_frames``, else the longest 4n+1 (``longest``) or 0."""
    if fit >= max_frames:
        return max_frames
    return largest_4n1(fit) if policy == "longest" else 0


def plan_indices(n_native: int, native_fps: float, fps: float, max_frames: int, *, speed: float = 1.0,
                 start_s: float | None = None, end_s: float | None = None, policy: str = "longest",
                 count: int | None = None) -> list[int]:
    """Native frame indices for one output clip; ``[]`` when the clip is too short.

    ``count`` forces the number of frames (used to give a speed source the same length as its
    target); otherwise the count is ``max_frames`` or, with ``policy="longest"``, the longest 4n+1
    that fits.
    """
    fit = frames_that_fit(n_native, native_fps, fps, speed, start_s, end_s)
    if count is not None:
        n = count if fit >= count else 0
    else:
        n = frame_count(fit, max_frames, policy)
    first = 0.0 if start_s is None else max(0.0, start_s)
    out = []
    for i in range(n):
        t = first + i * speed / fps
        out.append(min(n_native - 1, int(math.floor(t * native_fps + 1e-6))))
    return out
