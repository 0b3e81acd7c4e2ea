"""The stage contract's cost per unit: ``pipeline.stage.run_phases`` over N units of a trivial phase
vs a bare ``ray.data`` map over N rows, in the same run, on a local Ray cluster.

    python bench/bench_units.py [--units 2000,20000,200000] [--cpus 2] [--old 2000] [--smoke]

For each N it prints the wall time per unit of the contract (from the stage's planned units: the
plan table written and read back, the phase, the summary rows back on the driver) and of the bare map (``ray.data.range(N).map``),
their ratio, and the driver's peak RSS during each (sampled every 10 ms). The trivial phase
declares its cost (``Phase.unit_seconds``), so the plan has about as many blocks as cores; the
"fixed ratio" column times the same phase undeclared (8 blocks per CPU, the rule before blocks
followed the cost) against the same bare map. ``--old N`` also times
the contract as it was (``ray.data.from_items`` with a block per unit) at those sizes, for the
before/after table. Goals: contract per unit at the largest N <= 1.2x that at the smallest, and
contract <= 1.5x bare. Then the bytes a judge unit reads against those of the rows it scores
(goal <= 2x), before and after units read their own row groups.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.stage import Phase, Resources, Unit, run_phases  # noqa: E402


def trivial(item: dict) -> dict:
    return {"dataset": item["dataset"], "rows": int(item["length"]), "failed": 0}


class _Quiet:
    def advance(self, row):
        pass


class PeakRss:
    """The driver's peak RSS (bytes) while the block runs, sampled on a thread."""

    def __enter__(self):
        self.proc, self.peak, self.stop = psutil.Process(), 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.01)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def units_of(n: int, out: Path) -> list[Unit]:
    """What a stage's plan hands the contract (made before the timing: the stage's own cost)."""
    root = str(out)
    return [Unit(f"u{i:09d}", "bench", 1, f"{root}/u{i:09d}.parquet", {"part": "p", "offset": i}) for i in range(n)]


# What the trivial phase declares it costs per unit (its call and Ray Data's row conversion are
# microseconds): the contract then sizes its blocks by it, as a cheap real phase would.
TRIVIAL_SECONDS = 1e-5


def contract(n: int, work: Path, unit_seconds: float | None = TRIVIAL_SECONDS) -> tuple[float, int]:
    """``unit_seconds=None``: the phase declares no cost, so the plan keeps the blocks of a slow
    phase (``BLOCKS_PER_CPU`` per CPU): the contract as it was before phases declared their cost."""
    units = units_of(n, work)
    with PeakRss() as rss:
        t0 = time.perf_counter()
        phase = Phase("trivial", trivial, Resources(cpus=1), unit_seconds=unit_seconds)
        rows = sum(1 for _ in run_phases([phase], units, _Quiet(), work / "units"))
        wall = time.perf_counter() - t0
    assert rows == n
    return wall, rss.peak


def bare(n: int) -> tuple[float, int]:
    import ray

    with PeakRss() as rss:
        t0 = time.perf_counter()
        ds = ray.data.range(n).map(lambda r: {"dataset": "bench", "rows": 1, "failed": 0}, num_cpus=1)
        rows = sum(1 for _ in ds.iter_rows())
        wall = time.perf_counter() - t0
    assert rows == n
    return wall, rss.peak


def old_contract(n: int, work: Path) -> tuple[float, int]:
    """The contract before the plan table: an item per unit through from_items, a block each."""
    import ray

    units = units_of(n, work)
    with PeakRss() as rss:
        t0 = time.perf_counter()
        items = [u.item() for u in units]
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map(trivial, num_cpus=1)
        rows = sum(1 for _ in ds.iter_rows())
        wall = time.perf_counter() - t0
    assert rows == n
    return wall, rss.peak


