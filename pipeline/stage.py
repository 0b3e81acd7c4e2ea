"""The stage contract: what a stage declares, and the one ``run_stage`` that runs any of them.

A stage (``stages/<name>/stage.py``, the filter stage in ``filters/stage.py``) is a ``Stage``
value: its name, the tables it reads and writes, its config section, its fingerprint, how it plans
its work into ``Unit``s, its phases (see ``Phase``: maps and flat maps run as Ray tasks, actor
classes taking batches, a regroup putting a unit back together; each with declared ``Resources``)
and its summary. The phases are all that runs: there is no other way for a stage to do its units. ``run_stage`` does what every stage needs, in this order:
pre-flight checks, the dataset roots on disk (stages that read media), its input tables, --overwrite,
a killed run's temporaries, the fingerprint, resume (units already done are skipped), --limit,
progress and the report.

The pending units go to Ray as a plan table (``pipeline.units``: Parquet files of many units
each, a block apiece), not as a Python object each. A unit's output is one or more Parquet parts
whose names derive from the unit, written (by a task or an actor, never the driver) to a
temporary name and renamed; so a run killed at any point (even ``kill -9``) resumes by redoing
only the units without output and ends with exactly the rows of an uninterrupted run.
"""
from __future__ import annotations

import functools
import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa

from manifests import compact
from manifests.io import atomic_write_json, clean_temporaries, list_parts, table_dir
from manifests import tables as table_registry
from manifests.tables import Table
from pipeline.config_base import ConfigError
from pipeline.progress import Progress, console, out, render_table


