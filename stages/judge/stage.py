"""`curate run --stage vlm-filter`: every probed sample scored by the Qwen2.5-VL judge.

Backends openai (any OpenAI-compatible server) and hf (transformers in process) score a unit in
one Ray task (``judge.parallel_units`` at once, ``judge.concurrency`` requests in flight each).
Backend vllm is three phases (``stages.judge.vllm_backend.phases``): CPU tasks building the
requests a batch at a time, ``judge.num_replicas`` engine actors scoring them, and one actor
writing each unit's part once its rows are back. A re-run skips units whose part exists (``judge.rescore: failed`` re-scores the rows
that did not score).
"""
from __future__ import annotations

from typing import Callable

from manifests import catalog, compact
from manifests.tables import Table
from pipeline.stage import Context, Phase, Resources, Stage, StageFacts, Unit
from stages.judge import vllm_backend
from stages.judge.client import score_table, scoring_fingerprint
from stages.judge.config import JudgeConfig
from stages.judge.outcome import JudgeOutcome
from stages.judge.preflight import check_servers
from stages.judge.prompts import load_prompts
from stages.judge.schema import SCORES
from stages.judge.units import finish_judge_unit, judge_todo, judge_units
from stages.media.locate import dataset_roots
from stages.judge.counts import judge_counts, judge_status


def _judge_unit_fn(judge_json: str, prompts, roots: dict[str, list[str]]) -> Callable[[dict], dict]:
    def run(item: dict) -> dict:
        cfg = JudgeConfig.model_validate_json(judge_json)
        return finish_judge_unit(item, score_table(judge_todo(item), cfg, prompts, allowed_roots=roots))

    return run


def check(ctx: Context) -> None:
    judge = ctx.cfg.judge
    load_prompts(judge)
    if judge.backend == "openai":
        check_servers(judge)  # every URL serves judge.model: fail now, naming the field
    elif judge.backend == "vllm":
        vllm_backend.check_vllm_setup(judge)  # an interpreter with vLLM, enough GPUs: fail now, naming the field


def phases(ctx: Context) -> list[Phase]:
    judge, prompts, roots = ctx.cfg.judge, load_prompts(ctx.cfg.judge), dataset_roots(ctx.cfg)
    if judge.backend == "vllm":
        return vllm_backend.phases(judge, prompts, roots)
    return [Phase("score", _judge_unit_fn(judge.model_dump_json(), prompts, roots),
                  Resources(cpus=1, replicas=judge.parallel_units))]


def describe(ctx: Context, units: list[Unit], pending: list[Unit]) -> str:
    judge = ctx.cfg.judge
    return (f"vlm-filter: judge {judge.model} via {judge.backend} "
            f"({', '.join(judge.urls) if judge.backend == 'openai' else 'in-process'}); "
            f"{len(units)} units, {len(units) - len(pending)} already done or deferred")


STAGE = Stage(
    name="vlm-filter", reads=("probes",), writes=("scores",), section="judge", needs_media=True,
    tables=(Table("scores", "vlm-filter", SCORES, joined=(
        "sc", "sc.* EXCLUDE (sample_id, dataset, schema_version, status, kind, error), "
              "sc.status AS judge_status, sc.kind AS judge_kind, sc.error AS judge_error")),),
    facts=StageFacts(device="gpu", reaches="probed", status=judge_status),
    check=check,
    fingerprint=lambda ctx: {"all": scoring_fingerprint(ctx.cfg.judge, load_prompts(ctx.cfg.judge))},
    plan=lambda ctx: judge_units(ctx.workdir, ctx.cfg.run.rows_per_task),
    is_done=lambda ctx, unit: ctx.cfg.judge.rescore != "failed" and (unit.out_exists() or unit.out in ctx.merged),
    phases=phases, describe=describe,
    # every request failed at the server: exit non-zero with the commonest error
    outcome=lambda ctx: JudgeOutcome(),
    summary=lambda ctx: (["dataset", "judged", "scored", "failed"], judge_counts(catalog.connect(ctx.workdir))),
    # rescore: failed re-writes a merged unit as its own part; the next merge folds it back in
    compact=lambda ctx, units: {"scores": compact.by_input_part(units)},
)
