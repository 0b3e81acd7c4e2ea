"""Benchmark the probe stage against a bare decoder loop over the same real clips.

    python bench/bench_probe.py [--copies N]

Clips: the bundled demo/clips, plus ../shared/realclips/videos when present, each probed N times.
(a) bare loop: PyAV open + count frames by demuxing, and decord open + len();
(b) ``stages.probe.probe_table`` over the same URIs (decode check "decord", which also decodes
    frame 0; (a") is the bare loop doing that same work), and with decode_check="none" against
    the PyAV half of the bare loop (a').
Prints clips/s for each and the throughput ratio ours/bare (1.0 = as fast as the bare loop).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import av  # noqa: E402
import decord  # noqa: E402
import pyarrow as pa  # noqa: E402

from manifests.schema import SAMPLES, empty_sample, make_sample_id  # noqa: E402
from stages.probe import probe_table  # noqa: E402


def clip_paths() -> list[Path]:
    clips = sorted((REPO / "demo" / "clips").glob("*.mp4"))
    shared = REPO.parent / "shared" / "realclips" / "videos"
    if shared.is_dir():
        clips += sorted(shared.glob("*.mp4"))
    return clips


def bare_pyav(path: Path) -> int:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        return sum(1 for p in c.demux(stream) if p.size)


def bare_decord(path: Path) -> int:
    return len(decord.VideoReader(str(path), num_threads=1))


def bare_decord_frame0(path: Path) -> None:
    decord.VideoReader(str(path), num_threads=1)[0]


def samples_for(paths: list[Path]) -> pa.Table:
    rows = [empty_sample("bench", make_sample_id("bench", i), modality="video", target_uri=str(p))
            for i, p in enumerate(paths)]
    return pa.Table.from_pylist(rows, schema=SAMPLES)


def timed(label: str, n: int, fn) -> float:
    t0 = time.perf_counter()
    fn()
    rate = n / (time.perf_counter() - t0)
    print(f"  {label:<44} {rate:9.1f} clips/s")
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=5, help="how many times each clip is probed")
    ap.add_argument("--smoke", action="store_true", help="tiny N, seconds: the tests run it (tests/test_bench_smoke.py)")
    args = ap.parse_args()
    if args.smoke:
        args.copies = 1
    paths = clip_paths()
    n = len(paths) * args.copies
    table = samples_for(paths)
    mb = sum(p.stat().st_size for p in paths) / 2**20
    print(f"{len(paths)} clips ({mb:.1f} MB) x {args.copies} copies = {n} probes")

    # Warm the page cache and the libraries, so both sides read from memory.
    for p in paths:
        bare_pyav(p), bare_decord(p)
    out = probe_table(table)
    bad = [e for e in out.column("error").to_pylist() if e]
    assert not bad, bad

    def rounds(fn):
        # One probe_table call per round: its per-call cache never sees a repeated URI.
        return lambda: [fn() for _ in range(args.copies)]

    bare = timed("(a) bare: pyav demux-count + decord len()", n,
                 rounds(lambda: [(bare_pyav(p), bare_decord(p)) for p in paths]))
    ours = timed("(b) probe_table(decode_check='decord')", n, rounds(lambda: probe_table(table)))
    same_work = timed("(a\") bare: pyav demux-count + decord [0]", n,
                      rounds(lambda: [(bare_pyav(p), bare_decord_frame0(p)) for p in paths]))
    bare_av = timed("(a') bare: pyav demux-count only", n, rounds(lambda: [bare_pyav(p) for p in paths]))
    ours_none = timed("(b') probe_table(decode_check='none')", n,
                      rounds(lambda: probe_table(table, decode_check="none")))
    print(f"ratio ours/bare (throughput): decord check {ours / bare:.2f} "
          f"(vs the same work, frame 0 decoded: {ours / same_work:.2f}), "
          f"demux only {ours_none / bare_av:.2f}")


if __name__ == "__main__":
    main()
