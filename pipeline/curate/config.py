"""The run config: one YAML file per run, validated on load.

Each section belongs to the stage that reads it (``stages/<name>/config.py``, ``filters/config.py``),
and a stage reads only its own section and the shared ones (``SHARED_SECTIONS``); this module puts
them together. Every number of the SAMA recipe that belongs to curation is a field
whose default is the paper's value (see ../shared/RECIPE.md). Unknown keys and wrong types fail at
once with the field's dotted name and what to do about it; the dataset folders are checked when a
stage that reads them starts (``pipeline.stage.check_dataset_roots``), so `curate filter` works where
the raw data is not mounted.

Relative paths are resolved against the current working directory (run ``curate`` from the
project root, as the README does).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from filters.config import FilterConfig
from pipeline.config_base import ConfigError, Strict, read_document, validate
from stages.encode.config import EncodeConfig
from stages.ingest.config import (DatasetsConfig, DittoConfig, GPTImageEditConfig, KoalaConfig,
                                  MotionBenchConfig, NHREditConfig, OpenVEConfig, PicoBananaConfig, ReCoConfig,
                                  X2EditConfig)
from stages.judge.config import JudgeConfig
from stages.media.config import MediaConfig
from stages.pretext.config import PretextConfig
from stages.probe.config import ProbeConfig
from stages.screen.config import ScreenConfig
from stages.shard.config import ShardConfig

__all__ = [
    "Config", "ConfigError", "DatasetsConfig", "DittoConfig", "EncodeConfig", "FilterConfig", "GPTImageEditConfig",
    "JudgeConfig", "KoalaConfig", "MediaConfig", "MotionBenchConfig", "NHREditConfig", "OpenVEConfig", "PicoBananaConfig",
    "PretextConfig", "ProbeConfig", "RayConfig", "ReCoConfig", "RunConfig", "ScreenConfig", "ShardConfig", "X2EditConfig",
    "SHARED_SECTIONS", "load_config",
]

from pipeline.curate.report.settings import ReportConfig  # the `report` section, defined beside its user


class RunConfig(Strict):
    workdir: Path = Path("runs/default")
    seed: int = 0
    rows_per_part: int = Field(100_000, ge=1, description="max rows per Parquet part")
    # Shared, not the probe's: the screen and the judge plan one unit per probe unit (the same
    # slice of a samples part, under the same part name) and read that unit's probe rows, so the
    # three per-sample stages must cut parts into the same slices.
    rows_per_task: int = Field(1000, ge=1, description="samples per unit of probe, screen and vlm-filter")


class RayConfig(Strict):
    address: str | None = None  # None: RAY_ADDRESS or a new local cluster
    num_cpus: int | None = Field(None, ge=1)  # local cluster only; None = all cores


# Sections any stage may read: the run's own settings, the cluster, the inputs (every stage that
# reads media finds its roots there) and how media are decoded. Every other section is one stage's.
SHARED_SECTIONS = ("run", "ray", "datasets", "media")


def _notice(old: str, new: str) -> None:
    print(f"config: {old} is deprecated; use {new}", file=sys.stderr)


def _map_old_keys(doc: Any) -> Any:
    """Configs written before the unit size and the decoder were shared keep working: their old
    keys move to the new ones, and an old and a new key that disagree fail at once."""
    if not isinstance(doc, dict) or not isinstance(doc.get("probe"), dict):
        return doc
    probe = doc["probe"]
    if "rows_per_task" not in probe and "decode_check" not in probe:
        return doc
    doc = {**doc, "probe": dict(probe)}
    probe = doc["probe"]

    def put(section: str, key: str, value: Any, old: str) -> None:
        node = doc.get(section)
        node = dict(node) if isinstance(node, dict) else {}
        if key in node and node[key] != value:
            raise ValueError(f"{old} and {section}.{key}: {probe_old[old]!r} and {node[key]!r} disagree; "
                             f"keep only {section}.{key} ({old} is its deprecated name)")
        node[key] = value
        doc[section] = node

    probe_old = {f"probe.{k}": probe[k] for k in ("rows_per_task", "decode_check") if k in probe}
    if "rows_per_task" in probe:
        put("run", "rows_per_task", probe.pop("rows_per_task"), "probe.rows_per_task")
        _notice("probe.rows_per_task", "run.rows_per_task")
    if "decode_check" in probe:
        check = probe.pop("decode_check")
        if check not in ("decord", "pyav", "none"):
            raise ValueError(f"probe.decode_check: {check!r} is not decord, pyav or none; better, set "
                             f"media.decoder (decord|pyav) and probe.decode (true|false)")
        on = check != "none"
        if "decode" in probe and probe["decode"] != on:
            raise ValueError(f"probe.decode_check and probe.decode: {check!r} and {probe['decode']!r} disagree; "
                             f"keep only probe.decode (probe.decode_check is deprecated)")
        probe["decode"] = on
        if on:
            put("media", "decoder", check, "probe.decode_check")
            _notice("probe.decode_check", "media.decoder")
        else:
            _notice("probe.decode_check", "probe.decode: false")
    return doc


class Config(Strict):
    run: RunConfig = RunConfig()
    ray: RayConfig = RayConfig()
    datasets: DatasetsConfig = DatasetsConfig()
    media: MediaConfig = MediaConfig()
    probe: ProbeConfig = ProbeConfig()
    screen: ScreenConfig = ScreenConfig()
    judge: JudgeConfig = JudgeConfig()
    filter: FilterConfig = FilterConfig()
    encode: EncodeConfig = EncodeConfig()
    pretext: PretextConfig = PretextConfig()
    shard: ShardConfig = ShardConfig()
    report: ReportConfig = ReportConfig()  # `curate report` (pipeline/curate/report/settings.py)

    @model_validator(mode="before")
    @classmethod
    def _old_keys(cls, data: Any) -> Any:
        return _map_old_keys(data)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    doc = read_document(path, overrides, example_file="configs/demo.yaml", sections_hint="run, datasets, ...",
                        example_set="run.seed=3")
    return validate(Config, doc, "invalid config", "configs/demo.yaml", named=("datasets.",))
