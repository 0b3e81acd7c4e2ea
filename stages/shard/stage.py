"""`curate run --stage shard`: plan on the driver, one Ray task per shard, then the index tables.

Resumable: a shard whose tar and done record (same plan digest) exist is skipped; a killed run's
temporary files are removed; shards the plan no longer names are deleted. The index tables
``shards`` and ``shard_keys`` are rewritten at the end from the done records and the plan.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from manifests.io import atomic_file, table_dir, write_part
from manifests.schema import SHARD_KEYS, SHARDS
from manifests.tables import Table
from pipeline.progress import console
from pipeline.stage import Context, Phase, Stage, StageFacts, StatusContext, Unit, state_dir
from stages.shard.plan import write_shard_plan
from stages.shard.prune_sharded import restore
from stages.shard.write import done_record_path, is_done, write_shard


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
        rows.append({k: rec[k] for k in SHARDS.names})
    shutil.rmtree(table_dir(workdir, "shards"), ignore_errors=True)
    write_part(table_dir(workdir, "shards") / "part-00000.parquet", pa.Table.from_pylist(rows, SHARDS))
    done_shards = pa.array([u["shard"] for u in done], pa.string())  # one entry per shard, not per key
    out = table_dir(workdir, "shard_keys") / "part-00000.parquet"
    shutil.rmtree(out.parent, ignore_errors=True)
    out.parent.mkdir(parents=True)
    n_keys = 0
    with atomic_file(out) as f, pq.ParquetWriter(f, SHARD_KEYS, compression="zstd") as writer:
        for batch in pq.ParquetFile(plan).iter_batches(batch_size=65536, columns=SHARD_KEYS.names):
            table = pa.Table.from_batches([batch]).select(SHARD_KEYS.names)
            table = table.filter(pc.is_in(table["shard"], value_set=done_shards)).cast(SHARD_KEYS)
            n_keys += table.num_rows
            writer.write_table(table)
    return len(done), n_keys


def _unit(spec) -> Unit:
    u = spec.as_unit()
    return Unit(u["shard"], f"{u['purpose']}/{u['modality']}", u["samples"], u["shard"], u)


def plan(ctx: Context) -> list[Unit]:
    """Plan the shards, put back the tensors `curate prune --sharded` left only in shards this run
    rewrites or removes, then remove what the plan no longer names."""
    specs = write_shard_plan(ctx.workdir, plan_path(ctx.workdir), ctx.cfg.shard.target_bytes, ctx.cfg.shard.plan_batch_rows)
    units = [_unit(s) for s in specs]
    restored = restore(ctx.workdir, {u.params["shard"] for u in units if is_done(ctx.workdir, u.params)})
    if restored:
        console.print(f"shard: {restored} pruned encodings read back from the shards they were in")
    removed = remove_stale(ctx.workdir, [u.params for u in units])
    if removed:
        console.print(f"shard: {removed} stale files removed")
    return units


def check(ctx: Context) -> None:
    """--overwrite deletes every shard before planning: first the tensors only shards hold go back
    into the encoded table."""
    if ctx.overwrite:
        restore(ctx.workdir, set())


def describe(ctx: Context, units: list[Unit], pending: list[Unit]) -> str:
    return (f"shard: {len(units)} shards planned ({sum(u.rows for u in units)} keys), "
            f"{len(units) - len(pending)} already written or deferred")


def summary(ctx: Context) -> tuple[list[str], list[list]]:
    workdir = ctx.workdir
    rows: dict[str, list] = {}
    for r in pq.read_table(table_dir(workdir, "shards")).to_pylist():
        name = f"{r['purpose']}/{r['modality']}"
        row = rows.setdefault(name, [name, 0, 0, 0])
        row[1] += 1
        row[2] += r["samples"]
        row[3] += r["bytes"]
    return ["purpose/modality", "shards", "keys", "bytes"], [rows[k] for k in sorted(rows)]


def finish(ctx: Context, units: list[Unit]) -> None:
    write_index(ctx.workdir, plan_path(ctx.workdir), [u.params for u in units])
    if not units:  # an empty selection: empty shard tables, no tars, exit 0 (a selection may be empty)
        console.print("shard: no kept sample has an encoded key (the selection is empty); the shards and "
                      "shard_keys tables are empty and no tar remains")


def status(sc: StatusContext) -> list[list]:
    """The shard's `curate status` row: keys in shards, and the encoded keys of kept samples not in
    one yet (a difference of counts: every shard key is one such key)."""
    if "samples" not in sc.present or "selected" not in sc.present or "shard_keys" not in sc.present:
        return []
    sharded, n_shards = sc.con.execute("SELECT count(*), count(DISTINCT shard) FROM shard_keys").fetchone()
    return [["shard", sharded, 0, max(0, sc.figures.get("encoded_ok", 0) - sharded),
             f"{n_shards} shards; `curate verify` checks them"]]


STAGE = Stage(
    name="shard", reads=("encoded", "selected"), writes=("shards", "shard_keys"), section="shard",
    # The shard index: one row per shard tar, and which shard holds each key.
    tables=(Table("shards", "shard", SHARDS, partition=None), Table("shard_keys", "shard", SHARD_KEYS, partition=None)),
    facts=StageFacts(reaches="kept", counts=("shard_keys", "count(*)", "count(DISTINCT sample_id)"),
                     status=status),
    outputs=("shards",),
    fingerprint=lambda ctx: {"all": {"shard": {"target_bytes": ctx.cfg.shard.target_bytes}}},
    plan=plan, describe=describe, check=check,
    is_done=lambda ctx, unit: is_done(ctx.workdir, unit.params),
    phases=lambda ctx: [Phase("write", _unit_fn(str(ctx.workdir.resolve()), str(plan_path(ctx.workdir).resolve())))],
    finish=finish,
    summary=summary,
)
