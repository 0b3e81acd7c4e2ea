"""The stage contract (pipeline.stage): one ``run_stage`` gives any declared stage its input check,
temporaries cleanup, fingerprint, resume, --limit, --overwrite and report; phases chain Ray tasks
into actors. Exercised with a small stage of its own over a real samples table on the session's
Ray cluster."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from manifests.io import list_parts, table_dir, write_part
from manifests.schema import SAMPLES, empty_sample, rows_to_table
from pipeline.curate.config import load_config
from pipeline.config_base import ConfigError
from pipeline.stage import BATCHES, FLAT_MAP, REGROUP, Phase, Resources, Stage, Unit, run_stage

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
    marker = tmp_path / "state" / "lengths" / "demo" / ".u1.json.x1y2.tmp"  # a done marker half written
    marker.parent.mkdir(parents=True)
    marker.write_bytes(b"{")

    first = run_stage(_stage(), cfg, tmp_path, limit=3)  # whole units of about 3 rows: 2 of 3
    assert (first.units_total, first.units_run) == (3, 2) and not stray.exists() and not marker.exists()
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


# ------------------------------------------------------------------ unit -> samples -> unit
def _samples_of(item: dict, batch: int):
    """Flat map: a unit's samples, ``batch`` at a time, each row saying which unit it belongs to."""
    table = pq.read_table(item["part"], columns=["sample_id", "instruction"])
    unit = {"unit": item["key"], "unit_rows": table.num_rows, "unit_item": json.dumps(item)}
    for start in range(0, table.num_rows, batch):
        chunk = table.slice(start, batch)
        yield pa.Table.from_pylist([{**unit, "pos": start + i, "sample_id": r["sample_id"], "text": r["instruction"]}
                                    for i, r in enumerate(chunk.to_pylist())])


class Measure:
    """Batches of samples from any unit (an engine would score them together)."""

    def __init__(self, scale: int):
        self.scale = scale
        self.calls = 0

    def __call__(self, batch: pa.Table) -> pa.Table:
        assert batch.num_rows <= 3  # the declared batch size, not a unit
        n = pa.array([len(t) * self.scale for t in batch["text"].to_pylist()], pa.int64())
        return batch.drop_columns(["text"]).append_column("n", n)


def _write_unit(item: dict, rows: pa.Table) -> dict:
    """Regroup: the unit's rows, back in order, written as its part by a Ray actor."""
    assert rows["pos"].to_pylist() == list(range(rows.num_rows))
    write_part(Path(item["out"]), rows.select(["sample_id", "n"]))
    return {"dataset": item["dataset"], "rows": rows.num_rows, "failed": 0}


def _flat_stage() -> Stage:
    return Stage(
        name="lengths", reads=("samples",), writes=("lengths",), section=None, plan=_plan,
        phases=lambda ctx: [Phase("samples", _samples_of, Resources(cpus=1), args=(2,), kind=FLAT_MAP),
                            Phase("measure", Measure, Resources(cpus=1, replicas=2, min_replicas=1), args=(10,),
                                  kind=BATCHES, batch_size=3, batch_format="pyarrow"),
                            Phase("write", _write_unit, Resources(cpus=0), kind=REGROUP)],
        summary=lambda ctx: (["dataset", "rows"], [["demo", len(list_parts(ctx.workdir, "lengths"))]]),
    )


def test_flat_map_batches_and_regroup_run_as_declared(ray_session, tmp_path, monkeypatch):
    """A unit goes out as its samples (a batch at a time), through actors taking batches of any
    units, and comes back together in a Ray actor that writes its part; every declared phase is
    chained, and units are read from the plan table, not pushed from the driver."""
    import sys

    from ray import cloudpickle

    from pipeline import stage as contract

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    chained = []
    real_chain = contract._chain
    monkeypatch.setattr(contract, "_chain", lambda ds, phase, actor: (chained.append(phase.name), real_chain(ds, phase, actor))[1])
    _samples(tmp_path, parts=4, rows=5)
    report = run_stage(_flat_stage(), load_config(None), tmp_path)
    assert chained == ["samples", "measure", "write"] and report.units_run == 4
    assert _values(tmp_path) == {f"demo:{p}-{r}": 10 * (p + r + 1) for p in range(4) for r in range(5)}
    assert sorted(p.name for p in (tmp_path / "state" / "lengths" / "_units").glob("*.parquet"))  # the plan table
    assert run_stage(_flat_stage(), load_config(None), tmp_path).units_run == 0  # resumed: all done


def test_phase_declarations_are_checked():
    with pytest.raises(ValueError, match="a batches phase takes a class"):
        Phase("x", _lengths, kind=BATCHES)
    with pytest.raises(ValueError, match="unit_seconds -1 is not a duration"):
        Phase("x", _lengths, unit_seconds=-1)
    with pytest.raises(ValueError, match="kind 'nope'"):
        Phase("x", _lengths, kind="nope")
    assert Phase("w", Writer).kind == BATCHES  # a class is an actor phase of one unit per call
    assert "execute" not in {f.name for f in dataclasses.fields(Stage)}  # no escape hatch beside the phases
