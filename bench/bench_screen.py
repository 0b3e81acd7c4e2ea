"""Benchmark the screen stage: precision/recall per kind on a labelled set built from real clips,
its CPU cost per sample against the judge's request building, and the grouping at scale.

    python bench/bench_screen.py [--smoke] [--scale 100000,1000000 | --scale ''] [--band-bits 32]

Labelled set (bench/_screen_media.py), from ../shared/realclips (else demo/clips) source clips:
duplicates of each source (re-encode at 2/3 size and crf 36, an 8 % crop, letterbox, 1.25x speed,
a window of the clip); the distinct sources are the negatives. Contamination: half the sources
are the benchmark (a folder, as screen.benchmarks names it), every duplicate is a training sample;
a black and a title-card clip sit on both sides and must match nothing. Copies: (source, its
re-encode) and (source, source) pairs against the real (source, edited) pairs. Motion: a still, a
zoom and a pan over a still against the real clips. Images: JPEG stills of real frames (three
a clip, source and edited) as one-frame samples, and a re-encode, corner crop, 5 % trim and
letterbox of the source stills, each a duplicate of its still. Scale: random hash rows (8 frames a sample
with weak bits, windows on 4; 1 % near-duplicates 4 bits away, 0.5 % crops matching a window)
grouped in a child process per size: seconds per sample, peak RSS, candidate and duplicate pairs,
band rows per sample. (The near-duplicate rows mark their 4 flipped bits weak on top of their 4
random weak bits, up to 6 a half where real hashes have exactly 4 on a clip's frames: the probes
that peeled only the lowest 4 made 127 fewer candidate pairs at 1M than the list-lambda probes
before them, all false ones; peeling up to 7 probes every weak bit again.)

Images: the 5 % trim of every side was the one kind short of its goal (recall 0.86): its copies lie
4-8 bits from a window of their still, but in bits the copy's 4 weak bits a half did not cover,
so no probe met the window's exact band; a one-frame side now gets 7 weak bits a half
(stages/screen/phash.py ONE_FRAME_WEAK_PER_HALF), which reaches 25 of the 28 directly.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

import _screen_media as media  # noqa: E402
from stages.screen.benchmarks import benchmark_table  # noqa: E402
from stages.screen.config import ScreenConfig  # noqa: E402
from stages.screen.core import Settings, screen_row  # noqa: E402
from stages.screen.groups import build, window_bits  # noqa: E402
from stages.screen.phash import WEAK_PER_HALF, WINDOWS  # noqa: E402
from stages.screen.schema import SCREENS  # noqa: E402

OUT = REPO / "bench" / "out" / "screen"


def sources(smoke: bool) -> list[dict]:
    shared = REPO.parent / "shared" / "realclips"
    root = shared if (shared / "pairs.jsonl").exists() else REPO / "demo" / "clips"
    pairs = [json.loads(line) for line in (root / "pairs.jsonl").read_text().splitlines() if line.strip()]
    pairs = [p for p in pairs if (root / p["source"]).exists()]
    pairs.sort(key=lambda p: p["id"])
    return [{**p, "source": root / p["source"], "edited": root / p["edited"] if (root / p["edited"]).exists() else None}
            for p in (pairs[:3] if smoke else pairs)]


def make_set(pairs: list[dict]) -> dict[str, list]:
    """Write the labelled clips; returns {group: [(name, path, origin)]}."""
    made: dict[str, list] = {"orig": [], "dup": [], "static": [], "flat": []}
    for p in pairs:
        frames, fps = media.read_rgb(p["source"])
        made["orig"].append((f"orig:{p['id']}", p["source"], p["id"]))
        for kind, fn in media.DUPLICATE_KINDS.items():
            path = OUT / "clips" / f"{p['id']}_{kind}.mp4"
            if not path.exists():
                f, r, crf = fn(frames, fps)
                media.write(path, f, r, crf)
            made["dup"].append((f"{kind}:{p['id']}", path, p["id"]))
        for kind, fn in media.STATIC_KINDS.items():
            path = OUT / "clips" / f"{p['id']}_{kind}.mp4"
            if not path.exists():
                f, r, crf = fn(frames, fps)
                media.write(path, f, r, crf)
            made["static"].append((f"{kind}:{p['id']}", path, p["id"]))
    for kind in ("black", "title"):
        made["flat"].append((f"{kind}:flat", media.flat_clip(OUT / "clips" / f"{kind}.mp4", kind), None))
    return made


def clip_row(name: str, path: Path, source: Path | None = None) -> dict:
    return {"sample_id": name, "dataset": name.split(":")[0], "modality": "video",
            "task": "edit" if source else "t2v", "source_uri": str(source) if source else None,
            "target_uri": str(path)}


def pr(tp: int, fp: int, fn: int) -> tuple[float, float]:
    return (tp / (tp + fp) if tp + fp else 1.0), (tp / (tp + fn) if tp + fn else 1.0)


def verdicts(rows: list[dict], cfg: ScreenConfig, bench: pa.Table | None = None) -> dict[str, tuple]:
    con = duckdb.connect()
    con.register("screens", pa.Table.from_pylist(rows, schema=SCREENS))
    if bench is not None:
        con.register("bench", bench)
    build(con, "screens", cfg, "bench" if bench is not None else None)
    return {r[0]: r[1:] for r in con.execute("SELECT sample_id, duplicate_group, benchmark_clip FROM verdict").fetchall()}


def duplicates_table(made, screened, cfg) -> list[tuple]:
    rows = [screened[n] for n, _, _ in made["orig"] + made["dup"] + made["flat"]]
    v = verdicts(rows, cfg)
    origin = {n: o for n, _, o in made["orig"] + made["dup"] + made["flat"]}
    group = {n: v[n][0] for n in origin}
    out = []
    for kind in [*media.DUPLICATE_KINDS, "distinct sources"]:
        names = [n for n in origin if n.startswith(kind + ":")] if kind in media.DUPLICATE_KINDS else \
            [n for n, _, _ in made["orig"] + made["flat"]]
        tp = fn = fp = 0
        for n in names:
            mates = [m for m in origin if m != n and group[n] is not None and group[m] == group[n]]
            true = [m for m in mates if origin[m] == origin[n] and origin[n] is not None]
            fp += len(mates) - len(true)
            if kind in media.DUPLICATE_KINDS:
                hit = f"orig:{origin[n]}" in true
                tp, fn = tp + hit, fn + (not hit)
        out.append((kind, len(names), *pr(tp, fp, fn), fp))
    return out


def margin(rows: list[dict], cfg, origin: list | None = None) -> str:
    """How close distinct sources come: the fewest bits between a frame of one and a frame, or a
    window, of another (of another origin, when given)."""
    def bits(a, b):
        x = np.ascontiguousarray(np.array(a, np.int64)[:, None] ^ np.array(b, np.int64)[None, :])
        return int(np.unpackbits(x.view(np.uint8)).reshape(len(a), len(b), 64).sum(-1).min()) if len(a) and len(b) else 64
    origin = origin or list(range(len(rows)))
    whole = [[h for h, i in zip(r["target_hashes"], r["target_informative"]) if i] for r in rows]
    wins = [[h for h in r["target_windows"] if h is not None] for r in rows]
    pairs = [(i, j) for i in range(len(rows)) for j in range(len(rows)) if origin[i] != origin[j]]
    return (f"  closest distinct sources: {min(bits(whole[i], whole[j]) for i, j in pairs)} bits frame to frame, "
            f"{min(bits(whole[i], wins[j]) for i, j in pairs)} frame to window (match_bits={cfg.match_bits}, "
            f"window_bits={window_bits(cfg.match_bits)} where a side has one frame)")


def contamination_table(made, screened, cfg, settings) -> list[tuple]:
    half = len(made["orig"]) // 2 or 1
    bdir = OUT / "benchmark"
    shutil.rmtree(bdir, ignore_errors=True)
    bdir.mkdir(parents=True)
    for n, path, _ in made["orig"][:half] + made["flat"]:
        os.symlink(path, bdir / f"{n.replace(':', '_')}.mp4")
    bench, _ = benchmark_table({"bench": str(bdir)}, settings)
    in_bench = {o for _, _, o in made["orig"][:half]}
    rows = [screened[n] for n, _, _ in made["dup"] + made["flat"]]
    v = verdicts(rows, cfg, bench)
    out = []
    for kind in [*media.DUPLICATE_KINDS, "flat"]:
        items = [(n, o) for n, _, o in made["dup"] + made["flat"] if n.startswith(kind + ":") or
                 (kind == "flat" and o is None)]
        tp = fp = fn = 0
        for n, o in items:
            clip = v[n][1]
            hit = clip is not None and Path(clip).name == f"orig_{o}.mp4"
            tp += hit
            fp += clip is not None and not hit
            fn += o in in_bench and not hit
        out.append((kind, len(items), *pr(tp, fp, fn), fp))
    return out


IMAGE_AT = (0.25, 0.5, 0.75)  # where in each clip its stills are taken


def make_images(pairs: list[dict]) -> list[tuple]:
    """JPEG stills of real frames (source and edited clips, three times each) and copies of the
    source stills at 1/4 and 3/4 (bench/_screen_media.py IMAGE_KINDS): [(name, path, clip, original)]."""
    out = []
    for p in pairs:
        for clip, side in ((p["source"], "s"), (p["edited"], "e")):
            if clip is None:
                continue
            frames, _ = media.read_rgb(clip)
            for at in IMAGE_AT:
                rgb, still = frames[int(at * (len(frames) - 1))], f"{p['id']}{side}{int(at * 100)}"
                path = OUT / "images" / f"{still}.jpg"
                out.append((f"img-orig:{still}", path if path.exists() else media.write_still(path, rgb), p["id"], None))
                if side == "e" or at == 0.5:
                    continue
                for kind, fn in media.IMAGE_KINDS.items():
                    path = OUT / "images" / f"{still}_{kind}.jpg"
                    out.append((f"img-{kind}:{still}", path if path.exists() else media.write_still(path, *fn(rgb)),
                                p["id"], f"img-orig:{still}"))
    return out


def images_table(images: list[tuple], cfg, settings) -> tuple[list[tuple], str]:
    """Image samples (one frame each, no source) grouped: a copy must join its own still; a still of
    another clip in its group is a false match (stills of the same clip, or of its edit, may match)."""
    rows = [screen_row({"sample_id": n, "dataset": n.split(":")[0], "modality": "image", "task": "edit",
                        "source_uri": None, "target_uri": str(path)}, settings) for n, path, _, _ in images]
    v = verdicts(rows, cfg)
    clip = {n: c for n, _, c, _ in images}
    out = []
    for kind in [*media.IMAGE_KINDS, "orig"]:
        items = [(n, o) for n, _, _, o in images if n.startswith(f"img-{kind}:")]
        tp = fp = fn = 0
        for n, original in items:
            mates = [m for m in clip if m != n and v[n][0] is not None and v[m][0] == v[n][0]]
            fp += sum(clip[m] != clip[n] for m in mates)
            if original is not None:
                tp, fn = tp + (original in mates), fn + (original not in mates)
        out.append(("distinct stills" if kind == "orig" else kind, len(items), *pr(tp, fp, fn), fp))
    stills = [(r, clip[n]) for r, (n, *_) in zip(rows, images) if n.startswith("img-orig:")]
    return out, margin([r for r, _ in stills], cfg, [c for _, c in stills])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="3 source clips and a 2,000-row scale point")
    ap.add_argument("--scale", default="100000,1000000", help="sample counts of the grouping scale points")
    ap.add_argument("--band-bits", type=int, default=ScreenConfig().band_bits)
    ap.add_argument("--scale-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    cfg = ScreenConfig(band_bits=args.band_bits)
    if args.scale_child:
        return scale_child(args.scale_child, cfg)
    settings = Settings.of(cfg)
    pairs = sources(args.smoke)
    made = make_set(pairs)
    screened, cpu = {}, []
    for group in made.values():
        for n, path, _ in group:
            t = time.process_time()
            screened[n] = screen_row(clip_row(n, path), settings)
            cpu.append(time.process_time() - t)
    print(f"labelled set: {len(pairs)} real source clips, {sum(len(g) for g in made.values())} clips "
          f"(screen.match_bits={cfg.match_bits}, band_bits={cfg.band_bits})")
    line = "  {:<18} {:>5}  precision {:6.3f}  recall {:6.3f}  false matches {}"
    print("duplicates (goal: recall >= 0.95, precision >= 0.99)")
    for row in duplicates_table(made, screened, cfg):
        print(line.format(*row))
    print(margin([screened[n] for n, _, _ in made["orig"]], cfg))
    print("contamination (benchmark = half the sources, goal as duplicates)")
    for row in contamination_table(made, screened, cfg, settings):
        print(line.format(*row))
    images, image_margin = images_table(make_images(pairs), cfg, settings)
    print("images: JPEG stills of the real frames, copies of them (goal as duplicates)")
    for row in images:
        print(line.format(*row))
    print(image_margin)
    copies_and_motion(pairs, made, screened, cfg, settings)
    judge_cost(pairs, float(np.mean(cpu)))
    points = [2000] if args.smoke else [int(x) for x in args.scale.split(",") if x]
    if points:
        scale(points, cfg.band_bits)


def copies_and_motion(pairs, made, screened, cfg, settings) -> None:
    copies, edits = [], []
    for p in pairs:
        reenc = OUT / "clips" / f"{p['id']}_reencode.mp4"
        copies.append(screen_row(clip_row(f"copy:{p['id']}", reenc, p["source"]), settings)["copy_score"])
        copies.append(screen_row(clip_row(f"same:{p['id']}", p["source"], p["source"]), settings)["copy_score"])
        if p["edited"] is not None:
            edits.append(screen_row(clip_row(f"edit:{p['id']}", p["edited"], p["source"]), settings)["copy_score"])
    t = cfg.copy_max_diff
    print(f"copied edits at copy_max_diff={t} (goal: recall >= 0.95 at <= 1 % false positives)")
    print(f"  copies {len(copies)}: recall {np.mean([c < t for c in copies]):.3f} (max score {max(copies):.4f}); "
          f"real edits {len(edits)}: false positives {np.mean([e < t for e in edits]) if edits else 0:.3f} "
          f"(min score {min(edits) if edits else float('nan'):.4f})")
    t = cfg.min_content_motion
    moving = [screened[n]["content_motion"] for n, _, _ in made["orig"]]
    moving += [screen_row(clip_row(f"edited:{p['id']}", p["edited"]), settings)["content_motion"]
               for p in pairs if p["edited"] is not None]
    print(f"still / camera-only clips at min_content_motion={t} (goal: recall >= 0.9 at <= 5 % false positives)")
    for kind in media.STATIC_KINDS:
        vals = [screened[n]["content_motion"] for n, _, _ in made["static"] if n.startswith(kind + ":")]
        motion = [screened[n]["motion_score"] for n, _, _ in made["static"] if n.startswith(kind + ":")]
        print(f"  {kind:<6} {len(vals):>3}: recall {np.mean([v < t for v in vals]):.3f} (max content motion "
              f"{max(vals):.2f}, mean motion {np.mean(motion):.2f})")
    print(f"  real moving clips {len(moving)}: false positives {np.mean([m < t for m in moving]):.3f} "
          f"(min content motion {min(moving):.2f})")


def judge_cost(pairs, screen_cpu: float) -> None:
    """The judge's request building (decode, resize, JPEG, base64) for the same clips."""
    from stages.judge.config import JudgeConfig
    from stages.judge.request_build import media_parts

    jcfg, cpu = JudgeConfig(), []
    for p in pairs:
        t = time.process_time()
        media_parts(clip_row("judge:x", p["source"]), "clip", jcfg)
        cpu.append(time.process_time() - t)
    judge = float(np.mean(cpu))
    print(f"CPU per video sample: screen {screen_cpu:.3f} s, judge request building {judge:.3f} s, "
          f"ratio {screen_cpu / judge:.2f} (goal <= 0.3)")


