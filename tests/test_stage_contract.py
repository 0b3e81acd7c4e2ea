"""The stage contract (pipeline.stage): one ``run_stage`` gives any declared stage its input check,
temporaries cleanup, fingerprint, resume, --limit, --overwrite and report; phases chain Ray tasks
into actors. Exercised with a small stage of its own over a real samples table on the session's
Ray cluster."""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from manifests.io import list_parts, table_dir, write_part
from manifests.schema import SAMPLES, empty_sample, rows_to_table
from pipeline.config import load_config
from pipeline.config_base import ConfigError
from pipeline.stage import Phase, Resources, Stage, Unit, run_stage

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def _lengths(item: dict) -> dict:
    """Phase 1 (Ray tasks): the instruction lengths of the unit's samples part."""
    table = pq.read_table(item["part"], columns=["sample_id", "instruction"])
    return {**item, "ids": table["sample_id"].to_pylist(),
            "n": [len(t) for t in table["instruction"].to_pylist()]}


class Writer:
    """Phase 2 (actors): writes the unit's part; the scale comes from the constructor."""

    def __init__(self, scale: int):
        self.scale = scale

    def __call__(self, batch: dict) -> dict:
        out = {"dataset": [], "rows": [], "failed": []}
        for i in range(len(batch["out"])):
            ids, n = list(batch["ids"][i]), [int(x) * self.scale for x in batch["n"][i]]
            write_part(Path(str(batch["out"][i])), pa.table({"sample_id": ids, "n": n}))
            out["dataset"].append(str(batch["dataset"][i]))
            out["rows"].append(len(ids))
            out["failed"].append(0)
        return out


def _plan(ctx) -> list[Unit]:
    return [Unit(p.stem, "demo", pq.ParquetFile(p).metadata.num_rows,
                 str(table_dir(ctx.workdir, "lengths") / p.name), {"part": str(p)})
            for p in list_parts(ctx.workdir, "samples")]


def _stage(scale: int = 1) -> Stage:
    return Stage(
        name="lengths", reads=("samples",), writes=("lengths",), section=None,
        plan=_plan,
        phases=lambda ctx: [Phase("lengths", _lengths, Resources(cpus=1, replicas=2)),
                            Phase("write", Writer, Resources(cpus=1, replicas=1), args=(scale,))],
        fingerprint=lambda ctx: {"all": {"scale": scale}},
        summary=lambda ctx: (["dataset", "rows"], [["demo", len(list_parts(ctx.workdir, "lengths"))]]),
    )


def _samples(workdir: Path, parts: int = 3, rows: int = 2) -> None:
    for p in range(parts):
        table = rows_to_table([empty_sample("demo", f"demo:{p}-{r}", instruction="x" * (p + r + 1))
                               for r in range(rows)], SAMPLES)
        write_part(table_dir(workdir, "samples") / "dataset=demo" / f"part-{p}.parquet", table)


def _values(workdir: Path) -> dict[str, int]:
    return {r["sample_id"]: r["n"] for p in list_parts(workdir, "lengths") for r in pq.read_table(p).to_pylist()}


def test_missing_input_names_the_stage_to_run(tmp_path):
    with pytest.raises(ConfigError, match=r"no samples yet; run `curate run --stage ingest` first"):
        run_stage(_stage(), load_config(None), tmp_path)


def test_run_resume_limit_fingerprint_overwrite(ray_session, tmp_path):
    import sys

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/
    cfg = load_config(None)
    _samples(tmp_path)
    stray = table_dir(tmp_path, "lengths") / ".part-9.parquet.tmp"  # a killed run's temporary
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"half")

    first = run_stage(_stage(), cfg, tmp_path, limit=3)  # whole units of about 3 rows: 2 of 3
    assert (first.units_total, first.units_run) == (3, 2) and not stray.exists()
    rest = run_stage(_stage(), cfg, tmp_path)
    assert (rest.units_total, rest.units_run) == (3, 1)
    assert _values(tmp_path) == {f"demo:{p}-{r}": p + r + 1 for p in range(3) for r in range(2)}
    stamps = {p: os.stat(p).st_mtime_ns for p in list_parts(tmp_path, "lengths")}

    again = run_stage(_stage(), cfg, tmp_path)  # everything done: nothing runs, nothing rewritten
    assert again.units_run == 0 and {p: os.stat(p).st_mtime_ns for p in list_parts(tmp_path, "lengths")} == stamps

    with pytest.raises(ConfigError, match=r"different settings \(scale\).*--overwrite"):
        run_stage(_stage(scale=10), cfg, tmp_path)
    redone = run_stage(_stage(scale=10), cfg, tmp_path, overwrite=True)
    assert redone.units_run == 3 and set(_values(tmp_path).values()) == {10 * n for n in range(1, 5)}
