"""The stage runner: each stage lists its units of work, skips the finished ones, maps the rest
over Ray Data and prints a summary.

A unit's output is one or more Parquet parts whose names derive from the unit, written to a
temporary name and renamed; so a run killed at any point (even ``kill -9``) resumes by redoing
only the units without output and ends with exactly the rows of an uninterrupted run.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyarrow.parquet as pq

from manifests import catalog
from manifests.io import atomic_write_json, clean_temporaries, list_parts, table_dir, write_part
from pipeline import status
from pipeline.config import Config, ConfigError
from pipeline.progress import Progress, console, out, render_table
from pipeline.ray_runtime import init_ray, map_units
from pipeline.report.timings import StageClock

STAGE_ORDER = ["ingest", "probe", "vlm-filter", "filter", "encode", "shard"]


@dataclass
class StageReport:
    stage: str
    units_total: int
    units_run: int
    seconds: float
    by_dataset: list[list[Any]] = field(default_factory=list)  # dataset, in, out, failed
    columns: list[str] = field(default_factory=lambda: ["dataset", "rows in", "out", "failed"])


# ---------------------------------------------------------------- bookkeeping
def state_dir(workdir: Path, stage: str) -> Path:
    return Path(workdir) / "state" / stage


def check_fingerprint(workdir: Path, stage: str, scope: str, fingerprint: dict, overwrite: bool) -> None:
    """Refuse to resume output made with different settings (that would mix two runs)."""
    path = state_dir(workdir, stage) / f"_fingerprint-{scope}.json"
    if path.exists() and not overwrite:
        old = json.loads(path.read_text())
        if old != fingerprint:
            changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
            raise ConfigError(
                f"{workdir}: the {stage} output for {scope} was made with different settings "
                f"({', '.join(changed)}). Re-run with --overwrite to redo it, or use another --workdir."
            )
    atomic_write_json(path, fingerprint)


def begin_stage(workdir: Path, table: str, needs: str, needs_stage: str, fingerprint: dict,
                overwrite: bool) -> None:
    """What every stage after ingest does first: check its input exists, honour --overwrite, drop
    a killed run's temporary files, and refuse to mix outputs made with other settings."""
    if not list_parts(workdir, needs):
        raise ConfigError(f"{workdir}: no {needs} yet; run `curate run --stage {needs_stage}` first")
    if overwrite:
        reset_stage(workdir, table, [table])
    clean_temporaries(workdir, table)
    check_fingerprint(workdir, table, "all", fingerprint, overwrite)


def reset_stage(workdir: Path, stage: str, tables: list[str]) -> None:
    for t in tables:
        shutil.rmtree(table_dir(workdir, t), ignore_errors=True)
    shutil.rmtree(state_dir(workdir, stage), ignore_errors=True)


# ---------------------------------------------------------------- ingest
def _ingest_unit_fn(cfg_json: str, workdir: str, limit: int | None) -> Callable[[dict], dict]:
    def run(item: dict) -> dict:
        from pipeline.config import Config
        from stages.ingest import get_adapter
        from stages.ingest.base import Unit
        from stages.ingest.core import ingest_unit

        cfg = Config.model_validate_json(cfg_json)
        ds_name = item["dataset"]
        adapter = get_adapter(ds_name, getattr(cfg.datasets, ds_name))
        unit = Unit(ds_name, item["key"], item["path"], json.loads(item["params"]))
        return ingest_unit(adapter, unit, workdir, cfg.run.rows_per_part, limit).as_dict()

    return run


def run_ingest(cfg: Config, workdir: Path, limit: int | None, overwrite: bool) -> StageReport:
    from stages.ingest import get_adapter

    if overwrite:
        reset_stage(workdir, "samples", ["samples", catalog.DUPLICATES])
    clean_temporaries(workdir, "samples")
    datasets = cfg.datasets.enabled()
    if not datasets:
        raise ConfigError("datasets: no dataset is enabled; add one (see configs/demo.yaml)")
    units = []
    for name, ds_cfg in datasets.items():
        check_fingerprint(workdir, "samples", name,
                          {"dataset": ds_cfg.model_dump(mode="json"), "limit": limit,
                           "rows_per_part": cfg.run.rows_per_part}, overwrite)
        for u in get_adapter(name, ds_cfg).units():
            units.append({"dataset": u.dataset, "key": u.key, "path": u.path, "params": json.dumps(u.params)})
    atomic_write_json(state_dir(workdir, "samples") / "_units.json", sorted(u["key"] for u in units))
    from stages.ingest.core import done_marker
    from stages.ingest.base import Unit

    pending = [u for u in units if not done_marker(workdir, Unit(u["dataset"], u["key"], u["path"])).exists()]
    console.print(f"ingest: {len(units)} units, {len(units) - len(pending)} already done")
    t0 = time.time()
    fn = _ingest_unit_fn(cfg.model_dump_json(), str(workdir), limit)
    with Progress("ingest", len(pending)) as progress:
        for _ in map_units(fn, pending, progress):
            pass
    n_dup = mark_duplicates(workdir)
    if n_dup:
        console.print(f"ingest: {n_dup} repeated sample ids in the published metadata; the samples view keeps the first")
    con = catalog.connect(workdir)
    rows = con.execute(
        "SELECT dataset, count(*), count(*) FILTER (error IS NULL), count(*) FILTER (error IS NOT NULL) "
        "FROM samples GROUP BY 1 ORDER BY 1"
    ).fetchall()
    return StageReport("ingest", len(units), len(pending), time.time() - t0, [list(r) for r in rows],
                       ["dataset", "records", "samples", "failed"])


