"""What a judge run's rows came to (one unit's tally, and the sum over a run): the post-run
check that every row failed the same way, apart from the pre-run server check (preflight.py)."""
from __future__ import annotations

import json
from collections import Counter
import pyarrow as pa

from pipeline.config_base import ConfigError


class JudgeRunFailed(ConfigError):
    """Every request of the run failed at the server: almost always a setting (judge.urls,
    judge.model, the key) or a broken server, so the CLI reports it like a configuration error."""


def unit_outcome(scores: pa.Table) -> dict:
    """What one unit's newly scored rows say about the servers: rows that reached the judge
    (not ``input_error``), and how many of them ended ``engine_error``, by error."""
    rows = scores.select(["status", "error"]).to_pylist()
    sent = [r for r in rows if r["status"] != "input_error"]
    errors = Counter((r["error"] or "")[:300] for r in sent if r["status"] == "engine_error")
    # JSON text: the summary row travels through Ray Data, where a dict of varying keys is no column.
    return {"sent": len(sent), "engine_errors": json.dumps(dict(errors))}


class JudgeOutcome:
    """Adds up ``unit_outcome``s (in each unit's summary row) over a run."""

    def __init__(self):
        self.sent, self.errors = 0, Counter()

    def add(self, summary: dict) -> None:
        self.sent += int(summary.get("sent", 0))
        self.errors.update(json.loads(summary.get("engine_errors") or "{}"))

    def check(self) -> None:
        failed = sum(self.errors.values())
        if self.sent and failed == self.sent:
            error, n = self.errors.most_common(1)[0]
            raise JudgeRunFailed(
                f"vlm-filter: all {failed} judged rows are engine_error; the commonest ({n} rows): {error!r}. "
                f"The rows are kept: fix judge.urls / judge.model / the server and re-run with "
                f"--set judge.rescore=failed")
