"""The ``vllm`` judge backend: vLLM in process, one engine per Ray Data actor, for GPU clusters.

``phases`` declares the stage's three phases over the judge units (stages.judge.stage), run by the
stage contract (``pipeline.stage.run_phases``) like any other stage's:

1. **build** (a flat map: Ray tasks, the project's interpreter, CPU): a unit's samples to score
   (``units.judge_todo``) and each one's chat-completions body, made by the openai backend's own
   request builder (frames sampled with qwen-vl-utils' rules, both videos of a pair in one request
   as JPEG frame lists). One row per sample, yielded ``BUILD_BATCH`` at a time; a unit with nothing
   to score sends one marker row.
2. **judge** (``VllmJudgeActor``: ``judge.num_replicas`` actors, each holding
   ``judge.vllm_gpus_per_replica`` GPUs and running in an interpreter that has vLLM): a
   ``vllm.LLM`` loaded once per actor (``tensor_parallel_size`` shards inside it, vLLM's own
   worker processes on the actor's GPUs). Each batch of rows goes through the openai backend's
   ``Scorer`` (parsing, expected scores, statuses, the scores row) with ``VllmTransport``, which
   hands the bodies to the engine as one batch.
3. **write** (a regroup: one Ray actor, no CPU reserved): a unit's part is written as soon as all
   its rows are back, so a killed run resumes unit by unit, as with the other backends.

A body becomes an engine request the way ``vllm serve`` makes it: vLLM's own
``ChatCompletionRequest`` turns it into ``SamplingParams`` (``response_format`` json_schema ->
structured outputs, ``logprobs``/``top_logprobs``, temperature, seed, max_tokens), and the LLM's chat
entry (``enqueue_chat``) renders the messages and their ``data:`` media through the same chat path
as the server. The output
is turned back into an OpenAI chat completion with logprobs laid out as the server lays them out,
so parse.py reads it unchanged and the scores rows match the openai backend's column for column.

Why two interpreters: vLLM pins its own torch/transformers, so on this project it lives in the
judge environment (``.venv-judge``, scripts/build_judge_env.sh, which also installs this Ray
version); the actors start there through Ray's ``py_executable`` runtime env while everything else
runs in the project venv. Where vLLM is importable in the driver's interpreter (a GPU cluster
image with both), the actors simply use that one.

Failures: a request vLLM refuses (a prompt longer than the context) is answered as HTTP 400 (not
retried) on its own, the rest of its batch runs; any other engine failure is a 500 (retried, like a
server's); a request past ``request_timeout_s`` is a timeout (judge.deadline_s bounds one actor
batch). A checkpoint that cannot be loaded stops the stage (a configuration problem, like the hf
backend's).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.config_base import ConfigError
from stages.judge.client import Scorer, _unique_rows, schema_for
from stages.judge.config import JudgeConfig
from stages.judge.request_build import InputError, row_kind
from stages.judge.server import judge_venv
from stages.judge.units import finish_judge_unit, judge_todo
from stages.judge.vllm_engine import (LOGPROB_FLOOR, REQUEST_ROWS, VllmJudgeActor, engine_kwargs, logprob_content,
                                      model_source)

__all__ = ["LOGPROB_FLOOR", "REQUEST_ROWS", "VllmJudgeActor", "actor_runtime_env", "build_unit_requests", "check_vllm_setup",
           "engine_kwargs", "gpus_per_replica", "judge_python", "logprob_content", "model_source", "phases",
           "write_unit_scores"]

REPO = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------ where and how the actors run
def gpus_per_replica(cfg) -> float:
    if cfg.vllm_gpus_per_replica is not None:
        return float(cfg.vllm_gpus_per_replica)
    pipeline = int(cfg.vllm_engine_kwargs.get("pipeline_parallel_size", 1) or 1)
    return float(cfg.tensor_parallel_size * pipeline)


def judge_python(cfg) -> str:
    """The interpreter the actors run in (see JudgeConfig.vllm_python)."""
    if cfg.vllm_python:
        return cfg.vllm_python
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    python = judge_venv() / "bin" / "python"
    if not python.exists():
        raise ConfigError(
            f"judge.vllm_python: vLLM is not importable here and the judge environment {judge_venv()} does "
            "not exist; build it with scripts/build_judge_env.sh, or set judge.vllm_python to a python "
            "that has vllm and ray")
    return str(python)


def _other_interpreter(python: str) -> bool:
    # Not realpath: a venv's python is a symlink to the base interpreter, yet it is another
    # environment (its own site-packages).
    return os.path.abspath(python) != os.path.abspath(sys.executable)


def actor_runtime_env(cfg) -> dict[str, Any]:
    """Ray runtime env of the actors: the judge interpreter, our code on its path, vLLM's CPU
    settings when no GPU is asked for."""
    env_vars = {
        # Our packages: the project venv has them installed; the judge interpreter finds them here
        # (on a remote cluster init_ray's py_modules bring them too).
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    if gpus_per_replica(cfg) == 0:
        env_vars.update(VLLM_TARGET_DEVICE="cpu",
                        VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
    runtime_env: dict[str, Any] = {"env_vars": env_vars}
    python = judge_python(cfg)
    if _other_interpreter(python):
        runtime_env["py_executable"] = python
    return runtime_env


def check_vllm_setup(cfg) -> None:
    """Fail before any work, naming the field to change, when the actors could not run."""
    import ray

    if cfg.vllm_model_path is not None and not Path(cfg.vllm_model_path).expanduser().is_dir():
        raise ConfigError(f"judge.vllm_model_path={str(cfg.vllm_model_path)!r} is not a directory")
    need = gpus_per_replica(cfg)
    if need > 0:
        have = float(ray.cluster_resources().get("GPU", 0))
        if have < need:
            raise ConfigError(
                f"judge.vllm_gpus_per_replica: a vLLM replica needs {need:g} GPU(s) (tensor_parallel_size "
                f"{cfg.tensor_parallel_size}) and the Ray cluster has {have:g}. Run on a GPU cluster "
                "(--ray-address), or set judge.vllm_gpus_per_replica: 0 for vLLM's CPU build (small models only)")
    python = judge_python(cfg)
    if _other_interpreter(python):
        _check_interpreter(python)
    elif importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"judge.vllm_python: this interpreter ({python}) cannot import vllm; leave the field "
                          "unset to use the judge environment (scripts/build_judge_env.sh), or name a python with vllm")


def _check_interpreter(python: str) -> None:
    import ray

    if not Path(python).exists():
        if _local_cluster():
            raise ConfigError(f"judge.vllm_python: {python} does not exist")
        return  # a path on the cluster's nodes, not necessarily on this one
    probe = ("import importlib.util, sys, ray; "
             "print(ray.__version__, importlib.util.find_spec('vllm') is not None, '%d.%d' % sys.version_info[:2])")
    try:
        res = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120,
                             env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")})
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigError(f"judge.vllm_python: cannot run {python}: {e}") from None
    fix = ("rebuild the judge environment with scripts/build_judge_env.sh (it installs this Ray), "
           "or set judge.vllm_python")
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["?"])[-1]
        raise ConfigError(f"judge.vllm_python: {python} cannot import ray ({last}); {fix}")
    version, has_vllm, py = res.stdout.split()
    ours = "%d.%d" % sys.version_info[:2]
    if version != ray.__version__ or py != ours:
        raise ConfigError(f"judge.vllm_python: {python} has Ray {version} on Python {py}; the driver runs Ray "
                          f"{ray.__version__} on Python {ours}, and they must match; {fix}")
    if has_vllm != "True":
        raise ConfigError(f"judge.vllm_python: {python} cannot import vllm; {fix}")


def _local_cluster() -> bool:
    import ray

    return len([n for n in ray.nodes() if n.get("Alive")]) == 1


# ------------------------------------------------------------------ the phases (project interpreter)
# Samples whose bodies one build task holds at once: a unit's requests are yielded this many at a
# time (1-5 MB of base64 frames each), so a task's memory is bounded by the batch, not the unit.
BUILD_BATCH = 16


def build_unit_requests(item: dict, judge_json: str, prompts, roots, batch: int = BUILD_BATCH) -> Iterator[pa.Table]:
    """The build phase (a flat map) for one unit: one row per sample to score, its body built on
    ``judge.build_workers`` threads (decoding and JPEG encoding release the GIL), yielded
    ``batch`` samples at a time; a unit with nothing to score yields one marker row."""
    cfg = JudgeConfig.model_validate_json(judge_json)
    rows = _unique_rows(judge_todo(item))
    unit = {"unit": item["key"], "unit_rows": len(rows), "unit_item": json.dumps(item, sort_keys=True)}
    if not rows:
        yield pa.Table.from_pylist([{**unit, "pos": -1}], schema=REQUEST_ROWS)
        return
    builder = Scorer(cfg, prompts, transport=None, roots=roots)
    with ThreadPoolExecutor(cfg.build_workers, thread_name_prefix="judge-build") as pool:
        for start in range(0, len(rows), batch):
            chunk = rows[start:start + batch]
            out = []
            for pos, (row, b) in enumerate(zip(chunk, pool.map(builder.build_safe, chunk)), start):
                failed = isinstance(b, InputError)
                out.append({**unit, "pos": pos, "sample": json.dumps(row),
                            "kind": row_kind(row) if failed else b[0],
                            "body": None if failed else b[1], "input_error": str(b) if failed else None})
            yield pa.Table.from_pylist(out, schema=REQUEST_ROWS)


def write_unit_scores(item: dict, scored: pa.Table, schema: pa.Schema) -> dict:
    """The regroup phase for one unit: its scores rows (in the unit's order) as its part."""
    rows = [json.loads(s) for s in scored["score"].to_pylist() if s is not None]
    return finish_judge_unit(item, pa.Table.from_pylist(rows, schema=schema))


def replicas_at_start(cfg) -> int:
    """As many replicas as the GPUs now allow start at once, up to num_replicas as more join."""
    import ray

    gpus = gpus_per_replica(cfg)
    fits = cfg.num_replicas if gpus == 0 else int(float(ray.cluster_resources().get("GPU", 0)) // gpus)
    return max(1, min(cfg.num_replicas, fits))


def phases(cfg, prompts, roots: dict[str, list[str]]) -> list:
    """The vllm backend's phases: CPU tasks building the requests of a unit a batch at a time,
    engine actors scoring ``judge.vllm_batch_size`` of them per call, and one actor writing each
    unit's part once all its rows are back."""
    from pipeline.stage import BATCHES, FLAT_MAP, REGROUP, Phase, Resources
    from stages.judge.client import schema_for

    judge_json = cfg.model_dump_json()
    return [
        Phase("build requests", build_unit_requests, Resources(cpus=1), args=(judge_json, prompts, roots),
              kind=FLAT_MAP),
        Phase("vllm engine", VllmJudgeActor,
              Resources(cpus=1, gpus=gpus_per_replica(cfg), replicas=cfg.num_replicas,
                        min_replicas=replicas_at_start(cfg), runtime_env=actor_runtime_env(cfg)),
              args=(judge_json, prompts), kind=BATCHES, batch_size=cfg.vllm_batch_size, batch_format="pyarrow"),
        # No CPU reserved: it only parses small rows and writes a part now and then, and a CPU held
        # by it could leave the build tasks none on a small machine.
        Phase("write scores", write_unit_scores, Resources(cpus=0), args=(schema_for(cfg, prompts),),
              kind=REGROUP),
    ]
