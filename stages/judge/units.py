"""A judge unit's work, without Ray: which samples to score, and writing its scores part.

One unit per finished probe unit: the same slice of samples, its probe rows, one scores part.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from manifests import compact
from manifests.io import read_slice, table_dir, write_part
from pipeline.stage import Unit
from stages.judge.client import merge_rescored, needs_rescore
from stages.judge.preflight import unit_outcome
from stages.judge.schema import SCORED_STATUSES
from stages.probe.stage import probe_units


def judge_units(workdir: Path, probe_rows_per_task: int) -> list[Unit]:
    """One unit per finished probe unit: the same slice of samples, its probe rows, one scores part."""
    units = []
    merged = compact.locate(workdir, "probes")  # probe units merged into one part per samples part
    for u in probe_units(workdir, probe_rows_per_task):
        probe_part = Path(u.out)
        source = compact.unit_source(u.out, merged)
        if source is not None:
            out = table_dir(workdir, "scores") / probe_part.parent.name / probe_part.name
            # The screen's verdicts on the same slice, when screened: samples it drops are not scored.
            screen = table_dir(workdir, "screen_verdicts") / probe_part.parent.name / probe_part.name
            units.append(Unit(u.key, u.dataset, u.rows, str(out), {**u.params, "probe": source[0], "probe_offset": source[1],
                                                                   "probe_rows": source[2],
                                                                   "screen": str(screen) if screen.exists() else ""}))
    return units


def judge_todo(item: dict) -> pa.Table:
    """The samples of a judge unit to score: those the probe measured, and on a re-run
    (judge.rescore=failed, the unit's part already written) only those that did not score."""
    samples = read_slice(item["part"], item["offset"], item["length"])  # its row groups, not the part
    probes = compact.read_unit_rows(item["probe"], item["probe_offset"], item["probe_rows"], ["sample_id", "error"])
    measured = probes.filter(pc.is_null(probes["error"]))["sample_id"]
    todo = samples.filter(pc.is_in(samples["sample_id"], value_set=measured.combine_chunks()))
    if item.get("screen"):
        verdicts = pq.read_table(item["screen"], columns=["sample_id", "judge_skip"])
        skipped = verdicts.filter(pc.fill_null(verdicts["judge_skip"], False))["sample_id"]
        todo = todo.filter(pc.invert(pc.is_in(todo["sample_id"], value_set=skipped.combine_chunks())))
    out = Path(item["out"])
    if out.exists():
        again = needs_rescore(pq.read_table(out))
        todo = todo.filter(pc.is_in(todo["sample_id"], value_set=again["sample_id"].combine_chunks()))
    return todo


def finish_judge_unit(item: dict, scores: pa.Table) -> dict:
    """Write a judge unit's scores part (merged into the old part on a re-run); its summary row."""
    out = Path(item["out"])
    outcome = unit_outcome(scores)  # this run's rows only, before the merge
    if out.exists():
        scores = merge_rescored(pq.read_table(out), scores)
    write_part(out, scores)
    return {"dataset": item["dataset"], "rows": scores.num_rows,
            "failed": sum(s not in SCORED_STATUSES for s in scores["status"].to_pylist()), **outcome}
