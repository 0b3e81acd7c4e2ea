"""Benchmark the Koala-36M ingest against a bare pyarrow CSV read of the same file.

    python bench/bench_koala_ingest.py [--rows N] [--block-mb MB] [--rows-per-part N]

Generates a synthetic Koala-style CSV (about 1.2 KB a row, like the published files) under
bench/out/ (reused when it already has N rows), then measures on that one file:
(a) ``pyarrow.csv.read_csv`` with default options (multi-threaded, whole file in memory), and
    (a') our bounded block reader (stages.ingest.csv_blocks) alone, the floor of the adapter;
(b) ``KoalaAdapter.read`` alone (parse + DuckDB per block, nothing written), and
(c) ``stages.ingest.core.ingest_unit``: the full ingest, Parquet parts included.
(r) the file as byte-range units (``KoalaConfig.unit_mb``) ingested one unit per process on
    every core, as the runner schedules them: CPU seconds / wall (cores used), and the planning
    pass that finds the ranges' record boundaries, timed on its own.
(x) shows why the adapter does not use ``pyarrow.csv.open_csv``: with a consumer slower than the
    disk its readahead holds ~32 blocks (peak RSS), so its rate there is not comparable.
Each measurement runs in its own process so peak RSS (ru_maxrss) is that measurement's own.
Prints rows/s, MB/s, peak RSS and the ratio ours/raw (1.0 = as fast as pyarrow's read_csv).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "out" / "koala_ingest"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _ingest_one(args: tuple) -> int:
    """One byte-range unit in a worker process (what one Ray task does)."""
    from pipeline.curate.config import KoalaConfig
    from stages.ingest.core import ingest_unit
    from stages.ingest.koala import KoalaAdapter

    cfg_json, unit, workdir, rows_per_part = args
    adapter = KoalaAdapter(KoalaConfig.model_validate_json(cfg_json))
    return ingest_unit(adapter, unit, workdir, rows_per_part=rows_per_part).rows


def ranges_phase(csv: Path, block_mb: int, unit_mb: int, rows_per_part: int) -> dict:
    from concurrent.futures import ProcessPoolExecutor

    from pipeline.curate.config import KoalaConfig
    from stages.ingest.koala import KoalaAdapter

    cfg = KoalaConfig(root=csv.parent, video_root=csv.parent, download="youtube", read_block_mb=block_mb,
                      unit_mb=unit_mb)
    t0 = time.perf_counter()
    units = KoalaAdapter(cfg).units()
    plan_s = time.perf_counter() - t0
    workdir = Path(tempfile.mkdtemp(dir=OUT, prefix="workdir-"))
    try:
        t1 = time.perf_counter()
        with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
            rows = sum(pool.map(_ingest_one, [(cfg.model_dump_json(), u, workdir, rows_per_part) for u in units]))
        wall = time.perf_counter() - t1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"phase": "ranges", "rows": rows, "seconds": wall, "plan_seconds": plan_s, "units": len(units),
            "cpu_seconds": children.ru_utime + children.ru_stime, "peak_rss_mb": peak_rss_mb(),
            "baseline_rss_mb": 0.0}


def phase(name: str, csv: Path, block_mb: int, rows_per_part: int, unit_mb: int = 0) -> dict:
    """One measurement, run in a fresh process by main()."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from pipeline.curate.config import KoalaConfig
    from stages.ingest.core import ingest_unit
    from stages.ingest.csv_blocks import CsvBlocks
    from stages.ingest.koala import KoalaAdapter

    if name == "ranges":
        return ranges_phase(csv, block_mb, unit_mb, rows_per_part)
    # one unit over the whole file, as before byte ranges: the single-core rate
    cfg = KoalaConfig(root=csv.parent, video_root=csv.parent, download="youtube", read_block_mb=block_mb,
                      unit_mb=1 << 20)
    adapter = KoalaAdapter(cfg)
    (unit,) = adapter.units()
    baseline = peak_rss_mb()
    extra: dict = {}
    t0 = time.perf_counter()
    if name == "read_csv":
        rows = pacsv.read_csv(csv).num_rows
    elif name == "open_csv":
        cols = CsvBlocks.open(csv, 1 << 20).columns
        reader = pacsv.open_csv(
            csv,
            read_options=pacsv.ReadOptions(block_size=block_mb << 20),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in cols}),
        )
        rows = 0
        for b in reader:  # a consumer as slow as ingest, so the reader's readahead shows
            rows += b.num_rows
            time.sleep(0.02)
    elif name == "blocks":
        blocks = CsvBlocks.open(csv, block_mb << 20)
        rows = sum(t.num_rows for t, _ in blocks.tables())
    elif name == "adapter_read":
        rows = sum(t.num_rows for t in adapter.read(unit))
    elif name == "ingest":
        workdir = Path(tempfile.mkdtemp(dir=OUT, prefix="workdir-"))
        try:
            result = ingest_unit(adapter, unit, workdir, rows_per_part=rows_per_part)
            rows = result.rows
            extra = {"parts": result.parts, "errors": result.errors,
                     "parquet_mb": sum(p.stat().st_size for p in workdir.rglob("*.parquet")) / 2**20}
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    else:
        raise ValueError(name)
    seconds = time.perf_counter() - t0
    return {"phase": name, "rows": rows, "seconds": seconds, "peak_rss_mb": peak_rss_mb(),
            "baseline_rss_mb": baseline, **extra}


