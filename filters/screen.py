"""Filter rules over the screen stage's verdicts (stages/screen): a sample the screen drops is
rejected by the rule named after why (``screen.contaminated``, ``screen.duplicate``,
``screen.copy``, ``screen.static``), after the probe's and before the judge's rules.

The screen decides with its own thresholds (the ``screen:`` section: copy_max_diff,
min_content_motion, drop_duplicates, drop_contaminated) when it writes ``screen_verdicts``; the
filter only reads ``screen_drop``. The rules apply only when that column is present, so a run
without the screen selects exactly as before.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

SCREEN_RULES = ("screen.contaminated", "screen.duplicate", "screen.copy", "screen.static")
COLUMN = "screen_drop"


def screen_rules(rule_cls, columns: list[str] | None) -> list:
    """The screen's rules (``rule_cls``: filters.rules.Rule), when the input has screen verdicts."""
    if columns is None or COLUMN not in columns:
        return []
    return [rule_cls(name, "screen") for name in SCREEN_RULES]


def screen_fails(table: pa.Table, name: str) -> pa.ChunkedArray:
    return pc.fill_null(pc.equal(table.column(COLUMN), name), False)


def screen_fails_sql(name: str) -> str:
    return f"coalesce({COLUMN} = '{name}', false)"


def screen_join(views: list[str]) -> tuple[list[str], list[str]]:
    """(columns, joins) the joined filter input gains when the run has screen verdicts."""
    if "screen_verdicts" not in views:
        return [], []
    return [f"sv.{COLUMN}"], ["LEFT JOIN screen_verdicts sv USING (sample_id)"]
