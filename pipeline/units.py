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

# How many units go in a block (so in one task of a map phase). Each task costs Ray a few
# milliseconds to schedule and ship (``bench/bench_units.py``): a trivial unit (microseconds) wants
# as few blocks as there are cores, a slow unit (a probe, a judge, an encode: seconds each) wants
# many small blocks so that the last ones do not leave cores idle behind one long task. A constant
# number of blocks per CPU fits one of them only, so the count follows the phases' declared cost
# (``Phase.unit_seconds``): enough blocks that one holds about ``TARGET_BLOCK_SECONDS`` of work,
# never fewer than the cores (nor than ``min_blocks``), never more than the units. The cost is
# declared rather than learnt from the first blocks: a Ray Data plan's blocks are fixed before it
# runs, and re-cutting the plan mid-run would cost the scheduling it is meant to save.
# A phase that declares no cost is taken to be slow (every real stage today): ``BLOCKS_PER_CPU``
# blocks per CPU of at most ``MAX_UNITS_PER_BLOCK`` units each, as before.
TARGET_BLOCK_SECONDS = 2.0
BLOCKS_PER_CPU = 8
MAX_UNITS_PER_BLOCK = 1024
# Of a declared-cheap phase: a plan row is ~100 bytes, so a block stays a few megabytes even when
# a million trivial units would fit in the time target.
MAX_CHEAP_UNITS_PER_BLOCK = 65536


def units_per_block(n_units: int, cpus: int, min_blocks: int = 0, one_per_block: bool = False,
                    unit_seconds: float | None = None) -> int:
    """How many units one block (so one task of a map phase) holds; ``unit_seconds``: the
    expected seconds of one unit through all the phases (None: unknown, taken as slow)."""
    if one_per_block or n_units <= 0:
        return 1
    cpus = max(cpus, 1)
    if unit_seconds is None:
        blocks = max(BLOCKS_PER_CPU * cpus, min_blocks)
        return max(1, min(MAX_UNITS_PER_BLOCK, math.ceil(n_units / blocks)))
    blocks = min(n_units, max(math.ceil(n_units * unit_seconds / TARGET_BLOCK_SECONDS), cpus, min_blocks))
    return max(1, min(MAX_CHEAP_UNITS_PER_BLOCK, math.ceil(n_units / blocks)))


def plan_table(units: list) -> pa.Table:
    """The units' items (``pipeline.stage.Unit.item``) as one Arrow table, built column by column:
    the same table as ``pa.Table.from_pylist([u.item() for u in units])`` (columns: the first
    item's keys) without a dict per unit, which cost the driver most of its per-unit time."""
    if not units:
        return pa.table({})
    own = {"key": lambda u: u.key, "dataset": lambda u: u.dataset, "length": lambda u: u.rows, "out": lambda u: u.out}
    columns = {}
    for name in units[0].item():
        get = own.get(name)
        columns[name] = pa.array([get(u) for u in units] if get else [u.params.get(name) for u in units])
    return pa.table(columns)


def write_unit_plan(table: pa.Table, directory: Path, per_block: int) -> list[pa.Table]:
    """Write the plan as Parquet files of ``per_block`` rows each (one schema for all: a column
    empty in one unit has the type it has in the others); returns the blocks written, in unit
    order, to be handed to Ray as they are (reading the files back would cost the driver again
    what it has in memory already)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    blocks = []
    for i, start in enumerate(range(0, table.num_rows, per_block)):
        block = table.slice(start, per_block)
        pq.write_table(block, directory / f"units-{i:06d}.parquet", compression="zstd")
        blocks.append(block)
    return blocks


def read_unit_plan(blocks: list[pa.Table]):
    """The plan's blocks as a Ray Dataset (units are rows, a block a task of a map phase). Handed
    over as Arrow blocks, not read by Ray's Parquet reader: that starts listing and read tasks
    (seconds of worker start-up on a small machine) for files of a few kilobytes each."""
    import ray

    return ray.data.from_arrow(blocks)


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