def _weak(rng, shape) -> np.ndarray:
    """Random weak-bit masks: phash.WEAK_PER_HALF positions per 32-bit half (repeats allowed)."""
    pos = rng.integers(0, 32, (*shape, 2, WEAK_PER_HALF)) + np.array([0, 32])[:, None]
    return np.bitwise_or.reduce(np.left_shift(np.uint64(1), pos.astype(np.uint64)), axis=(-2, -1)).view(np.int64)


def synthetic(n: int, path: Path, seed: int = 0) -> None:
    """n samples of 8 random frame hashes with weak bits, and windows on 4 of them; 1 % are a
    variant of another sample 2 bits away in each half (the weak bits they flip marked, so only the
    probes find them), 0.5 % a crop of another (4 frames equal to one of its windows)."""
    rng = np.random.default_rng(seed)
    nw, wf = len(WINDOWS), [0, 2, 4, 6]
    with pq.ParquetWriter(path, SCREENS) as w:
        for start in range(0, n, 100_000):
            m = min(100_000, n - start)
            h = rng.integers(-2**63, 2**63 - 1, (m, 8), dtype=np.int64)
            weak = _weak(rng, (m, 8))
            wins = rng.integers(-2**63, 2**63 - 1, (m, len(wf) * nw), dtype=np.int64)
            dup = rng.random(m) < 0.01
            flip = np.int64((1 << 3) | (1 << 9) | (1 << 37) | (1 << 50))
            h[dup] = h[rng.integers(0, m, dup.sum())] ^ flip
            weak[dup] |= flip
            crop = ~dup & (rng.random(m) < 0.005)
            of = rng.integers(0, m, crop.sum())
            h[np.ix_(crop, wf)] = wins[of][:, [5 + nw * i for i in range(len(wf))]]
            ids = [f"syn:{start + i:09d}" for i in range(m)]
            cols = {f.name: pa.nulls(m, f.type) for f in SCREENS}
            w.write_table(pa.table({**cols,
                "sample_id": ids, "dataset": ["syn"] * m, "kind": ["clip"] * m,
                "target_hashes": pa.array(list(h), pa.list_(pa.int64())),
                "target_weak": pa.array(list(weak), pa.list_(pa.int64())),
                "target_informative": pa.array([[True] * 8] * m, pa.list_(pa.bool_())),
                "target_times": pa.array([[0.25 * k for k in range(8)]] * m, pa.list_(pa.float32())),
                "target_windows": pa.array(list(wins), pa.list_(pa.int64())),
                "target_window_frames": pa.array([wf] * m, pa.list_(pa.int16())),
                "content_motion": np.full(m, 5.0), "schema_version": np.ones(m, np.int16)}, schema=SCREENS))


