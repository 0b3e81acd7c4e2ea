"""Benchmark the judge client against its limit: a local server with fixed latency L and C requests
in flight can answer at most C / L requests per second.

    python bench/bench_judge_client.py [--points 0.1:16 0.5:128 0.1:64] [--seconds 10]

The server (tests/fake_judge.py, a real aiohttp server in its own process) sleeps L seconds
per request and answers deterministic scores with logprobs. The client is the stage core,
``score_table``, end to end: requests built from image pairs (decode, resize to Qwen's pixel
rules, JPEG, base64) on its build threads, sent with bounded concurrency, answers parsed (scores,
expected scores from logprobs), the scores table built. Each point L:C sends about ``seconds`` x
C / L requests, after a warm-up run (imports, connection pool). Prints achieved req/s / (C / L)
(the goal is >= 0.9) and the client's CPU time per request, which bounds the rate one client
process can reach (0.1:64 asks for 640 req/s: on a small shared machine that is CPU-bound; a
72B judge answers in seconds, so real points look like 2:128 = 64 req/s).
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pyarrow as pa  # noqa: E402
from PIL import Image  # noqa: E402

from manifests.schema import SAMPLES, empty_sample  # noqa: E402
from pipeline.curate.config import JudgeConfig  # noqa: E402
from stages.judge.client import score_table  # noqa: E402
from stages.judge.prompts import load_prompts  # noqa: E402


def image_samples(folder: Path, n: int, distinct: int = 64) -> pa.Table:
    for i in range(distinct):
        Image.new("RGB", (48, 32), (i * 4 % 256, 90, 200 - i)).save(folder / f"{i}.png")
    rows = [empty_sample("bench", f"bench:{k:07d}", modality="image", task="edit",
                         source_uri=str(folder / f"{k % distinct}.png"),
                         target_uri=str(folder / f"{(k * 7 + 1) % distinct}.png"),
                         instruction=f"edit number {k}") for k in range(n)]
    return pa.Table.from_pylist(rows, schema=SAMPLES)


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "tests/fake_judge.py", "--latency", str(latency)],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise RuntimeError(f"the fake judge server did not start (said {url!r})")
    return proc, url


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_point(url: str, latency: float, c: int, seconds: float, tmp: Path) -> None:
    cfg = JudgeConfig(urls=[url], concurrency=c, request_timeout_s=60 + latency, max_attempts=1)
    prompts = load_prompts(cfg)
    score_table(image_samples(tmp, 2 * c), cfg, prompts)  # warm-up: imports, connections
    samples = image_samples(tmp, max(10, round(seconds / latency)) * c)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    out = score_table(samples, cfg, prompts)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    rate, limit = out.num_rows / wall, c / latency
    counts = out.column("status").value_counts()
    statuses = dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))
    print(f"{latency * 1000:>6.0f} {c:>5} {out.num_rows:>8} {wall:>7.2f} {rate:>8.1f} {limit:>8.1f} "
          f"{rate / limit:>6.3f} {1000 * cpu / out.num_rows:>7.2f}  {statuses}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", nargs="+", default=["0.1:16", "0.5:128", "0.1:64"],
                    help="L:C pairs: server latency in seconds, client concurrency")
    ap.add_argument("--seconds", type=float, default=10.0, help="ideal duration of each point")
    ap.add_argument("--smoke", action="store_true", help="tiny N, seconds: the tests run it (tests/test_bench_smoke.py)")
    args = ap.parse_args()
    if args.smoke:  # one point, half a second
        args.points, args.seconds = ["0.05:8"], 0.5
    points = [(float(p.split(":")[0]), int(p.split(":")[1])) for p in args.points]
    print(f"{'L ms':>6} {'C':>5} {'requests':>8} {'seconds':>7} {'req/s':>8} {'C/L':>8} {'ratio':>6} "
          f"{'cpu ms':>7}  statuses")
    with tempfile.TemporaryDirectory() as tmp:
        for latency, c in points:
            proc, url = start_server(latency)
            try:
                run_point(url, latency, c, args.seconds, Path(tmp))
            finally:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
