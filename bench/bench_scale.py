"""The manifests at corpus scale: every read-side command at N = 100k, 1M, 5M rows.

    python bench/bench_scale.py [--sizes 100k,1M,5M] [--code DIR]
    python bench/bench_scale.py --smoke            # 2,000 rows, seconds (run by the tests): every
        figure, the probe timed as its unit function in one process (no Ray start-up)

For each N: writes a synthetic corpus of N rows split across three datasets in their published
layouts (``SHARE``): Koala-36M CSVs (at most 1M rows each, 0.1 % of the rows listed twice, as the
real metadata does), Ditto-1M ``training_metadata/*.json`` and OpenVE-3M ``csv_files/<category>.csv``
whose rows point at the real clips (``../shared/realclips``, else the demo's bundled copies of
them): each edited path is its own symlink inside the dataset root to one of those clips, so ids
are distinct while the bytes read are a few real files. It ingests them (the ingest core per unit,
the re-cut of short parts and the repeats mark), times `curate run --stage probe` on the first
``PROBE_ROWS`` rows (Ditto's, the first dataset in part order: real clips; probing is per video,
so its cost per row does not grow with N, its planning does), then writes synthetic ``probes``,
``scores``, ``selected`` and ``encoded`` tables of the same N (their registered schemas, no
tensors: the read side is what is measured) and times, each command in its own process so its RSS
is its own:
  ingest (wall per row; the re-cut and the mark apart), the probe, `curate status`, a GROUP BY
  dataset count through the ``samples`` view and the same on the raw Parquet (same process: the
  ratio), `curate filter`, `curate report`, shard planning (``write_plan``) on the N-key encoded
  table and `curate verify`'s index pass. Then the parts per table, against the goal
  N / rows_per_part + one per dataset.
Peak RSS: the command's own process (driver) and its whole process tree (Ray included), sampled by a
psutil thread every 50 ms. ``--code DIR`` runs the commands on another checkout (the baseline:
``--code /work/main``) with this script's generator, so before and after read the same corpus.
Outputs go under bench/out/scale/ (git-ignored); the CSVs are kept for reuse, workdirs replaced.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out" / "scale"
CSV_ROWS = 1_000_000  # rows per published CSV (the real files hold ~3.6M; smaller keeps units many)
ROWS_PER_PART = 100_000
# N split across the datasets (Koala is ~3/4 of the real corpus); Koala takes what is left.
SHARE = {"ditto": 0.1, "openve": 0.1}
DITTO_JSON_ROWS = 50_000  # records per training_metadata JSON (one unit each)
OPENVE_CATEGORIES = ("local_change", "background_change", "global_style")  # kept by default
PROBE_ROWS = 100
SMOKE = False  # --smoke: see main()
REALCLIPS = REPO.parent / "shared" / "realclips"


def _n(text: str) -> int:
    text = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("km")) * mult)


def measure(cmd: list[str], env: dict) -> dict:
    """Wall seconds, peak RSS of the process and of its process tree (MB), exit status."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"driver": 0, "tree": 0}
    done = threading.Event()

    def sample() -> None:
        p = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                rss = p.memory_info().rss
                tree = rss + sum(c.memory_info().rss for c in p.children(recursive=True) if c.is_running())
            except psutil.Error:
                tree = rss = 0
            peak["driver"], peak["tree"] = max(peak["driver"], rss), max(peak["tree"], tree)
            done.wait(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, _ = proc.communicate()
    done.set()
    t.join()
    return {"s": time.perf_counter() - t0, "driver_mb": peak["driver"] / 2**20, "tree_mb": peak["tree"] / 2**20,
            "rc": proc.returncode, "tail": out[-800:]}


def split(n: int) -> dict[str, int]:
    rows = {name: int(n * share) for name, share in SHARE.items()}
    return {"koala": n - sum(rows.values()), **rows}


def clip_pairs() -> list[tuple[Path, Path, str]]:
    """(source, edited, instruction) of the real edit pairs: the shared folder, else the demo's copies."""
    if (REALCLIPS / "pairs.jsonl").exists():
        recs = [json.loads(line) for line in (REALCLIPS / "pairs.jsonl").read_text().splitlines() if line.strip()]
        return [(REALCLIPS / r["source"], REALCLIPS / r["edited"], r["instruction"]) for r in recs]
    from pipeline.curate.demo.media import real_pairs

    return [(p.source, p.edited, p.instruction) for p in real_pairs()]


def _clips_under(videos: Path, folder: str) -> list[tuple[str, str, str]]:
    """The real clips copied once under ``videos/<folder>`` (a symlink out of a dataset root is
    refused by ingest and probe); returns (source, edited, instruction) relative to ``videos``."""
    out = []
    for j, (src, edited, text) in enumerate(clip_pairs()):
        names = []
        for kind, path in (("source", src), ("edited", edited)):
            dst = videos / folder / f"{j:02d}_{kind}.mp4"
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                shutil.copyfile(path, dst)
            names.append(f"{folder}/{dst.name}")
        out.append((*names, text))
    return out


def _link(videos: Path, rel: str, target: str) -> None:
    """``videos/rel`` -> ``videos/target``, as a relative symlink (it stays inside the root)."""
    path = videos / rel
    os.symlink(os.path.relpath(videos / target, path.parent), path)


def make_ditto(n: int) -> Path:
    """Ditto-1M as published: ``training_metadata/*.json`` lists of {source_path, instruction,
    edited_path}, paths relative to ``videos/`` (``global_style1/NNNN/<hash>_1.mp4``)."""
    root = OUT / f"ditto-{n}"
    if (root / "_done").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    videos = root / "videos"
    clips = _clips_under(videos, "source/0000")  # sources: a category folder, as published
    (root / "training_metadata").mkdir(parents=True)
    for k, start in enumerate(range(0, n, DITTO_JSON_ROWS)):
        records = []
        for i in range(start, min(n, start + DITTO_JSON_ROWS)):
            src, edited, text = clips[i % len(clips)]
            folder = videos / "global_style1" / f"{i // 1000:04d}"
            if i % 1000 == 0:
                folder.mkdir(parents=True, exist_ok=True)
            rel = f"global_style1/{i // 1000:04d}/{i:032x}_1.mp4"
            _link(videos, rel, edited)
            records.append({"source_path": src, "instruction": text, "edited_path": rel})
        (root / "training_metadata" / f"ditto_{k:04d}.json").write_text(json.dumps(records))
    (root / "_done").write_text("")
    return root


def make_openve(n: int) -> Path:
    """OpenVE-3M as published: ``csv_files/<category>.csv`` (``video;original_video;prompt``),
    paths relative to ``videos/``."""
    import csv

    root = OUT / f"openve-{n}"
    if (root / "_done").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    videos = root / "videos"
    clips = _clips_under(videos, "original")
    (root / "csv_files").mkdir(parents=True)
    per = -(-n // len(OPENVE_CATEGORIES))
    for c, cat in enumerate(OPENVE_CATEGORIES):
        (videos / cat / "edited").mkdir(parents=True)
        with open(root / "csv_files" / f"{cat}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, delimiter=";", lineterminator="\n")
            w.writerow(["video", "original_video", "prompt"])
            for i in range(c * per, min(n, (c + 1) * per)):
                src, edited, text = clips[i % len(clips)]
                rel = f"{cat}/edited/{i:09d}.mp4"
                _link(videos, rel, edited)
                w.writerow([rel, src, text])
    (root / "_done").write_text("")
    return root


def make_csvs(n: int) -> Path:
    """Koala CSVs of ``n`` rows in all, 0.1 % of them a second time (a repeated clip)."""
    from pipeline.curate.demo.koala import write_synthetic_csv

    root = OUT / f"koala-{n}"
    if (root / "_done").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    files = max(1, -(-n // CSV_ROWS))
    for i in range(files):
        rows = min(CSV_ROWS, n - i * CSV_ROWS)
        path = write_synthetic_csv(root / f"Koala_36M_{i + 1}.csv", rows, seed=i)
        import csv
        import itertools

        with open(path, newline="", encoding="utf-8") as f:  # the first 0.1 % again, at the end
            again = list(itertools.islice(csv.reader(f), 1, 1 + max(1, rows // 1000)))
        with open(path, "a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(again)
    (root / "videos").mkdir(exist_ok=True)
    (root / "_done").write_text("")
    return root


def make_corpus(n: int) -> dict[str, Path]:
    rows = split(n)
    return {"koala": make_csvs(rows["koala"]), "ditto": make_ditto(rows["ditto"]),
            "openve": make_openve(rows["openve"])}


def write_config(roots: dict[str, Path], workdir: Path) -> Path:
    cfg = workdir.parent / f"{workdir.name}.yaml"
    koala = roots["koala"]
    cfg.write_text(f"run:\n  workdir: {workdir}\n  rows_per_part: {ROWS_PER_PART}\nray:\n  num_cpus: 2\n"
                   f"datasets:\n  koala:\n    root: {koala}\n    video_root: {koala / 'videos'}\n    download: youtube\n"
                   f"  ditto:\n    root: {roots['ditto']}\n  openve:\n    root: {roots['openve']}\n")
    return cfg


def synth_tables(workdir: Path) -> None:
    """probes, scores, selected and encoded rows for every sample, in their registered schemas."""
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    import pipeline.curate.registry  # noqa: F401  (registers every stage's tables for the catalog)
    from manifests import catalog
    from manifests.tables import schema_of

    con = catalog.connect(workdir)
    h = "hash(sample_id)"
    queries = {
        "probes": "SELECT sample_id, dataset, 'h264' AS target_codec, 832 AS target_width, 480 AS target_height, "
                  "16.0 AS target_fps, 160 AS target_frames, 10.0 AS target_duration_s, 81 AS window_frames, "
                  "'bench' AS probe_backend, 1 AS schema_version FROM samples WHERE error IS NULL",
        "scores": f"SELECT sample_id, dataset, 'clip' AS kind, CASE WHEN {h} % 50 = 0 THEN 'malformed' ELSE 'ok' END "
                  f"AS status, 1 + {h} % 10 AS visual_quality, 1 + ({h} % 1000) / 111.0 AS visual_quality_expected, "
                  f"1 + ({h} >> 8) % 10 AS caption_alignment, 1 + (({h} >> 8) % 1000) / 111.0 AS "
                  f"caption_alignment_expected, 1 AS attempts, 0.5 + ({h} % 100) / 50.0 AS latency_s, "
                  f"900 + {h} % 50 AS prompt_tokens, 20 AS output_tokens, 'bench' AS model, 'openai' AS backend, "
                  "1 AS schema_version FROM probes",
        # as the filter decides: a sample the judge did not score is rejected by judge_status
        "selected": f"SELECT sample_id, dataset, status = 'ok' AND {h} % 4 <> 0 AS kept, CASE WHEN status <> 'ok' "
                    f"THEN 'judge_status' WHEN {h} % 4 = 0 THEN 'clip.at_least.visual_quality' END AS rejected_by FROM scores",
        "encoded": "SELECT sample_id || '#none' AS key, sample_id, dataset, 'video' AS modality, 'none' AS variant, "
                   "'stage0' AS purpose, 't2v' AS task_token, '832x480' AS bucket, 81 AS num_frames, 16.0 AS fps, "
                   "[16, 21, 60, 104] AS latent_shape, '{}' AS pretext, x'00' AS tensors, "
                   "'{\"target_latents\": {\"dtype\": \"bfloat16\", \"shape\": [16, 21, 60, 104]}}' AS tensor_meta, "
                   "'{}' AS models FROM selected WHERE kept",
    }
    for table, sql in queries.items():
        schema = schema_of(table)
        con = catalog.connect(workdir)  # each table joins the views as they are now
        reader = con.sql(sql).to_arrow_reader(100_000)
        out = workdir / "tables" / table / ("koala" if table != "selected" else "")
        out.mkdir(parents=True, exist_ok=True)
        part, writer, rows = 0, None, 0
        for batch in reader:
            cols = {name: batch.column(name) if name in batch.schema.names else pa.nulls(batch.num_rows, f.type)
                    for name, f in zip(schema.names, schema)}
            t = pa.table(cols).cast(schema)
            if writer is None or rows >= 1_000_000:  # parts of 1M rows
                if writer:
                    writer.close()
                writer, rows = pq.ParquetWriter(out / f"part-{part:05d}.parquet", schema, compression="zstd"), 0
                part += 1
            writer.write_table(t)
            rows += t.num_rows
        if writer:
            writer.close()
    del duckdb


def phase(name: str, workdir: Path) -> dict:
    """A measured step that is not a CLI command, run in a fresh process (prints JSON)."""
    if name in ("groupby", "plan", "verify"):
        # They open the catalog, which shows the registered tables: the app's registry registers
        # them, as `curate` does (ingest's core opens no catalog, so its RSS stays its own).
        import pipeline.curate.registry  # noqa: F401
    if name == "ingest":  # the ingest core over every unit in this process, the re-cut, the repeats mark
        import duckdb

        from manifests import repeats
        from manifests.io import parquet_source
        from pipeline.curate.config import load_config
        from stages.ingest import get_adapter
        from stages.ingest.core import ingest_unit

        try:  # absent from a baseline checkout (--code) from before the re-cut
            from stages.ingest.core import bound_parts
        except ImportError:
            bound_parts = None
        cfg = load_config(workdir.parent / f"{workdir.name}.yaml")
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(cfg.model_dump_json(indent=2))  # what `curate report` reads
        t0 = time.perf_counter()
        rows = 0
        for ds, ds_cfg in cfg.datasets.enabled().items():
            adapter = get_adapter(ds, ds_cfg)
            rows += sum(ingest_unit(adapter, u, workdir, cfg.run.rows_per_part).rows for u in adapter.units())
        t1 = time.perf_counter()

        def digest() -> tuple:  # rows and an order-free digest of every column: nothing lost in the re-cut
            return tuple(duckdb.connect().execute(f"SELECT count(*), sum(hash(t)::HUGEINT) FROM read_parquet("
                                                  f"{parquet_source(workdir, 'samples')}, union_by_name=true) t").fetchone())

        before = digest() if bound_parts else None
        t2 = time.perf_counter()
        recut = bound_parts(workdir, cfg.run.rows_per_part) if bound_parts else None
        t3 = time.perf_counter()
        same = (digest() == before) if bound_parts else None
        t4 = time.perf_counter()
        marked = repeats.mark(workdir)
        return {"rows": rows, "ingest_s": t1 - t0, "recut_s": t3 - t2, "recut_parts": recut, "recut_same": same,
                "mark_s": time.perf_counter() - t4, "repeats": marked}
    if name == "probe":
        # The smoke's probe: the stage's unit function on its first unit, in this process. A Ray
        # cluster's start-up was ~100 s of the smoke's ~4 min on a loaded machine, and the smoke
        # proves the bench runs, not Ray (the stage's own tests start Ray).
        from pipeline.curate.config import load_config
        from stages.media.locate import dataset_roots
        from stages.probe.config import decode_check
        from stages.probe.stage import _probe_unit_fn, probe_units

        cfg = load_config(workdir.parent / f"{workdir.name}.yaml")
        unit = probe_units(workdir, int(os.environ["BENCH_PROBE_ROWS"]))[0]
        t0 = time.perf_counter()
        out = _probe_unit_fn(decode_check(cfg), dataset_roots(cfg))(unit.item())
        return {"rows": out["rows"], "s": time.perf_counter() - t0}
    if name == "groupby":
        from manifests import catalog
        from manifests.io import parquet_glob

        con = catalog.connect(workdir)
        times = {"view": float("inf"), "raw": float("inf")}
        # Best of three, alternating: a single shot charged the cold reads of the parts to whichever
        # query ran first (the view), and on a shared machine one shot swings 2x either way.
        for _ in range(3):
            for label, src in (("view", "samples"), ("raw", f"read_parquet('{parquet_glob(workdir, 'samples')}')")):
                t0 = time.perf_counter()
                con.execute(f"SELECT dataset, count(*) FROM {src} GROUP BY 1").fetchall()
                times[label] = min(times[label], time.perf_counter() - t0)
        return times
    if name == "plan":
        from stages.shard.plan import write_shard_plan

        t0 = time.perf_counter()
        specs = write_shard_plan(workdir, workdir / "bench-plan.parquet", 1 << 30)
        return {"shards": len(specs), "s": time.perf_counter() - t0}
    if name == "index":  # the shard index from the plan (no tars): what verify's index pass reads
        import duckdb

        plan = workdir / "bench-plan.parquet"
        for t in ("shards", "shard_keys"):
            (workdir / "tables" / t).mkdir(parents=True, exist_ok=True)
        duckdb.sql(f"COPY (SELECT key, sample_id, shard FROM '{plan}') TO "
                   f"'{workdir}/tables/shard_keys/part-00000.parquet' (FORMAT parquet)")
        duckdb.sql(f"COPY (SELECT shard, any_value(purpose) AS purpose, any_value(modality) AS modality, "
                   f"any_value(bucket) AS bucket, count(*)::BIGINT AS samples, 0::BIGINT AS bytes, '' AS sha256 "
                   f"FROM '{plan}' GROUP BY shard ORDER BY shard) TO '{workdir}/tables/shards/part-00000.parquet' "
                   f"(FORMAT parquet)")
        return {}
    if name == "verify":
        import inspect

        from stages.shard.verify import verify_workdir

        kw = {"read_tars": False} if "read_tars" in inspect.signature(verify_workdir).parameters else {}
        t0 = time.perf_counter()
        report = verify_workdir(workdir, **kw)
        return {"s": time.perf_counter() - t0, "keys": report.keys}
    raise ValueError(name)


def parts_per_table(workdir: Path) -> dict[str, int]:
    root = workdir / "tables"
    return {t.name: sum(1 for p in t.rglob("*.parquet") if not p.name.startswith("."))
            for t in sorted(root.iterdir()) if t.is_dir()}


def time_probe(workdir: Path, cfg: Path, env: dict, rows: list, n: int, probe_rows: int) -> None:
    """`curate run --stage probe` on the first ``probe_rows`` rows (whole units of that many rows:
    Ditto's, first in part order), then its tables removed (the synthetic ones replace them). The
    wall includes Ray's start-up; the stage's own seconds are read from its report line."""
    import re

    import pyarrow.parquet as pq

    curate = str(Path(sys.executable).parent / "curate")
    if SMOKE:  # the stage's unit function in one process (see phase "probe")
        r = measure([sys.executable, str(Path(__file__).resolve()), "--phase", "probe", str(workdir)],
                    {**env, "BENCH_PROBE_ROWS": str(probe_rows)})
        if r["rc"] == 0:  # the unit's own seconds, in the words of the stage's report line
            r["tail"] = f"probe: 1 of 1 units run in {json.loads(r['tail'].strip().splitlines()[-1])['s']:.3f}s"
        label = f"probe unit function, no Ray (first {probe_rows} rows)"
    else:
        r = measure([curate, "run", "--config", str(cfg), "--stage", "probe", "--workdir", str(workdir),
                     "--limit", str(probe_rows), "--set", f"run.rows_per_task={probe_rows}"], env)
        label = f"curate run --stage probe (first {probe_rows} rows)"
    probed = sum(pq.ParquetFile(p).metadata.num_rows for p in (workdir / "tables" / "probes").rglob("*.parquet")
                 if not p.name.startswith(".")) if (workdir / "tables" / "probes").exists() else 0
    m = re.search(r"probe: \d+ of \d+ units run in ([\d.]+)s", r["tail"])
    note = (f"{probed} rows probed; stage {float(m.group(1)):.1f}s = {float(m.group(1)) / max(probed, 1) * 1e3:.0f} ms/row"
            if m else "no report line")
    if r["rc"] != 0:
        print(f"  probe FAILED (rc {r['rc']}):\n{r['tail']}", flush=True)
    rows.append([n, label, f"{r['s']:.2f}", f"{r['driver_mb']:.0f}",
                 f"{r['tree_mb']:.0f}", note])
    print("  " + " | ".join(map(str, rows[-1])), flush=True)
    for extra in (workdir / "tables" / "probes", workdir / "state" / "probes"):
        shutil.rmtree(extra, ignore_errors=True)


def run_size(n: int, code: Path, keep: bool, reuse: bool = False, probe_rows: int = PROBE_ROWS) -> list[list]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    py, curate = sys.executable, str(Path(sys.executable).parent / "curate")
    t0 = time.perf_counter()
    roots = make_corpus(n)
    print(f"  (corpus {split(n)} ready in {time.perf_counter() - t0:.1f} s)", flush=True)
    workdir = OUT / f"work-{n}"
    reuse = reuse and (workdir / "tables" / "samples").exists()
    if reuse:  # keep the ingested samples, redo the rest
        for t in ("probes", "scores", "selected", "encoded", "shards", "shard_keys"):
            shutil.rmtree(workdir / "tables" / t, ignore_errors=True)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    cfg = write_config(roots, workdir)
    me = [py, str(Path(__file__).resolve())]
    rows = []

    def step(label: str, cmd: list[str], per_row: bool = False) -> dict:
        r = measure(cmd, env)
        if r["rc"] != 0:
            print(f"  {label} FAILED (rc {r['rc']}):\n{r['tail']}", flush=True)
        extra = f"{r['s'] / n * 1e6:.1f} us/row" if per_row else ""
        rows.append([n, label, f"{r['s']:.2f}", f"{r['driver_mb']:.0f}", f"{r['tree_mb']:.0f}", extra])
        print("  " + " | ".join(map(str, rows[-1])), flush=True)
        return r

    if not reuse:
        # In one process, not `curate run`: a Ray cluster's start-up on a loaded 2-core machine
        # times out or dominates; the per-row cost of the ingest core and the repeats mark is
        # what grows with N.
        r = step("ingest (core + re-cut + repeats mark)", [*me, "--phase", "ingest", str(workdir)], per_row=True)
        if r["rc"] == 0:
            g = json.loads(r["tail"].strip().splitlines()[-1])
            if g.get("recut_parts") is not None:
                rows[-1][-1] += (f"; re-cut {g['recut_s']:.2f}s, {g['recut_parts']} parts written, rows and "
                                 f"digest {'equal' if g['recut_same'] else 'DIFFER'}")
            rows[-1][-1] += f"; mark {g['mark_s']:.2f}s, {g['repeats']} repeats"
            print(f"    {rows[-1][-1]}", flush=True)
    if probe_rows:
        time_probe(workdir, cfg, env, rows, n, probe_rows)
    t0 = time.perf_counter()
    synth_tables(workdir)
    print(f"  (synthetic probes/scores/selected/encoded written in {time.perf_counter() - t0:.1f} s)", flush=True)
    (workdir / "report.html").unlink(missing_ok=True)
    step("curate status", [curate, "status", "--workdir", str(workdir)])
    r = step("group-by via samples", [*me, "--phase", "groupby", str(workdir)])
    if r["rc"] == 0:
        g = json.loads(r["tail"].strip().splitlines()[-1])
        rows[-1][-1] = f"view {g['view']:.3f}s raw {g['raw']:.3f}s = {g['view'] / max(g['raw'], 1e-9):.1f}x"
        print(f"    {rows[-1][-1]}", flush=True)
    step("curate filter", [curate, "filter", "-c", str(cfg), "--workdir", str(workdir)])
    step("curate report", [curate, "report", "--workdir", str(workdir)])
    step("shard plan", [*me, "--phase", "plan", str(workdir)])
    subprocess.run([*me, "--phase", "index", str(workdir)], env=env, check=True, capture_output=True)
    step("verify index pass", [*me, "--phase", "verify", str(workdir)])
    parts = parts_per_table(workdir)
    goal = n / ROWS_PER_PART + len(roots)
    print(f"  parts per table: {parts}; goal for a per-row table: <= N / {ROWS_PER_PART:,} + one per "
          f"dataset = {goal:.2f}", flush=True)
    rows.append([n, "parts: samples", str(parts.get("samples", 0)), "", "", f"goal <= {goal:.2f}"])
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


def recut_copy(src: Path) -> None:
    """The re-cut alone, on a copy of another workdir's ingested ``samples`` parts (e.g. a 5M
    workdir ingested by code from before the re-cut): parts before and after, its wall, and the
    rows and order-free digest of every column before and after. Prints one JSON line."""
    import duckdb

    from manifests.io import list_parts, parquet_source
    from stages.ingest.core import bound_parts

    work = OUT / f"recut-{src.name}"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(src / "tables" / "samples", work / "tables" / "samples")

    def digest() -> tuple:
        return tuple(duckdb.connect().execute(f"SELECT count(*), sum(hash(t)::HUGEINT) FROM read_parquet("
                                              f"{parquet_source(work, 'samples')}, union_by_name=true) t").fetchone())

    before, parts_before = digest(), len(list_parts(work, "samples"))
    t0 = time.perf_counter()
    written = bound_parts(work, ROWS_PER_PART)
    s = time.perf_counter() - t0
    after = digest()
    datasets = len({p.parent.name for p in list_parts(work, "samples")})
    print(json.dumps({"rows": before[0], "parts_before": parts_before, "parts_after": len(list_parts(work, "samples")),
                      "goal": before[0] / ROWS_PER_PART + datasets, "recut_s": s, "written": written,
                      "rows_and_digest_equal": before == after}), flush=True)
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100k,1M,5M", help="comma-separated N (k/M suffixes)")
    ap.add_argument("--code", type=Path, default=REPO, help="the checkout whose commands are measured")
    ap.add_argument("--keep", action="store_true", help="keep the workdirs (else removed after each N)")
    ap.add_argument("--reuse", action="store_true", help="reuse an ingested workdir of the same N (implies --keep)")
    ap.add_argument("--smoke", action="store_true", help="N = 2,000, seconds (the tests run it)")
    ap.add_argument("--probe-rows", type=int, default=PROBE_ROWS,
                    help="rows `curate run --stage probe` is timed on (0: not timed)")
    ap.add_argument("--recut-copy", type=Path, metavar="WORKDIR",
                    help="only the re-cut, on a copy of WORKDIR's samples parts (parts before/after, digest)")
    ap.add_argument("--phase", nargs=2, metavar=("NAME", "WORKDIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.recut_copy:
        recut_copy(args.recut_copy)
        return
    if args.phase:
        print(json.dumps(phase(args.phase[0], Path(args.phase[1]))))
        return
    global OUT, ROWS_PER_PART, DITTO_JSON_ROWS, SMOKE
    SMOKE = args.smoke
    if args.smoke:  # small parts and files, so the re-cut and several units per dataset run too
        args.sizes, OUT, ROWS_PER_PART, DITTO_JSON_ROWS = "2k", OUT.parent / "scale-smoke", 500, 100
        args.probe_rows = min(args.probe_rows, 8)
    print(f"code: {args.code}; columns: N | step | wall s | driver peak MB | process-tree peak MB | note", flush=True)
    table = []
    for n in (_n(s) for s in args.sizes.split(",")):
        print(f"N = {n:,}", flush=True)
        table += run_size(n, args.code, args.keep or args.reuse, args.reuse, args.probe_rows)
    print("\n| N | step | wall s | driver MB | tree MB | note |\n|---|---|---|---|---|---|")
    for r in table:
        print("| " + " | ".join(f"{x:,}" if isinstance(x, int) else str(x) for x in r) + " |")


if __name__ == "__main__":
    if not os.environ.get("PYTHONPATH"):  # phases import the checkout under test (--code), else this one
        sys.path.insert(0, str(REPO))
    main()
