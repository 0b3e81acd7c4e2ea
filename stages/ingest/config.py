"""The ``datasets:`` section: one entry per published dataset layout (stages/ingest/<name>.py)."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from pipeline.config_base import Strict


class DatasetConfig(Strict):
    enabled: bool = True
    root: Path
    license: str = ""

    # The fields naming directories a sample's media may lie in (locate's allowed roots).
    MEDIA_ROOTS: ClassVar[tuple[str, ...]] = ("root", "video_root", "image_root", "output_root")

    @property
    def resolved_root(self) -> Path:
        return self.root.expanduser().resolve()

    def paths(self) -> dict[str, Path]:
        """Every path field that is set: each must exist when a stage that reads the data starts."""
        return {name: value for name, value in self if isinstance(value, Path)}

    def media_roots(self) -> list[Path]:
        return [p for f in self.MEDIA_ROOTS if (p := getattr(self, f, None)) is not None]


class DittoConfig(DatasetConfig):
    license: str = "CC-BY-NC-SA-4.0"
    metadata_glob: str = "training_metadata/*.json"


class OpenVEConfig(DatasetConfig):
    license: str = "CC-BY-NC-4.0"
    csv_glob: str = "**/*.csv"
    separator: Literal["auto", ",", ";", "\t"] = "auto"


class ReCoConfig(DatasetConfig):
    license: str = "CC-BY-NC-SA-4.0"
    tasks: list[str] = ["add", "remove", "replace", "style"]


class KoalaConfig(DatasetConfig):
    license: str = "Koala-36M terms (research use)"
    csv_glob: str = "Koala_36M_*.csv"
    # Where the user downloaded the YouTube videos, and how a clip maps to a file. Fields:
    # {videoID}, {start}, {end} (HH:MM:SS.fff), {start_s}, {end_s} (seconds, 3 decimals).
    video_root: Path
    video_pattern: str = "{videoID}.mp4"
    # True when video_pattern names files already cut to the window (then no window is applied).
    files_are_cut: bool = False
    read_block_mb: int = Field(64, ge=1, description="CSV streaming block size (bounds memory)")


class MotionBenchConfig(DatasetConfig):
    license: str = "MotionBench terms (non-commercial)"
    jsonl: str = "MotionBenchCaption-train/train.jsonl"
    video_dir: str = "MotionBenchCaption-train/videos"


class NHREditConfig(DatasetConfig):
    license: str = "Apache-2.0"
    layout: Literal["auto", "jsonl", "parquet"] = "auto"


class GPTImageEditConfig(DatasetConfig):
    license: str = "CC-BY-4.0"
    json_glob: str = "training_json/*.json"
    image_dir: str = "gpt-edit"


class X2EditConfig(DatasetConfig):
    license: str = "Apache-2.0"
    tar_glob: str = "X2Edit_data/**/*.tar"


class PicoBananaConfig(DatasetConfig):
    license: str = "CC-BY-NC-ND-4.0"
    splits: list[Literal["sft", "preference", "multi-turn"]] = ["sft"]
    # Open Images source files the user downloaded: looked up by the URL's file name here.
    image_root: Path
    # Edited images: output_image paths are relative to this directory (default: root).
    output_root: Path | None = None


class DatasetsConfig(Strict):
    ditto: DittoConfig | None = None
    openve: OpenVEConfig | None = None
    reco: ReCoConfig | None = None
    koala: KoalaConfig | None = None
    motionbench: MotionBenchConfig | None = None
    nhr_edit: NHREditConfig | None = None
    gpt_image_edit: GPTImageEditConfig | None = None
    x2edit: X2EditConfig | None = None
    pico_banana: PicoBananaConfig | None = None

    def enabled(self) -> dict[str, DatasetConfig]:
        return {name: cfg for name, cfg in self if cfg is not None and cfg.enabled}