def mark_duplicates(workdir: Path) -> int:
    """Record repeated sample ids (all but the first occurrence) so the samples view drops them."""
    from manifests import repeats  # keyed by part names relative to the workdir (issue 14)

    return repeats.mark(workdir)


# ---------------------------------------------------------------- probe
PROBE_COLUMNS = ["sample_id", "dataset", "modality", "source_uri", "target_uri", "clip_start_s", "clip_end_s",
                 "skip_frames", "error"]


def _dataset_roots(cfg: Config) -> dict[str, list[str]]:
    roots = {}
    for name, ds in cfg.datasets.enabled().items():
        paths = [getattr(ds, f, None) for f in ("root", "video_root", "image_root", "output_root")]
        roots[name] = [str(Path(p).expanduser().resolve()) for p in paths if p is not None]
    return roots


def _probe_unit_fn(decode_check: str, roots: dict[str, list[str]]) -> Callable[[dict], dict]:
    def run(item: dict) -> dict:
        import pyarrow as pa
        import pyarrow.compute as pc

        from stages.probe import probe_table

        present = pq.read_schema(item["part"]).names  # parts written before skip_frames lack it
        table = pq.read_table(item["part"], columns=[c for c in PROBE_COLUMNS if c in present])
        table = table.slice(item["offset"], item["length"])
        if item["drop"]:  # rows the samples view drops (repeated ids) are not probed twice
            drop = set(item["drop"])
            keep = [i for i in range(table.num_rows) if i not in drop]
            table = table.take(pa.array(keep, pa.int64()))
        out = probe_table(table, decode_check=decode_check, allowed_roots=roots)
        write_part(Path(item["out"]), out)
        failed = int(pc.sum(pc.is_valid(out["error"])).as_py() or 0) if out.num_rows else 0
        return {"dataset": item["dataset"], "rows": out.num_rows, "failed": failed}

    return run


def probe_units(workdir: Path, rows_per_task: int) -> list[dict]:
    """One unit per slice of ``rows_per_task`` rows of each samples part (stable names); ``drop``
    lists the slice's rows that repeat an earlier sample id (read once here, not in every task)."""
    from manifests import repeats

    repeated = repeats.rows_by_part(workdir)  # by part name relative to tables/samples (issue 14)
    units = []
    for part in list_parts(workdir, "samples"):
        n = pq.ParquetFile(part).metadata.num_rows
        dataset = part.parent.name.split("=", 1)[-1]
        rows = repeated.get(repeats.part_name(part), [])
        for offset in range(0, n, rows_per_task):
            length = min(rows_per_task, n - offset)
            out = table_dir(workdir, "probes") / part.parent.name / f"{part.stem}-r{offset:09d}.parquet"
            units.append({"part": str(part), "offset": offset, "length": length, "out": str(out),
                          "dataset": dataset, "drop": [r - offset for r in rows if offset <= r < offset + length]})
    return units


def run_probe(cfg: Config, workdir: Path, limit: int | None, overwrite: bool) -> StageReport:
    begin_stage(workdir, "probes", "samples", "ingest", {"probe": cfg.probe.model_dump(mode="json")}, overwrite)
    units = probe_units(workdir, cfg.probe.rows_per_task)
    pending = [u for u in units if not Path(u["out"]).exists()]
    if limit is not None:
        pending = _whole_units(pending, limit)
    console.print(f"probe: {len(units)} units, {len(units) - len(pending)} already done or deferred")
    fn = _probe_unit_fn(cfg.probe.decode_check, _dataset_roots(cfg))
    t0 = time.time()
    with Progress("probe", len(pending)) as progress:
        for _ in map_units(fn, pending, progress):
            pass
    return StageReport("probe", len(units), len(pending), time.time() - t0,
                       status.probe_counts(catalog.connect(workdir)),
                       ["dataset", "to probe", "probed", "failed", "pending"])