def scale_child(n: int, cfg: ScreenConfig) -> None:
    path = OUT / f"syn2-{n}.parquet"
    OUT.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        synthetic(n, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").rename(path)
    t = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    con = duckdb.connect()
    con.execute("SET memory_limit = '1GB'")
    con.execute(f"SET temp_directory = '{OUT / 'spill'}'")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"CREATE VIEW screens AS SELECT * FROM read_parquet('{path}')")
    build(con, "screens", cfg)
    groups = con.execute("SELECT count(*) FILTER (duplicate_of IS NOT NULL) FROM verdict").fetchone()[0]
    candidates, dup_pairs = con.execute("SELECT (SELECT count(*) FROM cand), (SELECT count(*) FROM dup_pairs)").fetchone()
    seconds = time.perf_counter() - t
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss, cpu = usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime - cpu0
    bands = 64 // cfg.band_bits
    mask = (1 << cfg.band_bits) - 1  # probe rows: 2 ** (weak bits in the band), per frame and band
    per_frame = " + ".join(f"(1::BIGINT << bit_count((weak >> {b * cfg.band_bits}) & {mask}))" for b in range(bands))
    frames, probes = con.execute(f"SELECT count(*), sum({per_frame}) FROM (SELECT unnest(target_weak) AS weak "
                                 f"FROM screens)").fetchone()
    windows = con.execute("SELECT count(h) FROM (SELECT unnest(target_windows) AS h FROM screens)").fetchone()[0]
    print(json.dumps({"n": n, "seconds": seconds, "cpu_s": cpu, "rss_mb": rss, "duplicates": groups,
                      "candidate_pairs": candidates, "duplicate_pairs": dup_pairs,
                      "exact_rows": (frames + windows) * bands, "probe_rows": int(probes)}))


