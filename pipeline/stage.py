"""The stage contract: what a stage declares, and the one ``run_stage`` that runs any of them.

A stage (``stages/<name>/stage.py``, the filter stage in ``filters/stage.py``) is a ``Stage``
value: its name, the tables it reads and writes, its config section, its fingerprint, how it plans
its work into ``Unit``s, its phases (a function run as Ray tasks, or an actor class, each with
declared ``Resources``) and its summary. ``run_stage`` does what every stage needs, in this order:
pre-flight checks, the dataset roots on disk (stages that read media), its input tables, --overwrite,
a killed run's temporaries, the fingerprint, resume (units already done are skipped), --limit,
progress and the report.

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
from typing import Any, Callable, Iterator

from manifests.io import atomic_write_json, clean_temporaries, list_parts, table_dir
from manifests.tables import TABLES
from pipeline.config_base import ConfigError
from pipeline.progress import Progress, console, out, render_table


@dataclass(frozen=True)
class Resources:
    """What one task or actor of a phase reserves on the Ray cluster."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory: int | None = None  # bytes
    replicas: int | None = None  # tasks at once (a function) or actors (a class); None: as many as fit
    runtime_env: dict[str, Any] | None = None


@dataclass(frozen=True)
class Phase:
    """One step a unit goes through: ``fn`` is a function (unit item -> item, run as Ray tasks) or
    a class (``fn(*args)`` once per actor, then called with batches of one unit)."""

    name: str
    fn: Callable[..., Any]
    resources: Resources = Resources()
    args: tuple = ()

    @property
    def is_actor(self) -> bool:
        return isinstance(self.fn, type)


@dataclass(frozen=True)
class Unit:
    """One unit of work: a stable ``key``, about ``rows`` samples, and ``out``, the file whose
    existence means it is done. ``params`` are the stage's own fields (plain values only: they
    travel through Ray Data as one row)."""

    key: str
    dataset: str
    rows: int
    out: str
    params: dict[str, Any] = field(default_factory=dict)

    def out_exists(self) -> bool:
        return Path(self.out).exists()

    def item(self) -> dict[str, Any]:
        return {**self.params, "key": self.key, "dataset": self.dataset, "length": self.rows, "out": self.out}


@dataclass
class Context:
    """What a stage's functions see: the config and the run's options."""

    cfg: Any  # pipeline.config.Config
    workdir: Path
    limit: int | None = None
    overwrite: bool = False


@dataclass
class StageReport:
    stage: str
    units_total: int
    units_run: int
    seconds: float
    by_dataset: list[list[Any]] = field(default_factory=list)  # dataset, in, out, failed
    columns: list[str] = field(default_factory=lambda: ["dataset", "rows in", "out", "failed"])


def _unit_done(ctx: Context, unit: Unit) -> bool:
    return unit.out_exists()


@dataclass(frozen=True)
class StageFacts:
    """What status, the report and the cost model know of a stage, declared once by the stage."""

    device: str = "cpu"  # where its real deployment computes: "cpu" or "gpu"
    reaches: str = "records"  # the funnel step whose survivors it reads (what "reaches it" means)
    # (table, rows counted, samples counted): what rows/s and cost per 1,000 samples divide by;
    # None: its first written table, count(*) for both.
    counts: tuple[str, str, str] | None = None


@dataclass(frozen=True)
class Stage:
    name: str  # as in `curate run --stage NAME`
    reads: tuple[str, ...]  # tables that must exist before it runs
    writes: tuple[str, ...]  # tables it writes (--overwrite discards them)
    section: str | None  # its config section
    plan: Callable[[Context], list[Unit]]
    phases: Callable[[Context], list[Phase]]
    summary: Callable[[Context], tuple[list[str], list[list]]]  # report columns and rows
    # scope -> the settings the output depends on; a resume with other settings is refused.
    fingerprint: Callable[[Context], dict[str, dict]] = lambda ctx: {}
    check: Callable[[Context], None] | None = None  # pre-flight: fail before any work, naming the field
    needs_media: bool = False  # it reads the datasets' media: their roots must exist
    is_done: Callable[[Context, Unit], bool] = _unit_done
    limit_by_rows: bool = True  # --limit runs whole units of about N rows (False: the stage reads ctx.limit)
    outputs: tuple[str, ...] = ()  # other paths under the workdir that --overwrite removes
    describe: Callable[[Context, list[Unit], list[Unit]], str] | None = None  # the line before the work
    # Runs the pending units itself (yielding a summary row per unit) instead of chaining the
    # phases, e.g. when results come back per sample and are regrouped on the driver.
    execute: Callable[[Context, list[Unit], Progress], Iterator[dict]] | None = None
    finish: Callable[[Context, list[Unit]], None] | None = None  # after the units (index tables ...)
    facts: StageFacts = StageFacts()  # read by status, report and cost model (pipeline/report/stages.py)


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


