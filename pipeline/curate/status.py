"""`curate status`: per-stage counts (done, failed, pending) read from the workdir alone.

Each stage declares its own rows (``StageFacts.status``, in the stage's module); they are asked in
the registry's order, so a new stage shows up by declaring them. Each row aggregates its own
table and reads the few columns it counts (a count of a Parquet table comes from its footers);
a pending count is a difference of the earlier rows' figures where rows are one to one, so the
cost stays that of a few column scans rather than joins of whole tables."""
from __future__ import annotations

from pathlib import Path

from manifests import catalog
from pipeline.curate.registry import STAGES  # also registers every stage's tables: the catalog's views
from pipeline.stage import StatusContext


def stage_status(workdir: Path) -> list[list]:
    """Rows of [stage, done, failed, pending, note]."""
    workdir = Path(workdir)
    con = catalog.connect(workdir)
    sc = StatusContext(con, workdir, frozenset(catalog.views(con)))
    rows = []
    for stage in STAGES.values():
        if stage.facts.status is not None:
            rows.extend(stage.facts.status(sc))
    return rows
