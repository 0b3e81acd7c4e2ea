"""Ditto-1M demo layout: ``training_metadata/*.json`` + ``videos/<category folder>/NNNN/`` (real clips).

The published files sit in four-digit subfolders (``source/0000/<hash>.mp4``,
``global_style1/0000/<hash>_1.mp4``), and paths in the metadata are relative to ``videos/``.
What it exercises (default config, ``training_metadata/*.json``):

* a style pair (``global_style1``) and the same clip listed under ``global_style2`` with a
  ``videos/`` prefix in its metadata paths (both spellings occur in third-party loaders);
* a freeform pair (``global_freeform2``) and a local pair (``local``) from nested extractions
  (``videos/source/source/0001/<hash>.mp4``, ``videos/local/local/0001/<hash>_4.mp4``: what the
  split ``.tar.gz`` parts give when extracted inside their own folder);
* broken records: one without ``instruction``, one whose ``edited_path`` escapes the root, and a
  truncated metadata file (one unit error row);
* ``source_video_captions/`` as published: ``{path, caption}`` with ``path`` = ``NNNN/<hash>.mp4``
  (no ``source/``), a caption for every source; ``csvs_for_DiffSynth/`` listing the two style
  pairs again with paths relative to ``videos/`` (read only when ``metadata_glob`` points at it).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

from pipeline.curate.demo.media import copy_clip, real_pairs


CAPTIONS = {
    "style": "A black swan swims slowly across a dark pond.",
    "freeform": "A boy plays in a garden, waving his arms.",
    "local": "A group of people walks down a city street.",
}


def clip_hash(pair_id: str) -> str:
    """Ditto names files by a content hash; a fixed hash of the clip id stands in for it."""
    return hashlib.md5(f"ditto-demo/{pair_id}".encode()).hexdigest()


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(text, encoding="utf-8")


def build(root: Path) -> dict:
    root = Path(root)
    pairs = {p.id: p for p in real_pairs()}
    videos = root / "videos"
    style, free, local = (pairs[i] for i in ("hl10", "zs02", "hl07"))
    hs, hf, hl = (clip_hash(p.id) for p in (style, free, local))

    copy_clip(style.source, videos / "source" / "0000" / f"{hs}.mp4")
    copy_clip(style.edited, videos / "global_style1" / "0000" / f"{hs}_1.mp4")
    copy_clip(style.edited, videos / "global_style2" / "0000" / f"{hs}_2.mp4")
    copy_clip(free.source, videos / "source" / "0000" / f"{hf}.mp4")
    copy_clip(free.edited, videos / "global_freeform2" / "0000" / f"{hf}_3.mp4")
    copy_clip(local.source, videos / "source" / "source" / "0001" / f"{hl}.mp4")  # nested extraction
    copy_clip(local.edited, videos / "local" / "local" / "0001" / f"{hl}_4.mp4")  # nested extraction

    records = [
        {"source_path": f"source/0000/{hs}.mp4", "instruction": style.instruction,
         "edited_path": f"global_style1/0000/{hs}_1.mp4"},
        {"source_path": f"videos/source/0000/{hs}.mp4", "instruction": style.instruction,
         "edited_path": f"videos/global_style2/0000/{hs}_2.mp4"},
        {"source_path": f"source/0000/{hf}.mp4", "instruction": free.instruction,
         "edited_path": f"global_freeform2/0000/{hf}_3.mp4"},
        {"source_path": f"source/0001/{hl}.mp4", "instruction": local.instruction,
         "edited_path": f"local/0001/{hl}_4.mp4"},
        # broken: no instruction
        {"source_path": f"source/0000/{hf}.mp4", "edited_path": f"global_freeform1/0000/{hf}_5.mp4"},
        # broken: the edited path leaves the dataset root
        {"source_path": f"source/0000/{hs}.mp4", "instruction": "Escape.", "edited_path": "../../etc/passwd"},
    ]
    _write_text(root / "training_metadata" / "ditto_demo.json", json.dumps(records, indent=1))
    # broken: a truncated metadata file (the whole unit becomes one error row)
    _write_text(root / "training_metadata" / "ditto_truncated.json", json.dumps(records[:2])[:120])

    _write_text(root / "source_video_captions" / "source_video_captions_0000.json", json.dumps([
        {"path": f"0000/{hs}.mp4", "caption": CAPTIONS["style"]},
        {"path": f"0000/{hf}.mp4", "caption": CAPTIONS["freeform"]},
        {"path": f"0001/{hl}.mp4", "caption": CAPTIONS["local"]},
    ]))

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["video", "vace_video", "prompt"])
    for rec in records[:2]:
        writer.writerow([rec["edited_path"].removeprefix("videos/"), rec["source_path"].removeprefix("videos/"),
                         rec["instruction"]])
    _write_text(root / "csvs_for_DiffSynth" / "ditto_style.csv", buf.getvalue())

    return {
        "rows": 7,
        "errors": 3,
        "units": 2,
        "categories": {"style": 2, "freeform": 2, "local_change": 1},
        "hashes": {"style": hs, "freeform": hf, "local": hl},
        "captions": CAPTIONS,
    }
