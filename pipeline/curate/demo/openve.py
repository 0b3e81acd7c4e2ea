"""OpenVE-3M demo layout, as published: ``csv_files/<category>.csv`` (``video;original_video;prompt``,
``;``-separated), paths relative to ``videos/``, real clips.

What it exercises (default config):

* ``csv_files/local_change.csv``: one good pair, one row with an empty prompt, one whose edited
  path escapes the root, one whose videos are not downloaded (an error row listing where it looked);
* ``csv_files/background_change.csv``: a prompt holding the separator (quoted);
* ``csv_files/local_add.csv``: one pair;
* ``benchmark_videos.csv`` (OpenVE-Bench, ``,``-separated): one source-only benchmark row (split
  ``bench``) and one without ``original_video``.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from pipeline.curate.demo.media import copy_clip, real_pairs


def _write_csv(path: Path, header: list[str], rows: list[list[str]], sep: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=sep, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


def build(root: Path) -> dict:
    root = Path(root)
    pairs = {p.id: p for p in real_pairs()}
    local, background, add, bench = (pairs[i] for i in ("hl07", "hl01", "zs02", "hl02"))
    header = ["video", "original_video", "prompt"]
    videos = root / "videos"

    copy_clip(local.source, videos / "local_change/original/hl07.mp4")
    copy_clip(local.edited, videos / "local_change/edited/hl07.mp4")
    _write_csv(root / "csv_files/local_change.csv", header, [
        ["local_change/edited/hl07.mp4", "local_change/original/hl07.mp4", local.instruction],
        ["local_change/edited/hl07_b.mp4", "local_change/original/hl07.mp4", "  "],  # broken: empty prompt
        ["../../../etc/passwd", "local_change/original/hl07.mp4", "Escape."],  # broken: escapes root
        ["local_change/edited/never.mp4", "local_change/original/never.mp4", "Not downloaded."],  # broken
    ], sep=";")

    copy_clip(background.source, videos / "background_change/original/hl01.mp4")
    copy_clip(background.edited, videos / "background_change/edited/hl01.mp4")
    _write_csv(root / "csv_files/background_change.csv", header, [
        ["background_change/edited/hl01.mp4", "background_change/original/hl01.mp4",
         background.instruction + "; keep the lighting"],
    ], sep=";")

    copy_clip(add.source, videos / "local_add/original/zs02.mp4")
    copy_clip(add.edited, videos / "local_add/edited/zs02.mp4")
    _write_csv(root / "csv_files/local_add.csv", header, [
        ["local_add/edited/zs02.mp4", "local_add/original/zs02.mp4", add.instruction],
    ], sep=";")

    copy_clip(bench.source, root / "bench/subtitle_edit/hl02.mp4")
    _write_csv(root / "benchmark_videos.csv", ["edited_type", "prompt", "original_video"], [
        ["subtitle_edit", bench.instruction, "bench/subtitle_edit/hl02.mp4"],
        ["creative_edit", "Turn the scene into a paper-cut diorama.", ""],  # broken: no source
    ], sep=",")

    return {
        "rows": 8,
        "errors": 4,
        "units": 4,
        "train_pairs": 3,
        "bench_rows": 2,
        "skip_frames": 4,
        "categories": {"local_change": 4, "background": 1, "add": 1, "subtitles": 1, "creative": 1},
    }
