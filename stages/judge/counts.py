"""Per-dataset judge counts over the catalog: the judge stage's summary and `curate status`."""
from __future__ import annotations

from stages.judge.schema import SCORED_STATUSES


_SCORED = "(" + ", ".join(f"'{x}'" for x in SCORED_STATUSES) + ")"


def judge_counts(con) -> list[list]:
    """Per dataset: [dataset, judged, scored (ok/repaired), failed]."""
    return [list(r) for r in con.execute(
        f"SELECT dataset, count(*), count(*) FILTER (status IN {_SCORED}), "
        f"count(*) FILTER (status NOT IN {_SCORED}) FROM scores GROUP BY 1 ORDER BY 1").fetchall()]
