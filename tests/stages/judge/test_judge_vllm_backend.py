"""judge.backend=vllm: vLLM in process inside Ray Data actors (stages.judge.vllm_backend).

The end-to-end test runs `curate run` ingest -> probe -> vlm-filter -> filter on part of the demo
corpus with a real vllm.LLM (the CPU build, from the judge environment, through Ray's
py_executable) loading the tiny random Qwen2.5-VL built offline. With random weights the scores are
meaningless: what is proven is the path (request building in the project venv, the engine actor in
the judge interpreter, structured outputs, logprobs -> expected scores, parsing, the scores table)
and that failures become rows: a sample without media (input_error) and requests the engine
refuses (a prompt beyond the context: engine_error, HTTP 400, not retried) beside rows that score
in the same batch.
"""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config_base import ConfigError
from pipeline.curate.config import JudgeConfig
from stages.judge.parse import EXPECTED_DECIMALS
from stages.judge.parse import Completion, parse_completion
from stages.judge.vllm_backend import (LOGPROB_FLOOR, actor_runtime_env, check_vllm_setup, engine_kwargs,
                                       gpus_per_replica, logprob_content)

from conftest import demo_config_file
from test_judge_stage import chained_phases, declared_phases

REPO = Path(__file__).resolve().parents[3]
MODEL_NAME = "tiny-qwen2.5-vl"
PROMPTS = REPO / "configs" / "judge_prompts"