# ---------------------------------------------------------------- vlm-filter (the judge)
def judge_units(workdir: Path, probe_rows_per_task: int) -> list[dict]:
    """One unit per finished probe unit: the same slice of samples, its probe rows, one scores part."""
    units = []
    for u in probe_units(workdir, probe_rows_per_task):
        probe_part = Path(u["out"])
        if probe_part.exists():
            out = table_dir(workdir, "scores") / probe_part.parent.name / probe_part.name
            units.append({**u, "probe": str(probe_part), "out": str(out)})
    return units


def judge_todo(item: dict):
    """The samples of a judge unit to score: those the probe measured, and on a re-run
    (judge.rescore=failed, the unit's part already written) only those that did not score."""
    import pyarrow.compute as pc

    from stages.judge.client import needs_rescore

    samples = pq.read_table(item["part"]).slice(item["offset"], item["length"])
    probes = pq.read_table(item["probe"], columns=["sample_id", "error"])
    measured = probes.filter(pc.is_null(probes["error"]))["sample_id"]
    todo = samples.filter(pc.is_in(samples["sample_id"], value_set=measured.combine_chunks()))
    out = Path(item["out"])
    if out.exists():
        again = needs_rescore(pq.read_table(out))
        todo = todo.filter(pc.is_in(todo["sample_id"], value_set=again["sample_id"].combine_chunks()))
    return todo


def finish_judge_unit(item: dict, scores) -> dict:
    """Write a judge unit's scores part (merged into the old part on a re-run); its summary row."""
    from stages.judge.client import merge_rescored
    from stages.judge.preflight import unit_outcome
    from stages.judge.schema import SCORED_STATUSES

    out = Path(item["out"])
    outcome = unit_outcome(scores)  # this run's rows only, before the merge
    if out.exists():
        scores = merge_rescored(pq.read_table(out), scores)
    write_part(out, scores)
    return {"dataset": item["dataset"], "rows": scores.num_rows,
            "failed": sum(s not in SCORED_STATUSES for s in scores["status"].to_pylist()), **outcome}


def _judge_unit_fn(judge_json: str, prompts, roots: dict[str, list[str]]) -> Callable[[dict], dict]:
    def run(item: dict) -> dict:
        from pipeline.config import JudgeConfig
        from stages.judge.client import score_table

        cfg = JudgeConfig.model_validate_json(judge_json)
        return finish_judge_unit(item, score_table(judge_todo(item), cfg, prompts, allowed_roots=roots))

    return run


def run_judge(cfg: Config, workdir: Path, limit: int | None, overwrite: bool) -> StageReport:
    from stages.judge.client import scoring_fingerprint
    from stages.judge.prompts import load_prompts

    prompts = load_prompts(cfg.judge)
    if cfg.judge.backend == "openai":
        from stages.judge.preflight import check_servers

        check_servers(cfg.judge)  # every URL serves judge.model: fail now, naming the field
    elif cfg.judge.backend == "vllm":
        from stages.judge.vllm_backend import check_vllm_setup

        check_vllm_setup(cfg.judge)  # an interpreter with vLLM, enough GPUs: fail now, naming the field
    begin_stage(workdir, "scores", "probes", "probe", scoring_fingerprint(cfg.judge, prompts), overwrite)
    units = judge_units(workdir, cfg.probe.rows_per_task)
    rescore = cfg.judge.rescore == "failed"
    pending = [u for u in units if rescore or not Path(u["out"]).exists()]
    if limit is not None:
        pending = _whole_units(pending, limit)
    console.print(f"vlm-filter: judge {cfg.judge.model} via {cfg.judge.backend} "
                  f"({', '.join(cfg.judge.urls) if cfg.judge.backend == 'openai' else 'in-process'}); "
                  f"{len(units)} units, {len(units) - len(pending)} already done or deferred")
    t0 = time.time()
    from stages.judge.preflight import JudgeOutcome

    outcome = JudgeOutcome()
    with Progress("vlm-filter", len(pending)) as progress:
        if cfg.judge.backend == "vllm":  # vLLM replicas as Ray Data actors (stages/judge/vllm_backend.py)
            from stages.judge.vllm_backend import score_units_with_vllm

            for row in score_units_with_vllm(pending, cfg.judge, prompts, _dataset_roots(cfg)):
                progress.advance(row)
                outcome.add(row)
        else:
            fn = _judge_unit_fn(cfg.judge.model_dump_json(), prompts, _dataset_roots(cfg))
            for row in map_units(fn, pending, progress, max_concurrency=cfg.judge.parallel_units):
                outcome.add(row)
    outcome.check()  # every request failed at the server: exit non-zero with the commonest error
    rows = status.judge_counts(catalog.connect(workdir))
    return StageReport("vlm-filter", len(units), len(pending), time.time() - t0, rows,
                       ["dataset", "judged", "scored", "failed"])


