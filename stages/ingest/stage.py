"""`curate run --stage ingest`: each enabled dataset's adapter lists its units (one published file
or shard each); every unit is read by ``core.ingest_unit`` in a Ray task into ``samples`` parts.

A unit is done when its done marker exists (``state/samples/<dataset>/<key>.json``); the
fingerprint is kept per dataset, so enabling another dataset resumes the others. ``--limit N``
reads at most N records per unit (it is part of the fingerprint).
"""
from __future__ import annotations

import json

from manifests import catalog, recut, repeats
from manifests.io import atomic_write_json, null_counts, parquet_source
from manifests.schema import DUPLICATES, SAMPLES
from manifests.tables import Table
from pipeline.config_base import ConfigError
from pipeline.progress import console
from pipeline.stage import Context, Phase, Stage, StageFacts, StatusContext, Unit, state_dir
from stages.ingest import get_adapter
from stages.ingest import base
from stages.ingest.config import DatasetsConfig
from stages.ingest.core import TABLE, bound_parts, done_marker, ingest_unit, recut_hooks


def _ingest_unit_fn(datasets_json: str, rows_per_part: int, workdir: str, limit: int | None):
    """A Ray task gets the ``datasets:`` section it reads (and ``run.rows_per_part``), not the
    whole run config: the stage stands below the app that assembles that config."""
    def run(item: dict) -> dict:
        datasets = DatasetsConfig.model_validate_json(datasets_json)
        ds_name = item["dataset"]
        adapter = get_adapter(ds_name, getattr(datasets, ds_name))
        unit = base.SourceRange(ds_name, item["key"], item["path"], json.loads(item["params"]))
        return ingest_unit(adapter, unit, workdir, rows_per_part, limit).as_dict()

    return run


def check(ctx: Context) -> None:
    if not ctx.cfg.datasets.enabled():
        raise ConfigError("datasets: no dataset is enabled; add one (see configs/demo.yaml)")


def fingerprint(ctx: Context) -> dict[str, dict]:
    return {name: {"dataset": ds_cfg.model_dump(mode="json"), "limit": ctx.limit,
                   "rows_per_part": ctx.cfg.run.rows_per_part}
            for name, ds_cfg in ctx.cfg.datasets.enabled().items()}


def plan(ctx: Context) -> list[Unit]:
    recut.recover(ctx.workdir, TABLE, recut_hooks(ctx.workdir))  # a re-cut a killed run committed is finished before anything reads
    units = []
    for name, ds_cfg in ctx.cfg.datasets.enabled().items():
        for u in get_adapter(name, ds_cfg).units():
            out = str(done_marker(ctx.workdir, u))
            units.append(Unit(u.key, u.dataset, 0, out, {"path": u.path, "params": json.dumps(u.params)}))
    atomic_write_json(state_dir(ctx.workdir, "samples") / "_units.json", sorted(u.key for u in units))
    return units


def phases(ctx: Context) -> list[Phase]:
    return [Phase("read", _ingest_unit_fn(ctx.cfg.datasets.model_dump_json(), ctx.cfg.run.rows_per_part,
                                          str(ctx.workdir), ctx.limit))]


def finish(ctx: Context, units: list[Unit]) -> None:
    # Every unit is done here (ingest runs them all, --limit included): the new parts are marked
    # and the short parts re-cut into full ones (the repeats follow the rows); the mark below
    # finds nothing new and counts.
    bound_parts(ctx.workdir, ctx.cfg.run.rows_per_part)
    n_dup = repeats.mark(ctx.workdir)  # keyed by part names relative to the workdir (the same run from another cwd writes the same bytes)
    if n_dup:
        console.print(f"ingest: {n_dup} repeated sample ids in the published metadata; the samples view keeps the first")


def summary(ctx: Context) -> tuple[list[str], list[list]]:
    rows = catalog.connect(ctx.workdir).execute(
        "SELECT dataset, count(*), count(*) FILTER (error IS NULL), count(*) FILTER (error IS NOT NULL) "
        "FROM samples GROUP BY 1 ORDER BY 1"
    ).fetchall()
    return ["dataset", "records", "samples", "failed"], [list(r) for r in rows]


def status(sc: StatusContext) -> list[list]:
    """The ingest row (units done; samples ok and failed) and the repeats row. The samples are
    counted on the parts themselves (the error column's null counts in their footers, else a scan
    of that one column; no join) less the repeating rows, whose failed ones are found by joining
    only the failed rows with the (small) repeats."""
    units_file = state_dir(sc.workdir, "samples") / "_units.json"
    units = json.loads(units_file.read_text()) if units_file.exists() else []
    done_units = {p.stem for p in state_dir(sc.workdir, "samples").glob("*/*.json")}
    ok = failed = n_repeats = 0
    if "samples" in sc.present:
        footers = null_counts(sc.workdir, "samples", "error")
        raw_ok, raw_failed = (footers[1], footers[0] - footers[1]) if footers else sc.con.execute(
            "SELECT count(*) FILTER (error IS NULL), count(*) FILTER (error IS NOT NULL) FROM "
            f"read_parquet({parquet_source(sc.workdir, 'samples')}, hive_partitioning=false)").fetchone()
        n_repeats = repeats.count(sc.workdir)
        failed_repeats = sc.con.execute("SELECT count(*) FROM repeats WHERE error IS NOT NULL").fetchone()[0]
        ok, failed = raw_ok - (n_repeats - failed_repeats), raw_failed - failed_repeats
    sc.figures["samples_ok"] = ok
    pending_units = len(set(units) - done_units)
    rows = [["ingest", ok, failed, f"{pending_units} units" if pending_units else 0,
             f"{len(units) - pending_units}/{len(units)} units done"]]
    if "samples" in sc.present:
        rows.append(["repeats", n_repeats, 0, 0, "rows repeating an earlier sample id, dropped from "
                     "samples (query the `repeats` view)"])
    return rows


STAGE = Stage(
    name="ingest", reads=(), writes=("samples", "duplicates"), section="datasets",
    tables=(Table("samples", "ingest", SAMPLES),
            # (part, file_row_number) of repeated sample ids: the samples view keeps the first.
            Table("duplicates", "ingest", DUPLICATES, partition=None, view=False)),
    plan=plan, phases=phases, summary=summary, fingerprint=fingerprint, check=check, needs_media=True,
    limit_by_rows=False, finish=finish, facts=StageFacts(status=status),
    describe=lambda ctx, units, pending: f"ingest: {len(units)} units, {len(units) - len(pending)} already done",
)