@dataclass
class Logprob:
    """The fields of vLLM's vllm.logprobs.Logprob (vLLM lives in the judge venv, not this one)."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


# ------------------------------------------------------------------ the answer's layout (no engine)
def test_logprob_content_is_laid_out_as_vllm_serve_does():
    """vLLM's per-step dicts hold the sampled token first, then the top tokens by rank; the server
    shows the first top_logprobs of them, -inf as -9999.0, and decodes a token it has no text for."""
    tokens = ['{"visual_quality":', "8", "}"]
    steps = [
        {0: Logprob(-0.01, 1, tokens[0]), 9: Logprob(-4.7, 2, "{")},
        # the digit: P(8)=.6 sampled, then 9 (.3), 7 (.1); rank order after the sampled token
        {2: Logprob(math.log(0.6), 1, "8"), 3: Logprob(math.log(0.3), 2, "9"), 1: Logprob(math.log(0.1), 3, "7"),
         5: Logprob(float("-inf"), 4, "$")},
        None,  # a step without logprobs: the token is decoded, no alternatives
    ]
    content = logprob_content([0, 2, 7], steps, 3, token_text={7: "}"}.__getitem__)
    assert [c["token"] for c in content] == tokens
    assert [a["token"] for a in content[1]["top_logprobs"]] == ["8", "9", "7"]  # top_n=3 cuts "$"
    assert content[1]["logprob"] == pytest.approx(math.log(0.6))
    assert content[2] == {"token": "}", "logprob": LOGPROB_FLOOR, "bytes": [ord("}")], "top_logprobs": []}
    every = logprob_content([2], [steps[1]], 20, token_text=str)[0]["top_logprobs"]
    assert every[-1] == {"token": "$", "logprob": LOGPROB_FLOOR, "bytes": [ord("$")]}
    json.dumps(content, allow_nan=False)
    # What the client makes of it: the integer written and the probability-weighted mean.
    parsed = parse_completion(Completion('{"visual_quality":8}', content), ["visual_quality"])
    assert parsed.status == "ok" and parsed.scores == {"visual_quality": 8}
    assert parsed.expected["visual_quality"] == round(0.1 * 7 + 0.6 * 8 + 0.3 * 9, EXPECTED_DECIMALS)


# ------------------------------------------------------------------ configuration (no engine)
def test_engine_arguments_and_gpus_per_replica():
    cfg = JudgeConfig(backend="vllm", model="Qwen/Qwen2.5-VL-72B-Instruct", tensor_parallel_size=4,
                      vllm_max_model_len=32768, vllm_engine_kwargs={"enforce_eager": True, "seed": 7})
    kw = engine_kwargs(cfg)
    assert kw["model"] == "Qwen/Qwen2.5-VL-72B-Instruct" and kw["tensor_parallel_size"] == 4
    assert kw["max_model_len"] == 32768 and kw["enforce_eager"] is True and kw["seed"] == 7
    assert kw["structured_outputs_config"] == {"backend": "xgrammar", "disable_any_whitespace": True}
    assert kw["limit_mm_per_prompt"] == {"image": 2, "video": 2}  # an edit pair: two videos or images
    assert gpus_per_replica(cfg) == 4  # default: one GPU per tensor-parallel shard
    piped = cfg.model_copy(update={"vllm_engine_kwargs": {"pipeline_parallel_size": 2}})
    assert gpus_per_replica(piped) == 8
    assert gpus_per_replica(cfg.model_copy(update={"vllm_gpus_per_replica": 0})) == 0
    with pytest.raises(ValueError, match="judge.vllm_gpus_per_replica"):
        JudgeConfig(backend="vllm", tensor_parallel_size=2, vllm_gpus_per_replica=1)


def test_actors_run_in_the_judge_interpreter(tmp_path):
    python = str(tmp_path / "bin" / "python")
    env = actor_runtime_env(JudgeConfig(backend="vllm", vllm_python=python, vllm_gpus_per_replica=0))
    assert env["py_executable"] == python
    assert str(REPO) in env["env_vars"]["PYTHONPATH"].split(":")  # our packages, for that interpreter
    assert env["env_vars"]["VLLM_TARGET_DEVICE"] == "cpu"  # 0 GPUs: vLLM's CPU build
    on_gpu = actor_runtime_env(JudgeConfig(backend="vllm", vllm_python=sys.executable))
    assert "py_executable" not in on_gpu and "VLLM_TARGET_DEVICE" not in on_gpu["env_vars"]


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_setup_problems_fail_at_once_naming_the_field(ray_session, tmp_path):
    # An interpreter without Ray (a bare venv) cannot host the actors.
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=60)
    with pytest.raises(ConfigError, match=r"judge.vllm_python: .* cannot import ray .*build_judge_env.sh"):
        check_vllm_setup(JudgeConfig(backend="vllm", vllm_python=str(bare / "bin" / "python"),
                                     vllm_gpus_per_replica=0))
    if importlib.util.find_spec("vllm") is None:  # here vLLM lives in the judge environment only
        with pytest.raises(ConfigError, match=r"judge.vllm_python: this interpreter .* cannot import vllm"):
            check_vllm_setup(JudgeConfig(backend="vllm", vllm_python=sys.executable, vllm_gpus_per_replica=0))
    # A GPU replica on a cluster without GPUs would wait forever: refused, saying what to set.
    with pytest.raises(ConfigError, match=r"judge.vllm_gpus_per_replica: a vLLM replica needs 2 GPU"):
        check_vllm_setup(JudgeConfig(backend="vllm", vllm_python=sys.executable, tensor_parallel_size=2))
    with pytest.raises(ConfigError, match="judge.vllm_model_path"):
        check_vllm_setup(JudgeConfig(backend="vllm", vllm_python=sys.executable, vllm_gpus_per_replica=0,
                                     vllm_model_path=tmp_path / "missing"))


# ------------------------------------------------------------------ end to end with a real engine
def judge_python_or_skip() -> str:
    """The judge environment's python, when it has vLLM and this Ray (else the test is skipped)."""
    import ray

    from stages.judge.server import judge_env_missing_reason, judge_venv

    reason = judge_env_missing_reason()
    if reason:
        pytest.skip(reason)
    python = judge_venv() / "bin" / "python"
    res = subprocess.run([str(python), "-c", "import ray; print(ray.__version__)"], capture_output=True,
                         text=True, timeout=120)
    if res.returncode != 0 or res.stdout.strip() != ray.__version__:
        pytest.skip(f"the judge environment {judge_venv()} has no Ray {ray.__version__} (built before "
                    "judge.backend=vllm needed it): rebuild it with scripts/build_judge_env.sh")
    return str(python)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    from pipeline.curate.demo.tiny_judge import build_tiny_qwen25vl

    return build_tiny_qwen25vl(tmp_path_factory.mktemp("tiny-qwen25vl-vllm"))


def long_clip_prompt(dest: Path) -> Path:
    """The clip prompt padded beyond the engine's context, so that every clip request is refused."""
    text = (PROMPTS / "clip_v1.txt").read_text()
    padding = " ".join(["The clip may show people, animals, vehicles or landscapes in motion."] * 250)
    path = dest / "clip_too_long.txt"
    path.write_text(text.replace("Rate the clip on each criterion:", padding + "\n\nRate the clip on each criterion:"))
    return path


