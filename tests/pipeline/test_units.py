"""The plan table's blocks (pipeline.units): how many units a block (one task) holds follows the
phases' declared cost, and the grouping of units into blocks never changes what a unit writes."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from manifests.io import write_part
from pipeline.stage import Phase, Resources, Unit, run_phases
from pipeline.units import (BLOCKS_PER_CPU, MAX_CHEAP_UNITS_PER_BLOCK, MAX_UNITS_PER_BLOCK, TARGET_BLOCK_SECONDS,
                            plan_table, units_per_block)


def test_undeclared_cost_keeps_many_small_blocks_for_balance():
    # 2,000 units on 2 CPUs: 16 blocks, as a slow phase (probe, judge) needs
    assert units_per_block(2000, 2) == 2000 // (BLOCKS_PER_CPU * 2)
    assert units_per_block(10, 2) == 1
    assert units_per_block(10_000_000, 2) == MAX_UNITS_PER_BLOCK
    assert units_per_block(2000, 2, one_per_block=True, unit_seconds=1e-6) == 1  # a unit's memory reserved


def test_declared_cost_sizes_blocks_by_seconds_of_work():
    # trivial units: as many blocks as cores, not 8 per core
    assert units_per_block(2000, 2, unit_seconds=1e-5) == 1000
    assert units_per_block(20_000, 2, unit_seconds=1e-5) == 10_000
    # a million trivial units: blocks of about TARGET_BLOCK_SECONDS, and a bounded size
    per = units_per_block(1_000_000, 2, unit_seconds=1e-5)
    assert per == min(MAX_CHEAP_UNITS_PER_BLOCK, int(TARGET_BLOCK_SECONDS / 1e-5))
    # slow units (seconds each): one per block, however few cores
    assert units_per_block(500, 2, unit_seconds=5.0) == 1
    assert units_per_block(100_000, 64, unit_seconds=0.5) == int(TARGET_BLOCK_SECONDS / 0.5)
    # never fewer blocks than a phase's replicas ask for (min_blocks), nor than the cores
    assert units_per_block(2000, 2, min_blocks=40, unit_seconds=1e-5) == 50
    assert units_per_block(2000, 16, unit_seconds=1e-5) == 125


def test_plan_table_is_the_units_items_as_a_table():
    """Built column by column, it is the table of the units' items (the first item's keys, a
    missing parameter null, nested values kept), so the phases see the same rows as before."""
    units = [Unit("a", "ds", 3, "/o/a", {"part": "p0", "offset": 0, "ids": [1, 2], "extra": None}),
             Unit("b", "ds", 4, "/o/b", {"part": "p1", "offset": 3, "ids": [], "extra": "x"}),
             Unit("c", "ds2", 0, "/o/c", {"offset": 7, "more": 1})]
    assert plan_table(units).equals(pa.Table.from_pylist([u.item() for u in units]))
    assert plan_table(units).column_names == ["part", "offset", "ids", "extra", "key", "dataset", "length", "out"]


def _write_unit(item: dict) -> dict:
    """A unit's output depends on the unit only (its key and offset), whatever block carried it."""
    write_part(Path(item["out"]), pa.table({"key": [item["key"]], "twice": [2 * int(item["offset"])]}))
    return {"dataset": item["dataset"], "rows": 1, "failed": 0}


class _Rows:
    def __init__(self):
        self.rows = []

    def advance(self, row):
        self.rows.append(row)


def _digests(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob("*.parquet"))}


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_block_grouping_follows_cost_and_leaves_every_unit_output_alike(ray_session, tmp_path):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/
    results = {}
    for label, cost in (("cheap", 1e-4), ("undeclared", None)):
        out = tmp_path / label / "out"
        units = [Unit(f"u{i:05d}", "bench", 1, str(out / f"u{i:05d}.parquet"), {"offset": i}) for i in range(300)]
        progress = _Rows()
        plan = tmp_path / label / "plan"
        rows = list(run_phases([Phase("write", _write_unit, Resources(cpus=1), unit_seconds=cost)], units,
                               progress, plan))
        assert len(rows) == len(progress.rows) == 300 and sum(r["rows"] for r in rows) == 300
        results[label] = (len(list(plan.glob("*.parquet"))), _digests(out))
    # the plan's files are its blocks: 2 (the session's CPUs) for a cheap phase, 16 undeclared
    assert results["cheap"][0] == 2 and results["undeclared"][0] == 2 * BLOCKS_PER_CPU
    assert len(results["cheap"][1]) == 300 and results["cheap"][1] == results["undeclared"][1]
