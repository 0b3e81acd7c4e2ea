"""`curate run --stage filter`: thresholds and categories over the stored scores (``filters.rules``
through DuckDB, ``filters.selection``). Cheap, so always recomputed whole, in one Ray task: one unit,
no fingerprint (changing a threshold and re-running is the point)."""
from __future__ import annotations

import shutil
from pathlib import Path

from manifests import catalog
from manifests.io import table_dir
from manifests.tables import Table
from pipeline.stage import Context, Phase, Resources, Stage, StageFacts, StatusContext, Unit
from filters.rules import SELECTED
from filters.selection import no_scores_message, write_selected
from pipeline.config_base import ConfigError


def _select_fn(filter_json: str, workdir: str, tables: tuple[Table, ...]):
    """``tables``: the driver's registered declarations (the worker imports only this module, so it
    has none registered of its own)."""
    def select(item: dict) -> dict:
        """Write the ``selected`` table from the scores (DuckDB, in a Ray task); its summary row."""
        from filters.config import FilterConfig

        # Streamed beside the table first (the old part may be what the catalog's `selected` view
        # reads meanwhile), then swapped in by a rename: a reader never sees half a table.
        con = catalog.connect(Path(workdir), tables=tables)
        fresh = Path(workdir) / "state" / "selected-next.parquet"
        rows = write_selected(con, FilterConfig.model_validate_json(filter_json), fresh)
        con.close()
        shutil.rmtree(table_dir(workdir, "selected"), ignore_errors=True)
        Path(item["out"]).parent.mkdir(parents=True, exist_ok=True)
        fresh.replace(item["out"])
        return {"dataset": "all", "rows": rows, "failed": 0}

    return select


def check(ctx: Context) -> None:
    message = no_scores_message(ctx.workdir)  # the words `curate filter` uses too
    if message:
        raise ConfigError(message)


def summary(ctx: Context) -> tuple[list[str], list[list]]:
    rows = catalog.connect(ctx.workdir).execute(
        "SELECT s.dataset, count(*), count(*) FILTER (kept), count(*) FILTER (NOT kept) "
        "FROM selected JOIN samples s USING (sample_id) GROUP BY 1 ORDER BY 1").fetchall()
    return ["dataset", "candidates", "kept", "rejected"], [list(r) for r in rows]


def status(sc: StatusContext) -> list[list]:
    """The filter's `curate status` row: kept and rejected samples, one column of its own table."""
    if "samples" not in sc.present or "selected" not in sc.present:
        return []
    kept, rejected = sc.con.execute(
        "SELECT count(*) FILTER (kept), count(*) FILTER (NOT kept) FROM selected").fetchone()
    sc.figures["kept"] = kept
    return [["filter", kept, 0, 0, f"{rejected} rejected by a rule"]]


STAGE = Stage(
    name="filter", reads=("scores",), writes=("selected",), section="filter",
    tables=(Table("selected", "filter", SELECTED, partition=None, joined=("sel", "sel.kept, sel.rejected_by")),),
    plan=lambda ctx: [Unit("selected", "all", 0, str(table_dir(ctx.workdir, "selected") / "part-00000.parquet"))],
    is_done=lambda ctx, unit: False,
    limit_by_rows=False,
    phases=lambda ctx: [Phase("select", _select_fn(ctx.cfg.filter.model_dump_json(), str(ctx.workdir),
                                                   tuple(catalog.declared_tables().values())),
                              Resources(cpus=1))],
    check=check, summary=summary, facts=StageFacts(status=status),
    describe=lambda ctx, units, pending: "filter: thresholds and categories over the stored scores",
)