@pytest.mark.ray
@pytest.mark.timeout(420)  # the engine's start-up in its actor is ~40-90 s on 2 cores
def test_vlm_filter_stage_with_vllm_actors(ray_session, demo_corpus, tiny_model, tmp_path, monkeypatch):
    from manifests import catalog
    from pipeline.curate import runner
    from pipeline.curate.config import load_config
    from stages.judge.client import schema_for
    from stages.judge.prompts import load_prompts

    python = judge_python_or_skip()
    keep = {"ditto", "x2edit", "motionbench", "openve"}
    off = [f"datasets.{d}.enabled=false" for d in ("reco", "koala", "nhr_edit", "gpt_image_edit", "pico_banana")
           if d not in keep]
    cfg = load_config(demo_config_file(demo_corpus, tmp_path), [
        "judge.backend=vllm", f"judge.vllm_python={python}", f"judge.vllm_model_path={tiny_model}",
        f"judge.model={MODEL_NAME}", "judge.vllm_gpus_per_replica=0", "judge.num_replicas=1",
        "judge.vllm_max_model_len=2048", "judge.vllm_max_num_seqs=8", "judge.vllm_dtype=float32",
        "judge.vllm_engine_kwargs={enforce_eager: true}", "judge.vllm_batch_size=64", "judge.reason=false",
        f"judge.prompts={{video_edit: {PROMPTS / 'video_edit_v1.txt'}, image_edit: {PROMPTS / 'image_edit_v1.txt'}, "
        f"clip: {long_clip_prompt(tmp_path)}}}",
        "judge.min_frames=4", "judge.max_frames=4", "judge.video_min_pixels=3136", "judge.video_max_pixels=6272",
        "judge.image_min_pixels=3136", "judge.image_max_pixels=6272", "judge.request_timeout_s=300", *off])
    work = tmp_path / "work"
    chained = chained_phases(monkeypatch)
    runner.run(cfg, "ingest,probe,vlm-filter,filter", work)
    # The stage's declared phases are what ran: build (flat map), engine actors, the regroup writing parts.
    assert chained == declared_phases(cfg, work, "ingest,probe,vlm-filter,filter")
    assert chained[2:5] == ["build requests", "vllm engine", "write scores"]

    con = catalog.connect(work)
    probed_ok = con.execute("SELECT count(*) FROM probes WHERE error IS NULL").fetchone()[0]
    n, distinct = con.execute("SELECT count(*), count(DISTINCT sample_id) FROM scores").fetchone()
    assert n == distinct == probed_ok  # every measured sample: one row, whatever happened to it
    cursor = con.execute("SELECT * FROM scores")
    columns = [d[0] for d in cursor.description]
    rows = [dict(zip(columns, r)) for r in cursor.fetchall()]
    by_status: dict[tuple[str, str], int] = {}
    for r in rows:
        by_status[(r["kind"], r["status"])] = by_status.get((r["kind"], r["status"]), 0) + 1
        if r["status"] == "ok":
            assert r["kind"] in ("video_edit", "image_edit")
            for m in cfg.judge.metrics_for(r["kind"]):
                assert 1 <= r[m] <= 10  # the schema's integers, enforced by structured outputs
                assert 1.0 <= r[f"{m}_expected"] <= 10.0  # the expected score, from the logprobs
            assert json.loads(r["raw_text"]).keys() == set(cfg.judge.metrics_for(r["kind"]))
            assert r["model"] == MODEL_NAME and r["endpoint"] == f"vllm:{tiny_model}"
            assert r["attempts"] == 1 and r["prompt_tokens"] > 0 and r["output_tokens"] > 0
            assert r["finish_reason"] == "stop" and r["backend"] == "vllm" and len(r["prompt_hash"]) == 16
        elif r["kind"] == "clip":  # refused by the engine (prompt beyond 2048 tokens): 400, not retried
            assert r["status"] == "engine_error" and r["attempts"] == 1, r
            assert r["error"].startswith("HTTP 400") and "2048" in r["error"], r["error"]
        else:  # the OpenVE-Bench input without an edit: nothing to send
            assert r["status"] == "input_error" and r["attempts"] == 0, r
    assert by_status[("video_edit", "ok")] >= 4 and by_status[("image_edit", "ok")] >= 4
    assert by_status[("clip", "engine_error")] >= 3 and by_status.get(("video_edit", "input_error")) == 1
    # The same table as the other backends: every part has the openai backend's scores schema.
    schema = schema_for(cfg.judge, load_prompts(cfg.judge))
    for part in (work / "tables" / "scores").rglob("*.parquet"):
        assert pq.read_schema(part).remove_metadata() == schema.remove_metadata(), part
    assert con.execute("SELECT count(*) FROM selected").fetchone()[0] == \
        con.execute("SELECT count(*) FROM samples").fetchone()[0]

    # A second run has nothing to do: no actor is started, no row changes.
    before = {p: p.read_bytes() for p in (work / "tables" / "scores").rglob("*.parquet")}
    [report] = runner.run(cfg, "vlm-filter", work)
    assert report.units_run == 0
    assert {p: p.read_bytes() for p in (work / "tables" / "scores").rglob("*.parquet")} == before
