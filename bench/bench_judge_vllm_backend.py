"""judge.backend=vllm (engine in a Ray actor) vs judge.backend=openai (vllm serve + HTTP client):
the same tiny random Qwen2.5-VL, the same request bodies (built once from the demo corpus), the same
engine settings. Prints engine start-up, requests/s of each and their ratio, and whether the scores agree.

    JUDGE_VENV=... .venv/bin/python bench_vllm_backend.py WORKDIR_WITH_PROBES TINY_MODEL_DIR [N]
"""
import asyncio, json, sys, time
from pathlib import Path

import pyarrow as pa
import ray

from pipeline.curate.config import JudgeConfig
from stages.judge.client import HttpTransport, Scorer, _unique_rows
from stages.judge.prompts import load_prompts
from stages.judge.server import running_server
from stages.judge.vllm_backend import REQUEST_ROWS, VllmJudgeActor, actor_runtime_env
import pyarrow.parquet as pq

work, model = Path(sys.argv[1]), Path(sys.argv[2])
N = int(sys.argv[3]) if len(sys.argv) > 3 else 64
SEQS = 8
cfg = JudgeConfig(backend="vllm", model="tiny", vllm_model_path=model, vllm_gpus_per_replica=0,
                  vllm_max_model_len=4096, vllm_max_num_seqs=SEQS, vllm_dtype="float32",
                  vllm_engine_kwargs={"enforce_eager": True}, min_frames=4, max_frames=4,
                  video_min_pixels=3136, video_max_pixels=6272, image_min_pixels=3136, image_max_pixels=6272,
                  request_timeout_s=600, concurrency=SEQS, urls=["http://unused"])
prompts = load_prompts(cfg)
samples = pa.concat_tables([pq.read_table(p) for p in sorted((work / "tables" / "samples").rglob("*.parquet"))])
rows = [r for r in _unique_rows(samples) if r["error"] is None and r["target_uri"]]
builder = Scorer(cfg, prompts, None)
built = [(r, builder.build_safe(r)) for r in rows]
built = [(r, b) for r, b in built if not isinstance(b, Exception)]
print(f"{len(built)} distinct requests, {N} timed (repeated), {SEQS} sequences at once")

def request_rows(n, offset=0):
    out = []
    for j in range(n):
        r, (kind, body) = built[(offset + j) % len(built)]
        out.append({"unit": "0", "unit_rows": n, "pos": j, "unit_item": "{}", "sample": json.dumps({**r, "sample_id": f"{r['sample_id']}#{offset + j}"}),
                    "kind": kind, "body": body, "input_error": None})
    return pa.Table.from_pylist(out, schema=REQUEST_ROWS)

ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
# ---- vllm backend: the engine in a Ray actor in the judge interpreter
Actor = ray.remote(VllmJudgeActor).options(num_cpus=1, runtime_env=actor_runtime_env(cfg))
t0 = time.monotonic()
actor = Actor.remote(cfg.model_dump_json(), prompts)
ray.get(actor.__ray_ready__.remote())
start_vllm = time.monotonic() - t0
ray.get(actor.__call__.remote(request_rows(SEQS)))  # warm-up
t0 = time.monotonic()
out_v = ray.get(actor.__call__.remote(request_rows(N)))
rate_v = N / (time.monotonic() - t0)
scores_v = {json.loads(s)["sample_id"]: json.loads(s) for s in out_v["score"].to_pylist()}
ray.kill(actor)
time.sleep(5)

# ---- openai backend: vllm serve + the HTTP client, same bodies
with running_server(model, served_model_name="tiny", max_model_len=4096, max_num_seqs=SEQS) as server:
    start_serve = server.startup_s
    ocfg = cfg.model_copy(update={"backend": "openai", "urls": [server.base_url]})

    async def score(n, offset=0):
        transport = HttpTransport(SEQS)
        scorer = Scorer(ocfg, prompts, transport)
        sem = asyncio.Semaphore(SEQS)
        t0 = time.monotonic()
        async def one(rr):
            async with sem:
                return await scorer.score_row(json.loads(rr["sample"]), (rr["kind"], rr["body"]), t0)
        res = await asyncio.gather(*(one(rr) for rr in request_rows(n, offset).to_pylist()))
        await transport.close()
        return res
    asyncio.run(score(SEQS))  # warm-up
    t0 = time.monotonic()
    res_o = asyncio.run(score(N))
    rate_o = N / (time.monotonic() - t0)
scores_o = {s["sample_id"]: s for s in res_o}

ok_v = sum(s["status"] == "ok" for s in scores_v.values()); ok_o = sum(s["status"] == "ok" for s in scores_o.values())
same_int = diff = 0
maxdiff = 0.0
for sid, sv in scores_v.items():
    so = scores_o[sid]
    metrics = cfg.metrics_for(sv["kind"])
    if all(sv[m] == so[m] for m in metrics):
        same_int += 1
    for m in metrics:
        a, b = sv.get(m + "_expected"), so.get(m + "_expected")
        if a is not None and b is not None:
            maxdiff = max(maxdiff, abs(a - b))
print(f"engine start-up: vllm actor {start_vllm:.1f} s, vllm serve {start_serve:.1f} s")
print(f"throughput: vllm backend {rate_v:.2f} req/s, openai backend {rate_o:.2f} req/s, ratio {rate_v / rate_o:.2f}")
print(f"status ok: {ok_v}/{N} vs {ok_o}/{N}; same integers on {same_int}/{N}; max |expected difference| {maxdiff:.2e}")