@dataclass(frozen=True)
class Resources:
    """What one task or actor of a phase reserves on the Ray cluster."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory: int | None = None  # bytes
    replicas: int | None = None  # tasks at once (a function) or actors (a class, at most); None: as many as fit
    runtime_env: dict[str, Any] | None = None
    # Actors started at once (an elastic pool grows to ``replicas`` as the cluster allows, e.g. as
    # GPUs join); None: ``replicas`` from the start.
    min_replicas: int | None = None


# What a phase's ``fn`` is called with and returns (see ``run_phases``).
MAP = "map"  # a function: one unit item -> one item (a Ray task per call)
FLAT_MAP = "flat_map"  # a function: one unit item -> an iterator of Arrow tables (its samples, a batch at a time)
BATCHES = "batches"  # a class: ``fn(*args)`` once per actor, then called with batches of ``batch_size`` rows
REGROUP = "regroup"  # a function: (unit item, the unit's rows in ``pos`` order) -> the unit's summary row
KINDS = (MAP, FLAT_MAP, BATCHES, REGROUP)

# The columns a flat map's rows carry so that a regroup can put each unit back together.
UNIT_COLUMNS = pa.schema([
    pa.field("unit", pa.string()),  # the unit's key
    pa.field("unit_rows", pa.int64()),  # rows the unit sends (0: this is its marker row)
    pa.field("pos", pa.int64()),  # the row's place in the unit (-1: the marker row)
    pa.field("unit_item", pa.string()),  # the unit's item as JSON (what the regroup writes from)
])


@dataclass(frozen=True)
class Phase:
    """One step of a stage's units, run by ``run_phases``; ``kind`` says how ``fn`` is called:

    - ``map``: a function, unit item -> item, one Ray task per unit;
    - ``flat_map``: a function, unit item -> an iterator of Arrow tables whose rows carry
      ``UNIT_COLUMNS`` (a unit into its samples, yielded a batch at a time so that a task holds
      one batch, not the unit);
    - ``batches``: a class (``fn(*args)`` once per actor: models load once), called with batches of
      ``batch_size`` rows in ``batch_format`` (a unit at a time when rows are units);
    - ``regroup``: a function (unit item, the unit's rows as one Arrow table in ``pos`` order) ->
      the unit's summary row, called in a Ray actor once all of a unit's rows are back: it writes the
      unit's part, so a killed run resumes unit by unit, and nothing is written by the driver.
    A class given with the default kind is a ``batches`` phase of one unit per call."""

    name: str
    fn: Callable[..., Any]
    resources: Resources = Resources()
    args: tuple = ()
    kind: str = MAP
    batch_size: int | None = 1  # rows per call of a ``batches`` phase (None: a block as it comes)
    batch_format: str = "numpy"  # of a ``batches`` phase: "numpy" (dict of arrays) or "pyarrow"
    # Expected seconds one unit spends in this phase, which sizes the plan's blocks (see
    # ``pipeline.units.units_per_block``): a cheap phase runs in as few tasks as there are cores, a
    # slow one in many small tasks for balance. None (unknown) is taken as slow.
    unit_seconds: float | None = None

    def __post_init__(self):
        if isinstance(self.fn, type) and self.kind == MAP:
            object.__setattr__(self, "kind", BATCHES)
        if self.kind not in KINDS:
            raise ValueError(f"phase {self.name!r}: kind {self.kind!r}; choose from {', '.join(KINDS)}")
        if self.unit_seconds is not None and not self.unit_seconds >= 0:
            raise ValueError(f"phase {self.name!r}: unit_seconds {self.unit_seconds!r} is not a duration")
        if (self.kind == BATCHES) != isinstance(self.fn, type):
            raise ValueError(f"phase {self.name!r}: a {self.kind} phase takes a "
                             f"{'class' if self.kind == BATCHES else 'function'}")

    @property
    def is_actor(self) -> bool:
        return self.kind == BATCHES


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

    cfg: Any  # pipeline.curate.config.Config
    workdir: Path
    limit: int | None = None
    overwrite: bool = False
    merged: frozenset[str] = frozenset()  # unit outs a compaction merged (done though their part is gone)


@dataclass
class StageReport:
    stage: str
    units_total: int
    units_run: int
    seconds: float
    by_dataset: list[list[Any]] = field(default_factory=list)  # dataset, in, out, failed
    columns: list[str] = field(default_factory=lambda: ["dataset", "rows in", "out", "failed"])


def _unit_done(ctx: Context, unit: Unit) -> bool:
    return unit.out_exists() or unit.out in ctx.merged


@dataclass
class StatusContext:
    """What a stage's `curate status` rows read: the catalog, the views present, and the figures
    earlier stages' rows left for later ones (``figures``: e.g. the samples a probe should reach),
    so each row is an aggregation over the stage's own table and no whole tables are joined."""

    con: Any  # a catalog connection (manifests.catalog.connect)
    workdir: Path
    present: frozenset[str]  # the views the catalog has
    figures: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class StageFacts:
    """What status, the report and the cost model know of a stage, declared once by the stage."""

    device: str = "cpu"  # where its real deployment computes: "cpu" or "gpu"
    reaches: str = "records"  # the funnel step whose survivors it reads (what "reaches it" means)
    # (table, rows counted, samples counted): what rows/s and cost per 1,000 samples divide by;
    # None: its first written table, count(*) for both.
    counts: tuple[str, str, str] | None = None
    # Its `curate status` rows, [stage, done, failed, pending, note] each, in the stage's module;
    # None: no row. Called in pipeline order (so a row may read ``figures`` of earlier stages).
    status: Callable[[StatusContext], list[list]] | None = None


@dataclass(frozen=True)
class Stage:
    name: str  # as in `curate run --stage NAME`
    reads: tuple[str, ...]  # tables that must exist before it runs
    writes: tuple[str, ...]  # tables it writes (--overwrite discards them)
    section: str | None  # its config section
    plan: Callable[[Context], list[Unit]]
    phases: Callable[[Context], list[Phase]]
    summary: Callable[[Context], tuple[list[str], list[list]]]  # report columns and rows
    # The declarations of the tables it writes (names: ``writes``, in that order), with the schemas
    # it writes them with; the app's registry registers them (manifests.tables.register).
    tables: tuple[Table, ...] = ()
    # scope -> the settings the output depends on; a resume with other settings is refused.
    fingerprint: Callable[[Context], dict[str, dict]] = lambda ctx: {}
    check: Callable[[Context], None] | None = None  # pre-flight: fail before any work, naming the field
    needs_media: bool = False  # it reads the datasets' media: their roots must exist
    is_done: Callable[[Context, Unit], bool] = _unit_done
    limit_by_rows: bool = True  # --limit runs whole units of about N rows (False: the stage reads ctx.limit)
    outputs: tuple[str, ...] = ()  # other paths under the workdir that --overwrite removes
    describe: Callable[[Context, list[Unit], list[Unit]], str] | None = None  # the line before the work
    # A tally of the units' summary rows (``add(row)`` per unit, ``check()`` once they are all
    # back: e.g. fail the run when every request of a judge failed); None: none.
    outcome: Callable[[Context], Any] | None = None
    finish: Callable[[Context, list[Unit]], None] | None = None  # after the units (index tables ...)
    facts: StageFacts = StageFacts()  # read by status, report and cost model (pipeline/curate/report/stages.py)
    # Once no unit is pending: table -> {merged part path -> unit outs in unit order}, merged by
    # manifests.compact so part counts stay bounded by input parts, not by units; None: no merging.
    # A stage opting in must make its readers (and downstream planners) read merged parts.
    compact: Callable[[Context, list[Unit]], dict[str, dict[str, list[str]]]] | None = None


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
def run_phases(phases: list[Phase], units: list[Unit], progress: Progress, plan_dir: Path) -> Iterator[dict]:
    """Chain the phases over the units as one Ray Data pipeline and yield each unit's summary row
    (dataset, rows, failed) as it ends. The units are a plan table under ``plan_dir``
    (``pipeline.units``), read back as the pipeline's source."""
    import ray

    from pipeline.units import Regroup, plan_table, read_unit_plan, units_per_block, write_unit_plan

    if not units:
        return
    for phase in phases:
        if phase.kind == REGROUP and phase is not phases[-1]:
            raise ValueError(f"phase {phase.name!r}: a regroup ends the phases (its rows are the summaries)")
    # A phase that reserves the memory of one unit (decoded frames ...) must see one unit per task.
    one = any(p.resources.memory is not None for p in phases)
    widest = max((p.resources.replicas or 0 for p in phases), default=0)
    costs = [p.unit_seconds for p in phases]
    unit_seconds = None if None in costs else sum(costs)
    per_block = units_per_block(len(units), int(ray.cluster_resources().get("CPU", 1)), 4 * widest, one,
                                unit_seconds)
    ds = read_unit_plan(write_unit_plan(plan_table(units), plan_dir, per_block))
    for phase in phases:
        ds = _chain(ds, phase, Regroup)
    summaries = 0
    for row in ds.iter_rows():
        if "summary" in row and phases[-1].kind == REGROUP:
            row = json.loads(row["summary"])
        summaries += 1
        progress.advance(row)
        yield row
    if summaries != len(units):  # rows were lost between the phases: say so rather than end quietly
        raise RuntimeError(f"{len(units) - summaries} of {len(units)} units came back without a summary row")


def _chain(ds, phase: Phase, regroup_actor: type):
    """``ds`` with one more phase (see ``Phase`` for the kinds)."""
    import ray

    res = phase.resources
    common: dict[str, Any] = {"num_cpus": res.cpus}
    if res.gpus:
        common["num_gpus"] = res.gpus
    if res.runtime_env:
        common["runtime_env"] = res.runtime_env
    if phase.kind == BATCHES:
        pool = ray.data.ActorPoolStrategy(min_size=res.min_replicas or res.replicas or 1, max_size=res.replicas or 1)
        return ds.map_batches(phase.fn, fn_constructor_args=phase.args, batch_size=phase.batch_size,
                              batch_format=phase.batch_format, compute=pool, **common)
    if phase.kind == REGROUP:  # one actor: it must see every row of a unit
        return ds.map_batches(regroup_actor, fn_constructor_args=(phase.fn, *phase.args), batch_size=None,
                              batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=1), **common)
    if res.memory is not None:
        # Reserving the memory of what a task holds also keeps the phase a stage of its own: Ray
        # Data fuses a map into the next one when their resource requests are equal.
        common.update(memory=res.memory, compute=ray.data.TaskPoolStrategy(size=res.replicas or 1))
    else:
        common["concurrency"] = res.replicas
    if phase.kind == FLAT_MAP:
        return ds.map_batches(_flat(phase.fn, phase.args), batch_size=1, batch_format="pyarrow", **common)
    return ds.map(functools.partial(phase.fn, *phase.args) if phase.args else phase.fn, **common)


