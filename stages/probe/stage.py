"""`curate run --stage probe`: every resolved samples row measured by ``core.probe_table`` in Ray
tasks, one unit per slice of ``run.rows_per_task`` rows of a samples part (stable names)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from manifests import catalog, compact, repeats
from manifests.io import dataset_of, list_parts, read_slice, table_dir, write_part
from manifests.schema import PROBES
from manifests.tables import Table
from pipeline.stage import Phase, Stage, StageFacts, Unit
from stages.media.locate import dataset_roots
from stages.probe.config import decode_check
from stages.probe.core import probe_table
from stages.probe.counts import probe_counts, probe_status

PROBE_COLUMNS = ["sample_id", "dataset", "modality", "source_uri", "target_uri", "clip_start_s", "clip_end_s",
                 "skip_frames", "error"]


def _probe_unit_fn(check: str, roots: dict[str, list[str]]) -> Callable[[dict], dict]:
    def run(item: dict) -> dict:
        present = pq.read_schema(item["part"]).names  # parts written before skip_frames lack it
        table = read_slice(item["part"], item["offset"], item["length"], [c for c in PROBE_COLUMNS if c in present])
        if item["drop"]:  # rows the samples view drops (repeated ids) are not probed twice
            drop = set(item["drop"])
            keep = [i for i in range(table.num_rows) if i not in drop]
            table = table.take(pa.array(keep, pa.int64()))
        out = probe_table(table, decode_check=check, allowed_roots=roots)
        write_part(Path(item["out"]), out)
        failed = int(pc.sum(pc.is_valid(out["error"])).as_py() or 0) if out.num_rows else 0
        return {"dataset": item["dataset"], "rows": out.num_rows, "failed": failed}

    return run


def probe_units(workdir: Path, rows_per_task: int) -> list[Unit]:
    """One unit per slice of ``rows_per_task`` rows of each samples part (stable names); ``drop``
    lists the slice's rows that repeat an earlier sample id (read once here, not in every task)."""
    repeated = repeats.rows_by_part(workdir)  # by part name relative to tables/samples (the same run from another cwd writes the same bytes)
    units = []
    for part in list_parts(workdir, "samples"):
        n = pq.ParquetFile(part).metadata.num_rows
        dataset = dataset_of(part)
        rows = repeated.get(repeats.part_name(part), [])
        for offset in range(0, n, rows_per_task):
            length = min(rows_per_task, n - offset)
            out = table_dir(workdir, "probes") / part.parent.name / f"{part.stem}-r{offset:09d}.parquet"
            units.append(Unit(f"{part.parent.name}/{part.stem}-r{offset:09d}", dataset, length, str(out),
                              {"part": str(part), "offset": offset,
                               "drop": [r - offset for r in rows if offset <= r < offset + length]}))
    return units


STAGE = Stage(
    name="probe", reads=("samples",), writes=("probes",), section="probe", needs_media=True,
    tables=(Table("probes", "probe", PROBES, joined=(
        "p", "p.* EXCLUDE (sample_id, dataset, schema_version, error, error_kind), "
             "p.error_kind AS probe_error_kind, p.error AS probe_error")),),
    facts=StageFacts(reaches="samples", status=probe_status),
    # The record keeps the shape it had when both settings were the probe's own (rows_per_task,
    # decode_check), so a workdir probed then resumes with the same effective settings.
    fingerprint=lambda ctx: {"all": {"probe": {"rows_per_task": ctx.cfg.run.rows_per_task,
                                               "decode_check": decode_check(ctx.cfg)}}},
    plan=lambda ctx: probe_units(ctx.workdir, ctx.cfg.run.rows_per_task),
    phases=lambda ctx: [Phase("probe", _probe_unit_fn(decode_check(ctx.cfg), dataset_roots(ctx.cfg)))],
    summary=lambda ctx: (["dataset", "to probe", "probed", "failed", "pending"],
                         probe_counts(catalog.connect(ctx.workdir))),
    compact=lambda ctx, units: {"probes": compact.by_input_part(units)},
)
