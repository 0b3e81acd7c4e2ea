"""`curate report`: one self-contained HTML page of a run (funnel, scores, judge health, stage
costs, pretext mix, cost model), rebuilt from the tables and ``state/_timings`` at any time.

Modules: ``timings`` (what the runner records per stage run), ``settings`` (the `report` config
section), ``queries`` (DuckDB over the catalog), ``plots`` (matplotlib, Agg, PNG), ``sheets``
(frames of samples near the thresholds), ``cost`` (the scaling model), ``build`` (assembly).
"""
from __future__ import annotations

from pathlib import Path


def write_report(workdir: str | Path, out: str | Path | None = None, cfg=None) -> Path:
    from pipeline.curate.report.build import build_report

    return build_report(Path(workdir), Path(out) if out else None, cfg)


def write_report_quietly(workdir: str | Path, cfg=None) -> Path | None:
    """The end of `curate run`: write the report, but a report problem never fails the run."""
    from pipeline.progress import console

    try:
        path = write_report(workdir, None, cfg)
    except Exception as e:  # the run's tables are written; say why there is no page and go on
        console.print(f"report: not written ({type(e).__name__}: {e}); `curate report --workdir {workdir}` retries")
        return None
    console.print(f"report: {path}")
    return path
