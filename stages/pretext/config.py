"""The ``pretext:`` section: Motion Alignment variants of raw clips."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from pipeline.config_base import Strict


class PretextConfig(Strict):
    """Motion Alignment pretext variants of raw clips (stages/pretext; README "Pretext variants")."""

    # A variant left out of a configured mapping has weight 0.
    weights: dict[Literal["none", "cube", "speed", "tube"], float] = {
        "none": 1, "cube": 2, "speed": 3, "tube": 4,
    }
    # sample: each raw clip gets `per_clip` distinct variants drawn (seeded by run.seed and the
    # sample id) from `weights`; all: every variant whose weight is > 0.
    mode: Literal["sample", "all"] = "sample"
    per_clip: int = Field(1, ge=1, le=4, description="variants drawn per clip in mode sample")
    cube_mask_ratio: float = Field(0.3, gt=0, lt=1)
    # cubes: random spatio-temporal cubes until cube_mask_ratio of the pixels is masked (paper);
    # temporal_block: one contiguous run of whole frames, never frame 0 (the public SAMA code).
    cube_layout: Literal["cubes", "temporal_block"] = "cubes"
    cube_size: tuple[float, float, float] = (0.25, 0.25, 0.25)  # (t, h, w), in cube_size_unit
    cube_size_unit: Literal["fraction", "pixels"] = "fraction"  # of the clip's T/H/W, or frames/pixels
    # zero: black; grey: 128; mean: the source clip's per-channel mean.
    cube_fill: Literal["zero", "grey", "mean"] = "zero"
    speed_factor: float = Field(2.0, gt=1)
    # One drawn per sample (seeded) instead of speed_factor; < 1 slows the source down.
    speed_factors: list[float] | None = None
    tube_grid: tuple[int, int, int] = (2, 2, 2)  # (t, h, w); the public SAMA code uses (4, 4, 4)
    task_tokens: dict[str, str] = {
        "cube": "[Complete the missing regions in the video.]",
        "speed": "[Restore the video to its normal speed.]",
        "tube": "[Restore the shuffled video to its original order.]",
    }

    # paper: the defaults above. public: the released SAMA code's variants (temporal_block cube,
    # 0.5x / 2x speed, 4x4x4 tubes) for the fields not given explicitly.
    preset: Literal["paper", "public"] = "paper"

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") == "public":
            data = {"cube_layout": "temporal_block", "speed_factors": [0.5, 2.0], "tube_grid": (4, 4, 4), **data}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "PretextConfig":
        if self.speed_factors is not None and (not self.speed_factors
                                               or any(f <= 0 or f == 1 for f in self.speed_factors)):
            raise ValueError(f"pretext.speed_factors: {self.speed_factors} must be a non-empty list of "
                             "factors > 0 and != 1 (public SAMA code: [0.5, 2.0])")
        active = [v for v, w in self.weights.items() if w > 0]
        if any(w < 0 for w in self.weights.values()) or not active:
            raise ValueError("pretext.weights: weights must be >= 0 with at least one > 0 "
                             "(paper: none: 1, cube: 2, speed: 3, tube: 4)")
        if self.mode == "sample" and self.per_clip > len(active):
            raise ValueError(f"pretext.per_clip: {self.per_clip} distinct variants asked for but only "
                             f"{len(active)} have a weight > 0; lower per_clip or use mode: all")
        missing = [v for v in active if v != "none" and not self.task_tokens.get(v)]
        if missing:
            raise ValueError(f"pretext.task_tokens: no task token for {', '.join(missing)}; add one")
        if any(s <= 0 for s in self.cube_size) or (
                self.cube_size_unit == "fraction" and any(s > 1 for s in self.cube_size)):
            raise ValueError(f"pretext.cube_size: {list(self.cube_size)} must be > 0 (and <= 1 with "
                             "cube_size_unit: fraction)")
        if any(g < 1 for g in self.tube_grid) or self.tube_grid[0] * self.tube_grid[1] * self.tube_grid[2] < 2:
            raise ValueError(f"pretext.tube_grid: {list(self.tube_grid)} must be >= 1 per axis with at "
                             "least 2 tubes (paper: [2, 2, 2])")
        return self
