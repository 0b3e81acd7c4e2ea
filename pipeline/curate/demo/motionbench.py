"""MotionBench demo: the caption split's ``train.jsonl`` with bundled real clips as videos,
plus broken lines (malformed JSON, missing caption, a path escaping the dataset root)."""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.curate.demo.media import CLIPS_DIR, copy_clip

SPLIT = "MotionBenchCaption-train"

# file name under videos/ -> bundled clip
VIDEOS = {
    "mb_0001.mp4": "hl10_source.mp4",
    "mb_0002.mp4": "hl01_source.mp4",
    "mb_0003.mp4": "hl07_source.mp4",
}

GOOD = [
    {"video_path": "mb_0001.mp4",
     "motion_caption": "A black swan glides forward across the pond, its neck curving slightly as it turns left."},
    {"video_path": "mb_0002.mp4",
     "motion_caption": "A man stands beside a parked SUV; the camera stays still while he shifts his weight."},
    {"video_path": "mb_0003.mp4",
     "motion_caption": "Several people walk toward the camera, arms swinging, one of them glancing sideways."},
]
# Deliberately broken lines, written as raw text.
BROKEN = [
    '{"video_path": "mb_0004.mp4", "motion_caption": "truncated line',  # malformed JSON
    json.dumps({"video_path": "mb_0005.mp4", "motion_caption": "  "}),  # blank motion_caption
    json.dumps({"video_path": "../../../etc/passwd", "motion_caption": "Escapes the dataset root."}),
]


def build(root: Path) -> dict:
    root = Path(root)
    split = root / SPLIT
    for name, clip in VIDEOS.items():
        copy_clip(CLIPS_DIR / clip, split / "videos" / name)
    jsonl = split / "train.jsonl"
    if not jsonl.exists():
        lines = [json.dumps(r, ensure_ascii=False) for r in GOOD] + BROKEN
        tmp = jsonl.with_suffix(".jsonl.tmp")
        tmp.write_text("\n".join(lines) + "\n\n", encoding="utf-8")  # a trailing blank line is no record
        tmp.replace(jsonl)
    return {"rows": len(GOOD) + len(BROKEN), "errors": len(BROKEN), "jsonl": str(jsonl)}