def _flat(fn: Callable, args: tuple) -> Callable:
    def run(batch: pa.Table) -> Iterator[pa.Table]:
        for item in batch.to_pylist():
            yield from fn(item, *args)

    return run


def run_stage(stage: Stage, cfg, workdir: Path, limit: int | None = None, overwrite: bool = False) -> StageReport:
    ctx = Context(cfg, Path(workdir), limit, overwrite)
    if stage.check is not None:
        stage.check(ctx)
    if stage.needs_media:
        check_dataset_roots(cfg)
    for table in stage.reads:
        if not list_parts(ctx.workdir, table):
            writer = table_registry.TABLES.get(table)
            todo = (f"run `curate run --stage {writer.stage}` first" if writer is not None
                    else f"run the stage that writes {table} first")
            raise ConfigError(f"{ctx.workdir}: no {table} yet; {todo}")
    main = stage.writes[0]
    if overwrite:
        for extra in stage.outputs:
            shutil.rmtree(ctx.workdir / extra, ignore_errors=True)
        reset_stage(ctx.workdir, main, list(stage.writes))
    clean_temporaries(ctx.workdir, main)
    merged: set[str] = set()
    if stage.compact is not None:
        for table in stage.writes:  # finish a merge a killed run left half done, before planning
            compact.recover(ctx.workdir, table)
            merged |= compact.compacted_outs(ctx.workdir, table)
        ctx = replace(ctx, merged=frozenset(merged))
    for scope, fp in stage.fingerprint(ctx).items():
        check_fingerprint(ctx.workdir, main, scope, fp, overwrite)
    units = stage.plan(ctx)
    pending = [u for u in units if not stage.is_done(ctx, u)]
    if limit is not None and stage.limit_by_rows:
        pending = whole_units(pending, limit)
    console.print(stage.describe(ctx, units, pending) if stage.describe else
                  f"{stage.name}: {len(units)} units, {len(units) - len(pending)} already done or deferred")
    t0 = time.time()
    outcome = stage.outcome(ctx) if stage.outcome is not None else None
    with Progress(stage.name, len(pending)) as progress:
        for row in run_phases(stage.phases(ctx), pending, progress, state_dir(ctx.workdir, main) / "_units"):
            if outcome is not None:
                outcome.add(row)
    if outcome is not None:
        outcome.check()
    # merge before finish, so a finish reading the table (screen's verdicts) sees the merged parts;
    # only with no unit pending (a --limit run leaves some), or a later unit would miss its group
    if stage.compact is not None and not [u for u in units if not stage.is_done(ctx, u) and not u.out_exists()]:
        for table, groups in stage.compact(ctx, units).items():
            compact.compact_table(ctx.workdir, table, groups)
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
