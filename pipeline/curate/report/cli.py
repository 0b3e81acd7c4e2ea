"""`curate report` (registered on the `curate` app by pipeline/curate/cli.py)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

DEFAULT_WORKDIR = Path("runs/demo")


def report(
    workdir: Path = typer.Option(DEFAULT_WORKDIR, help="run directory"),
    out_file: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file (default: WORKDIR/report.html)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c",
                                          help="price with this config's report section (default: the run's config.json)"),
    set_: List[str] = typer.Option([], "--set", help="override a field of that config, e.g. --set report.finish_in_hours=72"),
) -> None:
    """One self-contained HTML page of the run: funnel, scores, thresholds, judge health, stage costs,
    pretext mix, and what the whole corpus would cost at this run's rates."""
    from pipeline.config_base import ConfigError
    from pipeline.curate.config import load_config
    from pipeline.progress import console
    from pipeline.curate.report import write_report

    try:
        # config.json is YAML too, so --set alone overrides the run's own config
        cfg = load_config(config or workdir / "config.json", set_) if config is not None or set_ else None
        console.print(f"wrote {write_report(workdir, out_file, cfg)}")
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
