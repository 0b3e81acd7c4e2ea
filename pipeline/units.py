"""The pending units of a stage as data: a plan table (Parquet under ``state/<table>/_units/``) read
back as a Ray Dataset, and the regroup actor that puts a unit's per-sample rows back together.

Why a table and not ``ray.data.from_items``: from_items serialises every item on the driver and
makes a block (so a scheduled task) per unit, which costs milliseconds per unit and driver memory
per unit. A file of many units is one block; a map phase runs a block's units one after the other in one
task, so the per-unit cost is the call, and a resumed or inspected run sees what was planned.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

# Blocks per CPU of the cluster: enough that a slow unit does not leave the other cores idle at the
# end, few enough that scheduling a block costs little beside its units.
BLOCKS_PER_CPU = 8
MAX_UNITS_PER_BLOCK = 1024


def units_per_block(n_units: int, cpus: int, min_blocks: int = 0, one_per_block: bool = False) -> int:
    """How many units one block (so one task of a map phase) holds."""
    if one_per_block or n_units <= 0:
        return 1
    blocks = max(BLOCKS_PER_CPU * max(cpus, 1), min_blocks)
    return max(1, min(MAX_UNITS_PER_BLOCK, math.ceil(n_units / blocks)))


def write_unit_plan(items: list[dict[str, Any]], directory: Path, per_block: int) -> list[str]:
    """Write the items as Parquet files of ``per_block`` rows each (one schema for all: a column
    empty in one unit has the type it has in the others); returns the files, in item order."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    table = pa.Table.from_pylist(items)
    paths = []
    for i, start in enumerate(range(0, table.num_rows, per_block)):
        path = directory / f"units-{i:06d}.parquet"
        pq.write_table(table.slice(start, per_block), path, compression="zstd")
        paths.append(str(path))
    return paths


def read_unit_plan(paths: list[str]):
    """The plan files as a Ray Dataset: a block per file (units are rows). Read here and handed
    over as Arrow blocks: Ray's Parquet reader starts listing and read tasks (seconds of worker
    start-up on a small machine) for files of a few kilobytes each."""
    import ray

    return ray.data.from_arrow([pq.read_table(p) for p in paths])


class Regroup:
    """Ray Data actor of a ``regroup`` phase: buffers each unit's rows (``pipeline.stage.UNIT_COLUMNS``)
    until all ``unit_rows`` of them are back, then calls ``fn(item, rows)`` (the unit's rows in
    ``pos`` order, its marker row left out), which writes the unit's part and returns its summary
    row. Emits one ``summary`` (JSON) row per finished unit. One actor sees every row of a unit,
    so the pool has one actor; what it holds is the rows of units not finished yet (small rows:
    a judge's scores, not its requests)."""

    def __init__(self, fn: Callable[[dict, pa.Table], dict], *args):
        self.fn, self.args = fn, args
        self.pending: dict[str, list[pa.Table]] = {}
        self.counts: dict[str, int] = {}

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow.compute as pc

        summaries = []
        keys = batch["unit"].to_pylist()
        for key in dict.fromkeys(keys):
            rows = batch.filter(pc.equal(batch["unit"], key))
            self.pending.setdefault(key, []).append(rows)
            self.counts[key] = self.counts.get(key, 0) + int(pc.sum(pc.greater_equal(rows["pos"], 0)).as_py() or 0)
            if self.counts[key] == rows["unit_rows"][0].as_py():
                whole = pa.concat_tables(self.pending.pop(key))
                del self.counts[key]
                item = json.loads(whole["unit_item"][0].as_py())
                whole = whole.filter(pc.greater_equal(whole["pos"], 0))
                whole = whole.take(pc.sort_indices(whole["pos"]))
                summaries.append(json.dumps(self.fn(item, whole, *self.args)))
        return pa.table({"summary": pa.array(summaries, pa.string())})