# ---------------------------------------------------------------- filter
def run_filter(cfg: Config, workdir: Path, limit: int | None, overwrite: bool) -> StageReport:
    """Thresholds and categories over the stored scores: cheap, so always recomputed whole."""
    from filters.explain import no_scores_message, selected_catalog

    if no_scores_message(workdir):
        raise ConfigError(no_scores_message(workdir))
    t0 = time.time()
    selected = selected_catalog(catalog.connect(workdir), cfg.filter)
    shutil.rmtree(table_dir(workdir, "selected"), ignore_errors=True)
    write_part(table_dir(workdir, "selected") / "part-00000.parquet", selected)
    con = catalog.connect(workdir)
    rows = con.execute(
        "SELECT s.dataset, count(*), count(*) FILTER (kept), count(*) FILTER (NOT kept) "
        "FROM selected JOIN samples s USING (sample_id) GROUP BY 1 ORDER BY 1").fetchall()
    return StageReport("filter", 1, 1, time.time() - t0, [list(r) for r in rows],
                       ["dataset", "candidates", "kept", "rejected"])


def _whole_units(pending: list[dict], limit: int) -> list[dict]:
    """Whole units only, about ``limit`` rows, so a later run continues where this one stopped."""
    chosen, rows = [], 0
    for u in pending:
        if rows >= limit:
            break
        chosen.append(u)
        rows += u["length"]
    return chosen


# ---------------------------------------------------------------- driver
STAGES: dict[str, Callable[[Config, Path, int | None, bool], StageReport]] = {
    "ingest": run_ingest,
    "probe": run_probe,
    "vlm-filter": run_judge,
    "filter": run_filter,
}


def _stage_in(module: str, name: str) -> Callable[[Config, Path, int | None, bool], StageReport]:
    """Stages that live in their own package, imported when they run (they import this module)."""
    def run_stage(cfg: Config, workdir: Path, limit: int | None, overwrite: bool) -> StageReport:
        import importlib

        return getattr(importlib.import_module(module), name)(cfg, workdir, limit, overwrite)

    return run_stage


STAGES["encode"] = _stage_in("stages.encode.stage", "run_encode")
STAGES["shard"] = _stage_in("stages.shard.stage", "run_shard")


def resolve_stages(stage: str) -> list[str]:
    """``all``, one stage, or a comma-separated list (run in pipeline order)."""
    if stage == "all":
        return list(STAGE_ORDER)
    names = [s.strip() for s in stage.split(",") if s.strip()]
    unknown = [s for s in names if s not in STAGES]
    if unknown or not names:
        raise ConfigError(f"--stage {stage!r}: unknown stage; choose from {', '.join(STAGE_ORDER)}, "
                          f"a comma-separated list of them, or all")
    return [s for s in STAGE_ORDER if s in names]


def run(cfg: Config, stage: str = "all", workdir: Path | None = None, limit: int | None = None,
        ray_address: str | None = None, overwrite: bool = False) -> list[StageReport]:
    # Absolute: Ray workers do not share the driver's cwd (issue 14: nothing may depend on how the
    # workdir is spelled; the tables name parts relative to it, see manifests/repeats.py).
    workdir = Path(workdir or cfg.run.workdir).absolute()
    stages = resolve_stages(stage)  # before anything is written: a bad --stage leaves no workdir
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(cfg.model_dump_json(indent=2))
    where = init_ray(ray_address or cfg.ray.address, cfg.ray.num_cpus)
    console.print(f"run: {', '.join(stages)} in {workdir} on {where}")
    reports = []
    for name in stages:
        with StageClock(workdir, name, cfg, overwrite, remote=where.startswith("Ray cluster at")) as clock:
            report = clock.report = STAGES[name](cfg, workdir, limit, overwrite)
        print_report(report)
        reports.append(report)
    return reports


def print_report(report: StageReport) -> None:
    rows = list(report.by_dataset)
    if rows:
        totals = ["total"] + [sum(r[i] or 0 for r in rows) for i in range(1, len(report.columns))]
        rows.append(totals)
    title = (f"{report.stage}: {report.units_run} of {report.units_total} units run "
             f"in {report.seconds:.1f}s")
    out.print(render_table(title, report.columns, rows))