def judge_read_bytes(work: Path, part_rows: int, unit_rows: int) -> None:
    """Bytes a judge unit reads (``stages.judge.units.judge_todo`` -> ``read_slice``) against the
    bytes of the rows it scores, on a samples part of ``part_rows`` realistic rows; and what it read
    before (the whole part, written in 65,536-row groups)."""
    import pyarrow.parquet as pq

    from manifests.io import read_slice, write_part
    from manifests.schema import SAMPLES, empty_sample, rows_to_table

    rows = [empty_sample("koala", f"koala:{i:012d}", modality="video", task="t2v", source_uri=None,
                         target_uri=f"videos/{i // 8:08d}.mp4", clip_start_s=float(i % 8) * 10.0,
                         clip_end_s=float(i % 8) * 10.0 + 10.0, caption=f"a caption of clip {i} " * 8)
            for i in range(part_rows)]
    table = rows_to_table(rows, SAMPLES)
    for label, group in (("before (whole part, 65,536-row groups)", 65536), ("after (its row groups)", None)):
        path = work / f"samples-{label[:5]}.parquet"
        write_part(path, table, **({"row_group_size": group} if group else {}))
        meta = pq.ParquetFile(path).metadata
        scored = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups)) * unit_rows / part_rows
        offset = (part_rows // 2 // unit_rows) * unit_rows  # a unit in the middle of the part
        if group:
            read = sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
        else:
            got = read_slice(path, offset, unit_rows)
            assert got.equals(table.slice(offset, unit_rows))
            starts, start = [], 0
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                if start < offset + unit_rows and start + n > offset:
                    starts.append(g)
                start += n
            read = sum(meta.row_group(g).total_byte_size for g in starts)
        print(f"judge unit of {unit_rows} rows in a {part_rows}-row part, {label}: reads {read / 2**20:.2f} MB "
              f"for {scored / 2**20:.2f} MB scored = {read / scored:.1f}x (goal <= 2x)")


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", default="2000,20000,200000")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--old", default="", help="sizes at which to time the old from_items contract too")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (tests)")
    args = ap.parse_args(argv)
    sizes = [20, 200] if args.smoke else [int(x) for x in args.units.split(",")]
    old = [20] if args.smoke else [int(x) for x in args.old.split(",") if x]

    import ray
    from ray.data import DataContext

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = False
    results = []
    print("contract: blocks sized by the phase's declared cost; fixed: the blocks of an undeclared "
          "(slow) phase, 8 per CPU, as before; old: from_items, a block per unit")
    print(f"{'units':>8} {'contract ms/unit':>17} {'bare ms/unit':>13} {'ratio':>6} {'fixed ratio':>12} "
          f"{'contract MB':>12} {'bare MB':>8} {'old ms/unit':>12} {'old MB':>7}")
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as tmp:
        # warm both paths (the workers, and the first from_arrow/parquet calls: seconds once per process)
        bare(100)
        contract(100, Path(tmp) / "warm")
        for n in sizes:
            c_wall, c_rss = contract(n, Path(tmp) / f"c{n}")
            b_wall, b_rss = bare(n)
            f_wall, _ = contract(n, Path(tmp) / f"f{n}", unit_seconds=None)
            o_wall, o_rss = old_contract(n, Path(tmp) / f"o{n}") if n in old else (None, None)
            r = {"units": n, "contract_ms": 1e3 * c_wall / n, "bare_ms": 1e3 * b_wall / n,
                 "ratio": c_wall / b_wall, "fixed_ratio": f_wall / b_wall,
                 "contract_mb": c_rss / 2**20, "bare_mb": b_rss / 2**20,
                 "old_ms": None if o_wall is None else 1e3 * o_wall / n, "old_mb": None if o_rss is None else o_rss / 2**20}
            results.append(r)
            old_ms = "" if o_wall is None else f"{r['old_ms']:.3f}"
            old_mb = "" if o_rss is None else f"{r['old_mb']:.0f}"
            print(f"{n:>8} {r['contract_ms']:>17.3f} {r['bare_ms']:>13.3f} {r['ratio']:>6.2f} {r['fixed_ratio']:>12.2f} "
                  f"{r['contract_mb']:>12.0f} {r['bare_mb']:>8.0f} {old_ms:>12} {old_mb:>7}", flush=True)
        judge_read_bytes(Path(tmp), 5000 if args.smoke else 100_000, 1000)
    first, last = results[0], results[-1]
    print(f"per-unit overhead at {last['units']} / at {first['units']}: "
          f"{last['contract_ms'] / first['contract_ms']:.2f}x (goal <= 1.2x); contract / bare: "
          + ", ".join(f"{r['ratio']:.2f}x at {r['units']}" for r in results) + " (goal <= 1.5x)")
    if started:
        ray.shutdown()
    return results


if __name__ == "__main__":
    main()
