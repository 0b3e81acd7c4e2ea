"""OpenVE-3M demo layout: per-category CSVs (``;`` and ``,`` separated) + real clips.

What it exercises (default config, ``**/*.csv``):

* ``metadata/Local_Change.csv``, ``;``-separated: one good pair, one row with an empty prompt and
  one whose edited path escapes the root;
* ``metadata/background_change.csv``, ``,``-separated, a prompt with commas (quoted);
* ``local_add/Local_Add_train.csv``: paths relative to the CSV's own folder;
* ``benchmark_videos.csv`` (OpenVE-Bench): one source-only benchmark row (split ``bench``) and one
  without ``original_video``.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from pipeline.demo.media import copy_clip, real_pairs


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

    copy_clip(local.source, root / "local_change/original/hl07.mp4")
    copy_clip(local.edited, root / "local_change/edited/hl07.mp4")
    _write_csv(root / "metadata/Local_Change.csv", header, [
        ["local_change/edited/hl07.mp4", "local_change/original/hl07.mp4", local.instruction],
        ["local_change/edited/hl07_b.mp4", "local_change/original/hl07.mp4", "  "],  # broken: empty prompt
        ["../../../etc/passwd", "local_change/original/hl07.mp4", "Escape."],  # broken: escapes root
    ], sep=";")

    copy_clip(background.source, root / "background_change/original/hl01.mp4")
    copy_clip(background.edited, root / "background_change/edited/hl01.mp4")
    _write_csv(root / "metadata/background_change.csv", header, [
        ["background_change/edited/hl01.mp4", "background_change/original/hl01.mp4", background.instruction],
    ], sep=",")

    # Paths relative to the CSV's folder rather than to the dataset root.
    copy_clip(add.source, root / "local_add/original/zs02.mp4")
    copy_clip(add.edited, root / "local_add/edited/zs02.mp4")
    _write_csv(root / "local_add/Local_Add_train.csv", header, [
        ["edited/zs02.mp4", "original/zs02.mp4", add.instruction],
    ], sep=",")

    copy_clip(bench.source, root / "bench/subtitle_edit/hl02.mp4")
    _write_csv(root / "benchmark_videos.csv", ["edited_type", "prompt", "original_video"], [
        ["subtitle_edit", bench.instruction, "bench/subtitle_edit/hl02.mp4"],
        ["creative_edit", "Turn the scene into a paper-cut diorama.", ""],  # broken: no source
    ], sep=",")

    return {
        "rows": 7,
        "errors": 3,
        "units": 4,
        "train_pairs": 3,
        "bench_rows": 2,
        "categories": {"local_change": 3, "background": 1, "add": 1, "subtitles": 1, "creative": 1},
    }
