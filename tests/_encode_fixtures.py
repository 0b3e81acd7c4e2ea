"""Fixtures of the encode tests: tiny random encoders (built once per session), small encode
settings, and a run driven through ingest -> probe -> vlm-filter (fake judge) -> filter."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import demo_config_file

# Small frames keep the tiny Wan VAE fast on two CPU cores; both aspect extremes and a square.
SMALL = ["encode.buckets=[[64, 32], [32, 64], [64, 64]]", "encode.num_frames=9", "encode.fps=8",
         "encode.min_frames=5", "encode.batch_size=4", "encode.device=cpu"]
# Keep every sample the fake judge scores (its scores are arbitrary): thresholds off.
KEEP_ALL = ["filter.image.at_least={}", "filter.video.at_least={}", "filter.video.greater_than={}",
            "filter.clip.at_least={}", "filter.clip.greater_than={}"]
FAST_JUDGE = ["judge.max_frames=4", "judge.min_frames=2", "judge.video_min_pixels=3136",
              "judge.video_max_pixels=12544", "judge.image_min_pixels=3136", "judge.image_max_pixels=12544"]
# A raw-clip set (Koala windows), a video-pair set in tars (ReCo) and an image-pair set (NHR-Edit).
STAGE_DATASETS = ["koala", "reco", "nhr_edit"]
ALL_DATASETS = ["ditto", "openve", "reco", "koala", "motionbench", "nhr_edit", "gpt_image_edit", "x2edit",
                "pico_banana"]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from pipeline.curate.demo.tiny_encoders import build_tiny_encoders

    return build_tiny_encoders(tmp_path_factory.mktemp("tiny_encoders"))


def model_overrides(models: dict[str, Path]) -> list[str]:
    return [f"encode.{k}={v}" for k, v in models.items()]


def encode_config(models: dict[str, Path], extra: list[str] = ()):
    """A Config with the tiny models and SMALL settings (no datasets)."""
    from pipeline.curate.config import load_config

    return load_config(None, [*model_overrides(models), *SMALL, *extra])


def stage_config(corpus: Path, dest: Path, models: dict[str, Path], judge_url: str, extra: list[str] = ()):
    """configs/demo.yaml on ``corpus`` with only STAGE_DATASETS, the fake judge and tiny models."""
    from pipeline.curate.config import load_config

    off = [f"datasets.{d}.enabled=false" for d in ALL_DATASETS if d not in STAGE_DATASETS]
    return load_config(demo_config_file(corpus, dest),
                       [f"judge.urls=[{judge_url}]", *FAST_JUDGE, *KEEP_ALL, *off, *model_overrides(models),
                        *SMALL, "encode.samples_per_unit=3", *extra])
