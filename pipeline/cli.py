"""`curate`: run stages, query manifests with DuckDB, show status, build the demo."""
from __future__ import annotations

import io
import json
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from pipeline.config import ConfigError, load_config
from pipeline.progress import console, out, render_table

app = typer.Typer(
    help="SAMA data curation: ingest, probe, judge, filter, encode and shard video/image editing data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

DEFAULT_DEMO_WORKDIR = Path("runs/demo")


def _fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)  # plain text: no wrapping inside paths
    raise typer.Exit(code)


def _workdir_of(workdir: Optional[Path], config: Optional[Path]) -> Path:
    if workdir is not None:
        return workdir
    if config is not None:
        return load_config(config).run.workdir
    return DEFAULT_DEMO_WORKDIR


@app.command()
def run(
    config: Path = typer.Option(..., "--config", "-c", help="run config (YAML), e.g. configs/demo.yaml"),
    stage: str = typer.Option("all", help="stage to run: ingest, probe, or all (in order)"),
    workdir: Optional[Path] = typer.Option(None, help="run directory (default: run.workdir of the config)"),
    ray_address: Optional[str] = typer.Option(None, help="join this Ray cluster (default: RAY_ADDRESS or a local one)"),
    limit: Optional[int] = typer.Option(None, min=1, help="ingest: at most N records per input file; later stages: about N samples"),
    overwrite: bool = typer.Option(False, help="discard the stage's earlier output instead of resuming"),
    set_: List[str] = typer.Option([], "--set", help="override a config field, e.g. --set probe.rows_per_task=64"),
) -> None:
    """Run one stage or all of them; a re-run resumes where the last one stopped."""
    from pipeline import runner

    try:
        cfg = load_config(config, set_)
        runner.run(cfg, stage, workdir, limit, ray_address, overwrite)
    except ConfigError as e:
        _fail(str(e))


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


@app.command()
def query(
    sql: str = typer.Argument(..., help="a SELECT over the views: samples, probes, samples_full, ..."),
    workdir: Path = typer.Option(DEFAULT_DEMO_WORKDIR, help="run directory"),
    format: Format = typer.Option(Format.table, "--format", "-f"),
    out_file: Optional[Path] = typer.Option(None, "--out", "-o", help="write here instead of stdout (required for parquet)"),
    max_rows: int = typer.Option(50, help="rows shown by --format table"),
) -> None:
    """Query the run's manifests with DuckDB (read-only)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from manifests import catalog

    if not (workdir / "tables").exists():
        _fail(f"{workdir} holds no run (no tables/); pass --workdir, e.g. runs/demo")
    try:
        result = catalog.query(workdir, sql)
    except catalog.ReadOnlyError as e:
        _fail(str(e))
    except Exception as e:  # duckdb errors: show the message, not a traceback
        _fail(f"query failed: {e}")
    if format is Format.parquet:
        if out_file is None:
            _fail("--format parquet needs --out FILE")
        pq.write_table(result, out_file)
        console.print(f"wrote {result.num_rows} rows to {out_file}")
        return
    if format is Format.table:
        rows = result.slice(0, max_rows).to_pylist()
        table = render_table(f"{result.num_rows} rows", result.column_names, [list(r.values()) for r in rows])
        if out_file:
            out_file.write_text(str(rows))
        out.print(table)
        return
    buf = io.BytesIO()
    if format is Format.csv:
        pacsv.write_csv(result, buf)
        data = buf.getvalue().decode()
    else:
        data = "".join(json.dumps(r, default=str, ensure_ascii=False) + "\n" for r in result.to_pylist())
    if out_file:
        out_file.write_text(data)
    else:
        sys.stdout.write(data)


@app.command()
def status(workdir: Path = typer.Option(DEFAULT_DEMO_WORKDIR, help="run directory")) -> None:
    """Per-stage counts: done, failed, pending."""
    from pipeline.status import stage_status

    if not workdir.exists():
        _fail(f"{workdir} does not exist; pass --workdir of a run")
    out.print(render_table(f"status of {workdir}", ["stage", "done", "failed", "pending", "note"],
                           stage_status(workdir)))


@app.command()
def demo(
    workdir: Path = typer.Option(DEFAULT_DEMO_WORKDIR, help="where the demo corpus and run go"),
    config: Path = typer.Option(Path("configs/demo.yaml"), help="demo config"),
) -> None:
    """Build the embedded demo corpus (no downloads), run every stage on it, and query it."""
    from manifests import catalog
    from pipeline import runner
    from pipeline.demo import build_corpus

    corpus = workdir / "corpus"
    console.print(f"demo: writing the demo corpus (published layouts) to {corpus}")
    build_corpus(corpus)
    try:
        cfg = load_config(config, [f"run.workdir={workdir}"])
        runner.run(cfg, "all", workdir)
    except ConfigError as e:
        _fail(str(e))
    from pipeline.status import stage_status

    out.print(render_table(f"status of {workdir}", ["stage", "done", "failed", "pending", "note"],
                           stage_status(workdir)))
    sql = "SELECT dataset, modality, category, count(*) AS n FROM samples WHERE error IS NULL GROUP BY ALL ORDER BY 1, 3"
    res = catalog.query(workdir, sql)
    out.print(render_table(f"curate query --workdir {workdir} \"{sql}\"", res.column_names,
                           [list(r.values()) for r in res.to_pylist()]))
    sql = ("SELECT dataset, coalesce(probe_error_kind, 'ingest') AS stage_or_kind, "
           "left(coalesce(error, probe_error), 70) AS reason FROM samples_full "
           "WHERE error IS NOT NULL OR probe_error IS NOT NULL ORDER BY 1, 3")
    res = catalog.query(workdir, sql)
    out.print(render_table(f"{res.num_rows} samples kept as error rows (nothing is dropped)", res.column_names,
                           [list(r.values()) for r in res.to_pylist()]))
    out.print(f"demo run is in {workdir}; try: curate query --workdir {workdir} "
              "\"SELECT dataset, count(*) FROM samples GROUP BY 1\" --format csv")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
