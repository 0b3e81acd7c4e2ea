"""The embedded demo corpus: a few samples per dataset, written in each dataset's real published
layout (see ../shared/DATASETS.md), with real H.264 clips from ``demo/clips`` and generated media.

Each ``pipeline.curate.demo.<dataset>`` module has ``build(root: Path) -> dict`` that writes that dataset's
layout under ``root`` (including a few deliberately broken records, which must become error rows)
and returns facts the tests check (e.g. expected row and error counts). Tests reuse the builders as
fixtures, so the demo and the tests exercise the same layouts.
"""
from __future__ import annotations

import importlib
from pathlib import Path

DATASETS = [
    "ditto", "openve", "reco", "koala", "motionbench",
    "nhr_edit", "gpt_image_edit", "x2edit", "pico_banana",
]


def build_dataset(name: str, root: Path) -> dict:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return importlib.import_module(f"pipeline.curate.demo.{name}").build(root)


def build_corpus(out: Path, datasets: list[str] | None = None) -> dict[str, dict]:
    """Write every dataset's demo layout under ``out/<dataset>``; idempotent."""
    return {name: build_dataset(name, Path(out) / name) for name in (datasets or DATASETS)}
