"""Motion Alignment pretext variants of raw text-to-video clips (SAMA stage 0).

Only the *source* is perturbed; the target is always the clip itself, read at the training fps.

Variants (``VARIANTS``), drawn per clip by ``draw_variants`` from ``pretext.weights``
(paper none:cube:speed:tube = 1:2:3:4) or all of them (``pretext.mode: all``):

- ``none``: plain text-to-video; no source; the instruction is the caption.
- ``cube``: the source is the target's frames with spatio-temporal boxes filled
  (``cube.py``: boxes until ``cube_mask_ratio`` is reached, or one temporal block).
- ``speed``: the source is the clip played ``speed_factor`` times faster; it is chosen at decode
  time, not in pixels. Which raw frames each side takes (``speed.py``, ``speed_plan``): same start,
  target frame ``i`` = native ``floor((start + i/fps) * native_fps)``, source frame ``i`` = native
  ``floor((start + i*factor/fps) * native_fps)``, both ``N`` frames where ``N`` = encode.num_frames
  if the *source* fits in the clip window, else the longest 4n+1 that fits (policy ``longest``;
  ``exact``: none). No fit at all: the sample is an error row ``too_short``.
  ``perturb_source("speed", ...)`` returns the already-fast frames unchanged.
- ``tube``: the source is the target's frames cut into a ``tube_grid`` of equal tubes, permuted
  (never the identity); a remainder that the grid does not divide stays in place (``tube.py``).

Each pretext variant's text is its task token, one space, then the caption (``task_text``).
Every random choice comes from ``pretext_rng(run.seed, sample_id, variant)``: same run, same bytes.
The record each operator returns (JSON-able) is enough to re-apply it without the generator
(``apply_record``), which ``curate preview`` and the tests do.
"""
from __future__ import annotations

import numpy as np

from stages.pretext.cube import PretextError, apply_cube, cube_inpainting, mask_from_boxes
from stages.pretext.mix import VARIANTS, active_variants, draw_variants, pretext_rng, seeded_rng
from stages.pretext.speed import speed_factor_for, speed_plan, speed_record
from stages.pretext.tube import apply_tube, tube_shuffle

__all__ = [
    "VARIANTS", "PretextError", "active_variants", "apply_record", "draw_variants", "mask_from_boxes",
    "perturb_source", "pretext_rng", "seeded_rng", "speed_factor_for", "speed_plan", "speed_record", "task_text",
]


def perturb_source(variant: str, frames: np.ndarray, cfg, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """The source frames of ``variant`` made from uint8 ``frames`` [T, H, W, 3], and its record.

    ``cube``/``tube`` perturb (a new array; ``frames`` is untouched). ``speed`` returns ``frames``
    as they are: pass the frames decoded at ``speed_plan``'s source indices (the caller adds those
    indices to the record, see ``speed_record``). ``none`` has no source.
    """
    if frames.ndim != 4 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, C], got {frames.dtype} {list(frames.shape)}")
    if variant == "cube":
        return cube_inpainting(frames, cfg, rng)
    if variant == "tube":
        return tube_shuffle(frames, cfg, rng)
    if variant == "speed":
        return frames, {"op": "speed", "factor": float(cfg.speed_factor)}
    raise ValueError(f"variant {variant!r} has no source to perturb (one of cube, speed, tube)")


def apply_record(frames: np.ndarray, record: dict) -> np.ndarray:
    """Re-apply a stored pretext record to the target frames (speed: identity; see speed_plan)."""
    op = record.get("op")
    if op == "cube":
        return apply_cube(frames, record)
    if op == "tube":
        return apply_tube(frames, record)
    return frames


def task_text(variant: str, caption: str | None, cfg) -> tuple[str, str | None]:
    """(final instruction, task token): ``"<token> <caption>"`` for pretext variants."""
    caption = (caption or "").strip()
    if variant in ("none", "edit"):
        return caption, None
    token = cfg.task_tokens[variant]
    return (f"{token} {caption}" if caption else token), token
