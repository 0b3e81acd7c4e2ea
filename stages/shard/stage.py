"""`curate run --stage shard`: plan on the driver, one Ray task per shard, then the index tables.

Resumable: a shard whose tar and done record (same plan digest) exist is skipped; a killed run's
temporary files are removed; shards the plan no longer names are deleted. The index tables
``shards`` and ``shard_keys`` are rewritten at the end from the done records and the plan.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from manifests.io import atomic_file, list_parts, table_dir, write_part
from pipeline.config import Config, ConfigError
from pipeline.progress import Progress, console
from pipeline.ray_runtime import map_units
from pipeline.runner import StageReport, _whole_units, begin_stage, state_dir
from stages.shard.plan import write_plan
from stages.shard.write import done_record_path, is_done, write_shard

SHARDS_SCHEMA = pa.schema([("shard", pa.string()), ("purpose", pa.string()), ("modality", pa.string()),
                           ("bucket", pa.string()), ("samples", pa.int64()), ("bytes", pa.int64()),
                           ("sha256", pa.string())])
SHARD_KEYS_SCHEMA = pa.schema([("key", pa.string()), ("sample_id", pa.string()), ("shard", pa.string())])


def plan_path(workdir: Path) -> Path:
    return state_dir(workdir, "shards") / "plan.parquet"


def _unit_fn(workdir: str, plan: str) -> Callable[[dict], dict]:
    def run(unit: dict) -> dict:
        row = write_shard(Path(workdir), Path(plan), unit)
        return {"dataset": f"{unit['purpose']}/{unit['modality']}", "rows": row["samples"], "failed": 0}

    return run


def remove_stale(workdir: Path, units: list[dict]) -> int:
    """Delete temporaries of a killed run, and shards (and done records) the plan does not name."""
    root = Path(workdir) / "shards"
    keep = {u["shard"] for u in units}
    n = 0
    if root.exists():
        for p in sorted(root.rglob("*")):
            rel = str(p.relative_to(workdir))
            if p.is_file() and (p.name.endswith(".tmp") or (p.suffix == ".tar" and rel not in keep)):
                p.unlink()
                n += 1
    for p in state_dir(workdir, "shards").rglob(".*.tmp"):  # a killed planner's or recorder's file
        p.unlink(missing_ok=True)
    done_dir = done_record_path(workdir, "x").parent
    if done_dir.exists():
        names = {done_record_path(workdir, s).name for s in keep}
        for p in done_dir.glob("*.json"):
            if p.name not in names:
                p.unlink()
    return n


def write_index(workdir: Path, plan: Path, units: list[dict]) -> tuple[int, int]:
    """``shards`` from the done records, ``shard_keys`` streamed from the plan (done shards only)."""
    done = [u for u in units if is_done(workdir, u)]
    rows = []
    for u in done:
        rec = json.loads(done_record_path(workdir, u["shard"]).read_text())
        rows.append({k: rec[k] for k in SHARDS_SCHEMA.names})
    shutil.rmtree(table_dir(workdir, "shards"), ignore_errors=True)
    write_part(table_dir(workdir, "shards") / "part-00000.parquet", pa.Table.from_pylist(rows, SHARDS_SCHEMA))
    names = {u["shard"] for u in done}
    out = table_dir(workdir, "shard_keys") / "part-00000.parquet"
    shutil.rmtree(out.parent, ignore_errors=True)
    out.parent.mkdir(parents=True)
    n_keys = 0
    with atomic_file(out) as f, pq.ParquetWriter(f, SHARD_KEYS_SCHEMA, compression="zstd") as writer:
        for batch in pq.ParquetFile(plan).iter_batches(batch_size=65536, columns=SHARD_KEYS_SCHEMA.names):
            table = pa.Table.from_batches([batch]).select(SHARD_KEYS_SCHEMA.names)
            mask = pa.array([s in names for s in table["shard"].to_pylist()], pa.bool_())
            table = table.filter(mask).cast(SHARD_KEYS_SCHEMA)
            n_keys += table.num_rows
            writer.write_table(table)
    return len(done), n_keys


def run_shard(cfg: Config, workdir: Path, limit: int | None, overwrite: bool) -> StageReport:
    workdir = Path(workdir)
    if overwrite:
        shutil.rmtree(workdir / "shards", ignore_errors=True)
        shutil.rmtree(table_dir(workdir, "shard_keys"), ignore_errors=True)
    begin_stage(workdir, "shards", "encoded", "encode", {"shard": {"target_bytes": cfg.shard.target_bytes}},
                overwrite)
    if not list_parts(workdir, "selected"):
        raise ConfigError(f"{workdir}: no selected table; run `curate run --stage filter` first")
    t0 = time.time()
    plan = plan_path(workdir)
    specs = write_plan(workdir, plan, cfg.shard.target_bytes, cfg.shard.plan_batch_rows)
    units = [s.as_unit() for s in specs]
    removed = remove_stale(workdir, units)
    pending = [u for u in units if not is_done(workdir, u)]
    if limit is not None:
        pending = _whole_units(pending, limit)
    console.print(f"shard: {len(units)} shards planned ({sum(u['samples'] for u in units)} keys), "
                  f"{len(units) - len(pending)} already written or deferred"
                  + (f", {removed} stale files removed" if removed else ""))
    fn = _unit_fn(str(workdir.resolve()), str(plan.resolve()))
    with Progress("shard", len(pending)) as progress:
        for _ in map_units(fn, pending, progress):
            pass
    n_done, n_keys = write_index(workdir, plan, units)
    if not units:  # an empty selection: empty shard tables, no tars (issue 14), exit 0
        console.print("shard: no kept sample has an encoded key (the selection is empty); the shards and "
                      "shard_keys tables are empty and no tar remains")
    rows: dict[str, list] = {}
    for u in units:
        if is_done(workdir, u):
            r = rows.setdefault(f"{u['purpose']}/{u['modality']}", [f"{u['purpose']}/{u['modality']}", 0, 0, 0])
            r[1] += 1
            r[2] += u["samples"]
            r[3] += json.loads(done_record_path(workdir, u["shard"]).read_text())["bytes"]
    return StageReport("shard", len(units), len(pending), time.time() - t0, [rows[k] for k in sorted(rows)],
                       ["purpose/modality", "shards", "keys", "bytes"])
