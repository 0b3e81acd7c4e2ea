"""The ``screen:`` section."""
from __future__ import annotations

from pydantic import Field

from pipeline.config_base import Strict


class ScreenConfig(Strict):
    # false: `curate run --stage screen` refuses to run and nothing downstream reads screens
    # (the outputs are those of a run without the stage).
    enabled: bool = True
    frame_step_s: float = Field(0.25, gt=0, description="seconds between the frames fingerprinted")
    max_frames: int = Field(16, ge=2, description="frames fingerprinted per video at most (long clips: wider steps)")
    # Two frames match when their 64-bit hashes differ in at most this many bits.
    match_bits: int = Field(10, ge=0, le=32)
    # Candidate pairs come from equal bands of the hash (64 / band_bits bands): wider bands keep the
    # join small at corpus scale, narrower ones find frames further apart.
    band_bits: int = Field(32, description="bits per band: 16 or 32")
    # Two samples are near-duplicates when this share of the informative frames of the one with
    # fewer of them match (a window of a longer clip counts), and at least min_matched_frames do.
    duplicate_share: float = Field(0.5, gt=0, le=1)
    min_matched_frames: int = Field(2, ge=1)
    # Benchmark name -> a folder or glob of its clips/images; samples matching any are contaminated.
    benchmarks: dict[str, str] = {}
    # Filter rules (filters/screen.py): an edit whose target differs from its source by less than
    # copy_max_diff (the largest local grey difference / 255 on aligned frames) is a copy; a raw clip
    # whose flow outside a global camera motion is below min_content_motion (% of the side per
    # second) does not move. The defaults are what bench/bench_screen.py supports.
    copy_max_diff: float = Field(0.05, ge=0)
    min_content_motion: float = Field(1.6, ge=0)
    drop_duplicates: bool = True
    drop_contaminated: bool = True
    # vlm-filter skips the samples these rules already drop (the judge never pays for them).
    judge_skips_dropped: bool = True
    rows_per_task: int = Field(200, ge=1, description="samples screened by one Ray task")