def scale(points: list[int], band_bits: int) -> None:
    results = []
    for n in points:
        r = subprocess.run([sys.executable, __file__, "--scale-child", str(n), "--band-bits", str(band_bits)],
                           capture_output=True, text=True, check=True)
        results.append(json.loads(r.stdout.strip().splitlines()[-1]))
    base, base_cpu = results[0]["seconds"] / results[0]["n"], results[0]["cpu_s"] / results[0]["n"]
    print(f"grouping at scale (8 frames a sample, 4 with {len(WINDOWS)} windows, band_bits={band_bits}; goal: peak RSS <= 2 GB, time per "
          f"sample at 1M <= 1.2x at 100k)")
    for r in results:
        per = r["seconds"] / r["n"]
        print(f"  {r['n']:>9} samples: {r['seconds']:7.1f} s, {1e6 * per:6.1f} us/sample ({per / base:.2f}x the "
              f"first point; CPU {r['cpu_s']:.1f} s, {r['cpu_s'] / r['n'] / base_cpu:.2f}x), peak RSS {r['rss_mb']:.0f} MB, {r['duplicates']} duplicates found "
              f"({r['duplicate_pairs']} of {r['candidate_pairs']} candidate pairs); band rows "
              f"{r['exact_rows'] / r['n']:.0f} exact + {r['probe_rows'] / r['n']:.0f} probes a sample")


if __name__ == "__main__":
    main()
