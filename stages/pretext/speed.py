"""Speed perturbation: the source is the same clip played ``speed_factor`` times faster.

Both sides are read on the time grid of ``stages.media.frames`` from the same start
(``clip_start_s``, or 0): output frame ``i`` of the target shows time ``start + i / fps``, output
frame ``i`` of the source shows ``start + i * factor / fps``; each takes native frame
``floor(time * native_fps)``. Both have the same count ``N`` (4n+1): ``encode.num_frames`` when the
*source* fits in the clip window, otherwise (policy ``longest``) the longest 4n+1 the source fits
in, so the target of a speed sample can be shorter than the clip's other variants. With an integer
factor, ``source[i] == target[factor * i]`` wherever that target frame exists. A clip whose window
cannot hold one source frame (or, policy ``exact``, not ``num_frames`` of them) gives no indices:
the caller records the sample as ``too_short``.
"""
from __future__ import annotations

from stages.media.frames import frame_count, frames_that_fit, plan_indices


def speed_plan(n_native: int, native_fps: float, fps: float, max_frames: int, factor: float, *,
               start_s: float | None = None, end_s: float | None = None,
               policy: str = "longest") -> tuple[list[int], list[int]]:
    """(target_indices, source_indices) of a speed sample; ``([], [])`` when the clip is too short."""
    n = frame_count(frames_that_fit(n_native, native_fps, fps, factor, start_s, end_s), max_frames, policy)
    if n == 0:
        return [], []
    window = dict(start_s=start_s, end_s=end_s, count=n)
    target = plan_indices(n_native, native_fps, fps, max_frames, speed=1.0, **window)
    source = plan_indices(n_native, native_fps, fps, max_frames, speed=factor, **window)
    return target, source


def speed_factor_for(cfg, seed: int, sample_id: str) -> float:
    """The factor of one sample's speed variant: ``cfg.speed_factor``, or one of
    ``cfg.speed_factors`` drawn from (run seed, sample id) when given (the public SAMA code: 0.5x
    and 2x, i.e. a slowed or a sped-up source)."""
    if not getattr(cfg, "speed_factors", None):
        return float(cfg.speed_factor)
    from stages.pretext.mix import seeded_rng

    factors = list(cfg.speed_factors)
    return float(factors[int(seeded_rng(seed, sample_id, "pretext:speed_factor").integers(len(factors)))])


def speed_record(factor: float, target_indices: list[int], source_indices: list[int]) -> dict:
    """The pretext record of a speed sample (the frames are chosen at decode, not in pixels)."""
    return {"op": "speed", "factor": float(factor), "target_indices": [int(i) for i in target_indices],
            "source_indices": [int(i) for i in source_indices]}
