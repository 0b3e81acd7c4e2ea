"""Per-dataset judge counts over the catalog: the judge stage's summary and `curate status`."""
from __future__ import annotations

from stages.judge.schema import SCORED_STATUSES


_SCORED = "(" + ", ".join(f"'{x}'" for x in SCORED_STATUSES) + ")"


def judge_counts(con) -> list[list]:
    """Per dataset: [dataset, judged, scored (ok/repaired), failed]."""
    return [list(r) for r in con.execute(
        f"SELECT dataset, count(*), count(*) FILTER (status IN {_SCORED}), "
        f"count(*) FILTER (status NOT IN {_SCORED}) FROM scores GROUP BY 1 ORDER BY 1").fetchall()]


def judge_status(sc) -> list[list]:
    """The judge's `curate status` row: pending are the probed samples neither scored, failed nor
    skipped by the screen (figures of the earlier rows)."""
    if "samples" not in sc.present:
        return []
    judged = judge_counts(sc.con) if "scores" in sc.present else []
    done, failed = (sum(r[i] for r in judged) for i in (2, 3))
    pending = max(0, sc.figures.get("probed_ok", 0) - done - failed - sc.figures.get("judge_skipped", 0))
    return [["vlm-filter", done, failed, pending, "failed = judge status not ok"]]
