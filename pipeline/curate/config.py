"""The run config: one YAML file per run, validated on load.

Each section belongs to the stage that reads it (``stages/<name>/config.py``, ``filters/config.py``);
this module puts them together. Every number of the SAMA recipe that belongs to curation is a field
whose default is the paper's value (see ../shared/RECIPE.md). Unknown keys and wrong types fail at
once with the field's dotted name and what to do about it; the dataset folders are checked when a
stage that reads them starts (``pipeline.stage.check_dataset_roots``), so `curate filter` works where
the raw data is not mounted.

Relative paths are resolved against the current working directory (run ``curate`` from the
project root, as the README does).
"""
from __future__ import annotations

from pathlib import Path

from pydantic import Field

from filters.config import FilterConfig
from pipeline.config_base import ConfigError, Strict, read_document, validate
from stages.encode.config import EncodeConfig
from stages.ingest.config import (DatasetsConfig, DittoConfig, GPTImageEditConfig, KoalaConfig,
                                  MotionBenchConfig, NHREditConfig, OpenVEConfig, PicoBananaConfig, ReCoConfig,
                                  X2EditConfig)
from stages.judge.config import JudgeConfig
from stages.pretext.config import PretextConfig
from stages.probe.config import ProbeConfig
from stages.screen.config import ScreenConfig
from stages.shard.config import ShardConfig

__all__ = [
    "Config", "ConfigError", "DatasetsConfig", "DittoConfig", "EncodeConfig", "FilterConfig", "GPTImageEditConfig",
    "JudgeConfig", "KoalaConfig", "MotionBenchConfig", "NHREditConfig", "OpenVEConfig", "PicoBananaConfig",
    "PretextConfig", "ProbeConfig", "RayConfig", "ReCoConfig", "RunConfig", "ScreenConfig", "ShardConfig", "X2EditConfig",
    "load_config",
]

from pipeline.curate.report.settings import ReportConfig  # the `report` section, defined beside its user


class RunConfig(Strict):
    workdir: Path = Path("runs/default")
    seed: int = 0
    rows_per_part: int = Field(100_000, ge=1, description="max rows per Parquet part")


class RayConfig(Strict):
    address: str | None = None  # None: RAY_ADDRESS or a new local cluster
    num_cpus: int | None = Field(None, ge=1)  # local cluster only; None = all cores


class Config(Strict):
    run: RunConfig = RunConfig()
    ray: RayConfig = RayConfig()
    datasets: DatasetsConfig = DatasetsConfig()
    probe: ProbeConfig = ProbeConfig()
    screen: ScreenConfig = ScreenConfig()
    judge: JudgeConfig = JudgeConfig()
    filter: FilterConfig = FilterConfig()
    encode: EncodeConfig = EncodeConfig()
    pretext: PretextConfig = PretextConfig()
    shard: ShardConfig = ShardConfig()
    report: ReportConfig = ReportConfig()  # `curate report` (pipeline/curate/report/settings.py)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    doc = read_document(path, overrides, example_file="configs/demo.yaml", sections_hint="run, datasets, ...",
                        example_set="run.seed=3")
    return validate(Config, doc, "invalid config", "configs/demo.yaml", named=("datasets.",))