def ensure_csv(rows: int) -> Path:
    from pipeline.curate.demo.koala import write_synthetic_csv

    csv = OUT / f"rows{rows}" / "Koala_36M_1.csv"
    if not csv.exists():
        t0 = time.perf_counter()
        write_synthetic_csv(csv, rows)
        print(f"generated {csv} in {time.perf_counter() - t0:.1f} s")
    return csv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--block-mb", type=int, default=64, help="KoalaConfig.read_block_mb")
    ap.add_argument("--rows-per-part", type=int, default=100_000)
    ap.add_argument("--unit-mb", type=int, default=0,
                    help="KoalaConfig.unit_mb for (r); 0: the file's size / (4 x cores), at least 1")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--smoke", action="store_true", help="tiny N, seconds: the tests run it (tests/test_bench_smoke.py)")
    args = ap.parse_args()
    if args.smoke:
        args.rows, args.rows_per_part = 2_000, 1_000
    if args.phase:
        print(json.dumps(phase(args.phase, args.csv, args.block_mb, args.rows_per_part, args.unit_mb)))
        return

    OUT.mkdir(parents=True, exist_ok=True)
    csv = ensure_csv(args.rows)
    size_mb = csv.stat().st_size / 2**20
    unit_mb = args.unit_mb or max(1, int(size_mb / (4 * (os.cpu_count() or 1))))
    with open(csv, "rb") as f:  # warm the page cache so no phase pays the first disk read
        while f.read(64 << 20):
            pass
    print(f"file: {csv} ({size_mb:.0f} MB, {args.rows:,} rows); cores: {os.cpu_count()}; "
          f"block {args.block_mb} MB, {args.rows_per_part:,} rows per part")
    labels = {
        "read_csv": "(a) pyarrow.csv.read_csv, defaults",
        "blocks": "(a') our block reader (csv_blocks), no processing",
        "open_csv": "(x) pyarrow open_csv stream, slow consumer",
        "adapter_read": "(b) KoalaAdapter.read (no write)",
        "ingest": "(c) ingest_unit (adapter + Parquet parts)",
        "ranges": f"(r) byte-range units of {unit_mb} MB, one process/core",
    }
    res = {}
    for name in labels:
        cmd = [sys.executable, __file__, "--phase", name, "--csv", str(csv),
               "--block-mb", str(args.block_mb), "--rows-per-part", str(args.rows_per_part), "--unit-mb", str(unit_mb)]
        res[name] = r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        assert r["rows"] == args.rows, r
        rate = (f"{r['rows'] / r['seconds']:>10,.0f} rows/s {size_mb / r['seconds']:7.1f} MB/s  {r['seconds']:6.1f} s"
                if name != "open_csv" else f"{'(rate not comparable: sleeps)':>40}")
        print(f"  {labels[name]:<48} {rate}  peak RSS {r['peak_rss_mb']:6.0f} MB")
    raw = res["read_csv"]["seconds"]
    print(f"ratio ours/raw (rows/s): ingest {raw / res['ingest']['seconds']:.3f}, "
          f"adapter read {raw / res['adapter_read']['seconds']:.3f}, "
          f"block reader {raw / res['blocks']['seconds']:.3f}")
    rng = res["ranges"]
    print(f"byte ranges: {rng['units']} units, cores used (CPU s / wall) {rng['cpu_seconds'] / rng['seconds']:.2f} "
          f"of {os.cpu_count()}; ratio ours/raw {raw / rng['seconds']:.3f}; planning (boundary scan) "
          f"{rng['plan_seconds']:.2f} s = {size_mb / max(rng['plan_seconds'], 1e-9):,.0f} MB/s")
    ing = res["ingest"]
    print(f"ingest wrote {ing['parts']} parts, {ing['parquet_mb']:.0f} MB of Parquet "
          f"({ing['parquet_mb'] / size_mb:.2f} x the CSV); peak RSS {ing['peak_rss_mb']:.0f} MB "
          f"(interpreter and imports: {ing['baseline_rss_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
