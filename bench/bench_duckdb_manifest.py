"""DuckDB over a synthetic 36M-row manifest (Koala-36M scale): a filter + group-by, time and memory.

    python bench/bench_duckdb_manifest.py [--rows 36000000] [--threads 2]
    python bench/bench_duckdb_manifest.py --smoke     # 20k rows, seconds (run by the tests)

Writes the manifest once under bench/out/manifest36m/tables/samples (Parquet parts of 1M rows in
the real `samples` schema, realistic string columns), then opens it through the same catalog
`curate query` uses and times three queries. Peak memory is the process's max RSS (DuckDB runs
in-process) and DuckDB's own peak buffer-manager usage. The baseline printed beside each query is
a plain `count(*)` over the same files in the same run.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from manifests import catalog  # noqa: E402
from manifests.io import write_part  # noqa: E402
from manifests.schema import SAMPLES, SCHEMA_VERSION  # noqa: E402
# The samples table's declaration from the stage that writes it: the manifest holds nothing else,
# and the app's whole registry would load torch and every stage into the RSS this bench reports.
from stages.ingest.stage import STAGE as INGEST  # noqa: E402

DATASETS = np.array(["koala", "ditto", "openve", "reco", "motionbench", "nhr_edit", "x2edit"])
CATS = np.array(["motion", "style", "local_change", "background", "add", "remove", "replace", "subtitles"])


def make_part(seed: int, n: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = np.char.add("koala:", np.char.zfill((np.arange(n) + seed * n).astype(str), 16))
    ds = DATASETS[rng.choice(len(DATASETS), n, p=[0.86, 0.03, 0.07, 0.01, 0.01, 0.01, 0.01])]
    cat = CATS[rng.integers(0, len(CATS), n)]
    start = rng.uniform(0, 600, n)
    scores = rng.uniform(0, 1, n)
    keys = pa.array([["clarity_score"]] * 1)[0]  # noqa: F841 (documentation of the map key)
    native = pa.MapArray.from_arrays(
        pa.array(np.arange(0, n + 1, dtype=np.int32)), pa.array(np.full(n, "clarity_score")), pa.array(scores))
    cols = {
        "sample_id": pa.array(ids), "dataset": pa.array(ds), "subset": pa.nulls(n, pa.string()),
        "split": pa.array(np.full(n, "train")), "modality": pa.array(np.full(n, "video")),
        "task": pa.array(np.where(ds == "koala", "t2v", "edit")), "source_uri": pa.nulls(n, pa.string()),
        "target_uri": pa.array(np.char.add("/data/koala/videos/", np.char.add(ids, ".mp4"))),
        "instruction": pa.array(np.full(n, "a person walks a dog along a beach at sunset")),
        "alt_instructions": pa.nulls(n, pa.list_(pa.string())),
        "caption": pa.array(np.full(n, "a person walks a dog along a beach at sunset")),
        "category_raw": pa.array(cat), "category": pa.array(cat),
        "clip_start_s": pa.array(start), "clip_end_s": pa.array(start + rng.uniform(2, 20, n)),
        "native_scores": native, "license": pa.array(np.full(n, "research")),
        "raw_record": pa.array(np.full(n, '{"videoID":"abc","timestamp":"..."}')),
        "error": pa.array(np.where(rng.uniform(size=n) < 0.01, "bad timestamp", None)),
        "schema_version": pa.array(np.full(n, SCHEMA_VERSION, dtype=np.int16)),
    }
    # Columns the bench does not model (added to the schema later: skip_frames, extra ...) are null,
    # so the bench follows the registered schema instead of breaking on every new column.
    n_rows = len(ids)
    return pa.table({f.name: cols.get(f.name, pa.nulls(n_rows, f.type)) for f in SAMPLES}).cast(SAMPLES)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=36_000_000)
    ap.add_argument("--part-rows", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "manifest36m")
    ap.add_argument("--smoke", action="store_true", help="20k rows in 2 parts under bench/out/manifest-smoke")
    args = ap.parse_args()
    if args.smoke:
        args.rows, args.part_rows = 20_000, 10_000
        args.out = Path(__file__).parent / "out" / "manifest-smoke"

    parts = (args.rows + args.part_rows - 1) // args.part_rows
    t0 = time.time()
    made = 0
    for i in range(parts):
        path = args.out / "tables" / "samples" / "mixed" / f"part-{i:05d}.parquet"
        if not path.exists():
            write_part(path, make_part(i, min(args.part_rows, args.rows - i * args.part_rows)))
            made += 1
    size = sum(p.stat().st_size for p in (args.out / "tables" / "samples").rglob("*.parquet"))
    print(f"manifest: {args.rows:,} rows in {parts} parts, {size / 2**30:.2f} GiB "
          f"({made} parts written in {time.time() - t0:.0f}s)")

    con = catalog.connect(args.out, threads=args.threads, tables=INGEST.tables)
    queries = {
        "baseline scan": "SELECT count(*) FROM samples WHERE error IS NULL",
        "filter + group-by": (
            "SELECT dataset, category, count(*) AS n, avg(clip_end_s - clip_start_s) AS mean_len "
            "FROM samples WHERE error IS NULL AND native_scores['clarity_score'] > 0.5 "
            "GROUP BY ALL ORDER BY n DESC"),
        "ids of one category": "SELECT count(DISTINCT sample_id) FROM samples WHERE category = 'style'",
    }
    base = None
    for name, sql in queries.items():
        catalog.check_read_only(con, sql)
        t = time.perf_counter()
        rows = con.sql(sql).fetchall()
        dt = time.perf_counter() - t
        base = base or dt
        print(f"{name:22s} {dt:7.2f}s  {args.rows / dt / 1e6:7.1f} M rows/s  "
              f"x{dt / base:5.1f} of baseline  ({len(rows)} result rows)")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    mem = con.sql("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchall()[0][0]
    print(f"peak RSS {peak_rss:.2f} GiB (includes generation); duckdb buffers now {mem / 2**20:.0f} MiB; "
          f"threads={args.threads}")


if __name__ == "__main__":
    main()
