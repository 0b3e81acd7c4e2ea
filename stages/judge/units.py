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
from stages.judge.outcome import unit_outcome
from stages.judge.schema import SCORED_STATUSES
from stages.probe.stage import probe_units


def judge_units(workdir: Path, rows_per_task: int) -> list[Unit]:
    """One unit per finished probe unit: the same slice of samples, its probe rows, one scores part."""
    units = []
    merged = compact.locate(workdir, "probes")  # probe units merged into one part per samples part
    screens = compact.locate(workdir, "screens")
    scores = compact.locate(workdir, "scores")
    for u in probe_units(workdir, rows_per_task):
        probe_part = Path(u.out)
        source = compact.unit_source(u.out, merged)
        if source is not None:
            out = table_dir(workdir, "scores") / probe_part.parent.name / probe_part.name
            old = compact.unit_source(str(out), scores) or ("", -1, -1)  # its scores, for rescore: failed
            units.append(Unit(u.key, u.dataset, u.rows, str(out), {
                **u.params, "probe": source[0], "probe_offset": source[1], "probe_rows": source[2],
                "screen": _verdicts_part(workdir, probe_part, screens),
                "scores": old[0], "scores_offset": old[1], "scores_rows": old[2]}))
    return units


def _verdicts_part(workdir: Path, unit_part: Path, screens: dict) -> str:
    """The screen's verdicts on a unit's slice, when screened (samples it drops are not scored):
    the verdicts part named like the unit's screens part, or like the merged screens part holding
    it (then read whole and matched by sample id)."""
    screens_part = table_dir(workdir, "screens") / unit_part.parent.name / unit_part.name
    merged = compact.unit_source(str(screens_part), screens)
    name = Path(merged[0]).name if merged is not None else unit_part.name
    verdicts = table_dir(workdir, "screen_verdicts") / unit_part.parent.name / name
    return str(verdicts) if verdicts.exists() else ""


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
    if item.get("scores"):  # a re-run: its own part, or its rows in the merged scores part
        again = needs_rescore(compact.read_unit_rows(item["scores"], item["scores_offset"], item["scores_rows"]))
        todo = todo.filter(pc.is_in(todo["sample_id"], value_set=again["sample_id"].combine_chunks()))
    return todo


def finish_judge_unit(item: dict, scores: pa.Table) -> dict:
    """Write a judge unit's scores part (merged into the old part on a re-run); its summary row."""
    out = Path(item["out"])
    outcome = unit_outcome(scores)  # this run's rows only, before the merge
    if item.get("scores"):
        scores = merge_rescored(compact.read_unit_rows(item["scores"], item["scores_offset"], item["scores_rows"]), scores)
    write_part(out, scores)
    return {"dataset": item["dataset"], "rows": scores.num_rows,
            "failed": sum(s not in SCORED_STATUSES for s in scores["status"].to_pylist()), **outcome}
