"""Part counts before/after compaction on a synthetic probes table: N rows cut into samples parts
of ``--rows-per-part`` rows and probe units of ``--rows-per-task`` rows (one part per unit, as the
probe writes them), then merged by ``manifests.compact`` as run_stage does once no unit is pending.
Prints parts before/after, their ratio, the merge time, and checks rows and a digest are unchanged.

    python bench/bench_compact.py --rows 1000000          # the 1M point
    python bench/bench_compact.py --smoke                 # tiny N, for tests
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from manifests import compact  # noqa: E402
from manifests.io import list_parts, read_parquet_sql, table_dir, write_part  # noqa: E402


def write_units(workdir: Path, rows: int, rows_per_part: int, rows_per_task: int) -> list:
    units = []
    for p, start in enumerate(range(0, rows, rows_per_part)):
        samples_part = f"samples/ds/part-{p:05d}.parquet"
        for offset in range(0, min(rows_per_part, rows - start), rows_per_task):
            n = min(rows_per_task, rows_per_part - offset, rows - start - offset)
            out = table_dir(workdir, "probes") / "ds" / f"part-{p:05d}-r{offset:09d}.parquet"
            ids = pa.array([f"s{start + offset + i:012d}" for i in range(n)])
            write_part(out, pa.table({"sample_id": ids, "fps": pa.array([25.0] * n), "error": pa.nulls(n, pa.string())}))
            units.append(SimpleNamespace(out=str(out), params={"part": samples_part}))
    return units


def digest(workdir: Path) -> tuple[int, int]:
    return duckdb.connect().execute(f"SELECT count(*), sum(hash(sample_id)) FROM {read_parquet_sql(workdir, 'probes')}").fetchone()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rows-per-part", type=int, default=100_000)
    ap.add_argument("--rows-per-task", type=int, default=1_000)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "compact")
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    if a.smoke:
        a.rows, a.rows_per_part, a.rows_per_task = 5_000, 2_000, 500
    shutil.rmtree(a.out, ignore_errors=True)
    units = write_units(a.out, a.rows, a.rows_per_part, a.rows_per_task)
    before, rows_before = len(list_parts(a.out, "probes")), digest(a.out)
    t0 = time.time()
    written = compact.compact_table(a.out, "probes", compact.by_input_part(units))
    seconds = time.time() - t0
    after = len(list_parts(a.out, "probes"))
    assert digest(a.out) == rows_before, "rows changed by the merge"
    print(f"rows {a.rows:,}: probes parts before {before:,} after {after:,} "
          f"(ratio {before / after:.0f}x, {written} merged parts written in {seconds:.1f}s)")
    shutil.rmtree(a.out, ignore_errors=True)


if __name__ == "__main__":
    main()