def reset_stage(workdir: Path, stage: str, tables: list[str]) -> None:
    for t in tables:
        shutil.rmtree(table_dir(workdir, t), ignore_errors=True)
    shutil.rmtree(state_dir(workdir, stage), ignore_errors=True)


def whole_units(pending: list[Unit], limit: int) -> list[Unit]:
    """Whole units only, about ``limit`` rows, so a later run continues where this one stopped."""
    chosen, rows = [], 0
    for u in pending:
        if rows >= limit:
            break
        chosen.append(u)
        rows += u.rows
    return chosen


def check_dataset_roots(cfg) -> None:
    """The enabled datasets' directories exist (checked when a stage that reads them starts, so
    `curate filter` works where the raw data is not mounted)."""
    problems = []
    for name, ds in cfg.datasets.enabled().items():
        for fld, path in ds.paths().items():
            if not Path(path).expanduser().exists():
                problems.append(f"datasets.{name}.{fld}: {path} does not exist; point it at the "
                                f"downloaded {name} folder, or set datasets.{name}.enabled: false")
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


# ---------------------------------------------------------------- running
def run_phases(phases: list[Phase], units: list[Unit], progress: Progress) -> Iterator[dict]:
    """Chain the phases over the units as one Ray Data pipeline (one unit per block, so units are
    scheduled independently); yields each unit's summary row (dataset, rows, failed) as it ends."""
    import ray

    if not units:
        return
    items = [u.item() for u in units]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    for phase in phases:
        res = phase.resources
        if phase.is_actor:
            ds = ds.map_batches(phase.fn, fn_constructor_args=phase.args, batch_size=1, batch_format="numpy",
                                compute=ray.data.ActorPoolStrategy(size=res.replicas or 1),
                                num_gpus=res.gpus or None, num_cpus=res.cpus,
                                **({"runtime_env": res.runtime_env} if res.runtime_env else {}))
        else:
            kwargs: dict[str, Any] = {"num_cpus": res.cpus}
            if res.memory is not None:
                # Reserving the memory of what a task holds also keeps the phase a stage of its
                # own: Ray Data fuses a map into the next one when their resource requests are equal.
                kwargs.update(memory=res.memory, compute=ray.data.TaskPoolStrategy(size=res.replicas or 1))
            else:
                kwargs["concurrency"] = res.replicas
            if res.gpus:
                kwargs["num_gpus"] = res.gpus
            ds = ds.map(phase.fn, **kwargs)
    for row in ds.iter_rows():
        progress.advance(row)
        yield row


def run_stage(stage: Stage, cfg, workdir: Path, limit: int | None = None, overwrite: bool = False) -> StageReport:
    ctx = Context(cfg, Path(workdir), limit, overwrite)
    if stage.check is not None:
        stage.check(ctx)
    if stage.needs_media:
        check_dataset_roots(cfg)
    for table in stage.reads:
        if not list_parts(ctx.workdir, table):
            raise ConfigError(f"{ctx.workdir}: no {table} yet; run `curate run --stage "
                              f"{TABLES[table].stage}` first")
    main = stage.writes[0]
    if overwrite:
        for extra in stage.outputs:
            shutil.rmtree(ctx.workdir / extra, ignore_errors=True)
        reset_stage(ctx.workdir, main, list(stage.writes))
    clean_temporaries(ctx.workdir, main)
    for scope, fp in stage.fingerprint(ctx).items():
        check_fingerprint(ctx.workdir, main, scope, fp, overwrite)
    units = stage.plan(ctx)
    pending = [u for u in units if not stage.is_done(ctx, u)]
    if limit is not None and stage.limit_by_rows:
        pending = whole_units(pending, limit)
    console.print(stage.describe(ctx, units, pending) if stage.describe else
                  f"{stage.name}: {len(units)} units, {len(units) - len(pending)} already done or deferred")
    t0 = time.time()
    with Progress(stage.name, len(pending)) as progress:
        rows = (stage.execute(ctx, pending, progress) if stage.execute is not None
                else run_phases(stage.phases(ctx), pending, progress))
        for _ in rows:
            pass
    if stage.finish is not None:
        stage.finish(ctx, units)
    columns, by_dataset = stage.summary(ctx)
    return StageReport(stage.name, len(units), len(pending), time.time() - t0, by_dataset, columns)


def print_report(report: StageReport) -> None:
    rows = list(report.by_dataset)
    if rows:
        totals = ["total"] + [sum(r[i] or 0 for r in rows) for i in range(1, len(report.columns))]
        rows.append(totals)
    title = (f"{report.stage}: {report.units_run} of {report.units_total} units run "
             f"in {report.seconds:.1f}s")
    out.print(render_table(title, report.columns, rows))
