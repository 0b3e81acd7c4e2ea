"""The screen stage's two tables.

``screens``: one row per sample of a screened unit: its frame fingerprints (target, and source
for edits), the copy score of edit pairs, the motion of raw clips, or why it could not be screened.
``screen_verdicts``: one row per screened sample, recomputed over the whole corpus after the units
(stages/screen/groups.py): its near-duplicate group, the benchmark clip it matches, and the first
screen rule that drops it (``screen_drop``; null when none does).
"""
from __future__ import annotations

import pyarrow as pa

from manifests.schema import SCHEMA_VERSION

SCREENS = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("kind", pa.string()),  # image_edit | video_edit | clip
        # 64-bit perceptual hashes of frames on a time grid, whether each frame is informative,
        # and the frame times (s from the start of the clip window).
        pa.field("target_hashes", pa.list_(pa.int64())),
        pa.field("target_informative", pa.list_(pa.bool_())),
        pa.field("target_times", pa.list_(pa.float32())),
        # Per frame, its hash's weak bits (stages/screen/phash.py: the bits a small change flips
        # first, probed by the grouping); then the window hashes of a few informative frames (their
        # indices in target_window_frames), len(phash.WINDOWS) per frame in that order, null for a
        # flat window: a cropped copy of this clip matches one of them.
        pa.field("target_weak", pa.list_(pa.int64())),
        pa.field("target_windows", pa.list_(pa.int64())),
        pa.field("target_window_frames", pa.list_(pa.int16())),
        pa.field("source_hashes", pa.list_(pa.int64())),
        pa.field("source_informative", pa.list_(pa.bool_())),
        pa.field("source_times", pa.list_(pa.float32())),
        pa.field("source_weak", pa.list_(pa.int64())),
        pa.field("source_windows", pa.list_(pa.int64())),
        pa.field("source_window_frames", pa.list_(pa.int16())),
        # Edit pairs: the largest local grey difference (/255) of time-aligned source/target frames
        # (stages.screen.core.copy_score); near 0 when the target is the source.
        pa.field("copy_score", pa.float64()),
        # Raw clips: flow (% of the frame side per second), the part a global camera motion does
        # not explain, and 1 - content/motion.
        pa.field("motion_score", pa.float64()),
        pa.field("content_motion", pa.float64()),
        pa.field("camera_share", pa.float64()),
        pa.field("error_kind", pa.string()),
        pa.field("error", pa.string()),
        pa.field("schema_version", pa.int16(), nullable=False),
    ],
    metadata={"table": "screens", "schema_version": str(SCHEMA_VERSION)},
)

SCREEN_VERDICTS = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("duplicate_of", pa.string()),  # the group's keeper; null for the keeper and the unique
        pa.field("duplicate_group", pa.string()),  # the keeper's id, for every member of a group
        pa.field("group_size", pa.int64()),
        pa.field("benchmark", pa.string()),  # the benchmark and clip it matches (most matched frames)
        pa.field("benchmark_clip", pa.string()),
        pa.field("benchmark_time_s", pa.float64()),  # one matching frame pair, for the report's thumbnails
        pa.field("matched_side", pa.string()),  # target | source
        pa.field("matched_time_s", pa.float64()),
        pa.field("benchmark_frames", pa.int64()),  # frames of the sample matching the benchmark clip
        # screen.contaminated | screen.duplicate | screen.copy | screen.static | null
        pa.field("screen_drop", pa.string()),
        pa.field("judge_skip", pa.bool_()),  # vlm-filter does not score it (screen.judge_skips_dropped)
    ],
    metadata={"table": "screen_verdicts", "schema_version": str(SCHEMA_VERSION)},
)
