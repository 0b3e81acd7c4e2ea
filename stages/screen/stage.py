"""`curate run --stage screen`: between probe and vlm-filter, one unit per probe unit (the same
slice of samples); each writes a ``screens`` part (``core.screen_table``), then the driver
recomputes ``screen_verdicts`` over the whole corpus in DuckDB (``groups.build``): duplicate
groups, benchmark matches, and which samples the screen rules drop. The verdicts are cheap and
depend on thresholds the user tunes, so they are redone on every run and are not fingerprinted;
the per-unit fingerprints are (frame grid and hash layout), and a resume with another is refused.

``screen.enabled: false`` makes the stage remove its tables, so no later stage reads them and
the outputs are those of a run without it.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from manifests import compact
from manifests.io import duckdb_connect, list_parts, read_parquet_sql, table_dir, write_part
from manifests.tables import Table
from pipeline.stage import Context, Phase, Stage, StageFacts, StatusContext, Unit, state_dir
from stages.media.locate import dataset_roots
from stages.probe.stage import probe_units
from stages.screen.benchmarks import benchmark_table, check_benchmarks
from stages.screen.core import FINGERPRINT_LAYOUT, Settings, screen_table
from stages.screen.groups import VALID_BAND_BITS, build
from stages.screen.schema import SCREEN_VERDICTS, SCREENS

SAMPLE_COLUMNS = ["sample_id", "dataset", "modality", "task", "source_uri", "target_uri", "clip_start_s", "clip_end_s"]
TABLE_NAMES = ("screens", "screen_verdicts")
DUCKDB_MEMORY = "1GB"  # the grouping spills to disk beyond this (the driver stays small at corpus scale)


def screen_units(workdir: Path, rows_per_task: int) -> list[Unit]:
    """One unit per finished probe unit (the same slice and part name), like the judge's."""
    units = []
    merged = compact.locate(workdir, "probes")  # probe units merged into one part per samples part
    for u in probe_units(workdir, rows_per_task):
        probe_part = Path(u.out)
        source = compact.unit_source(u.out, merged)
        if source is not None:
            out = table_dir(workdir, "screens") / probe_part.parent.name / probe_part.name
            units.append(Unit(u.key, u.dataset, u.rows, str(out), {**u.params, "probe": source[0],
                                                                   "probe_offset": source[1], "probe_rows": source[2]}))
    return units


def _unit_fn(settings: Settings, roots: dict[str, list[str]]) -> Callable[[dict], dict]:
    def run(item: dict) -> dict:
        present = pq.read_schema(item["part"]).names
        samples = pq.read_table(item["part"], columns=[c for c in SAMPLE_COLUMNS if c in present])
        samples = samples.slice(item["offset"], item["length"])
        probes = compact.read_unit_rows(item["probe"], item["probe_offset"], item["probe_rows"], ["sample_id", "error"])
        samples = samples.filter(pc.is_in(samples["sample_id"], value_set=probes["sample_id"].combine_chunks()))
        failed = probes.filter(pc.is_valid(probes["error"]))
        errors = dict(zip(failed["sample_id"].to_pylist(), failed["error"].to_pylist()))
        out = screen_table(samples, errors, settings, roots.get(item["dataset"]))
        write_part(Path(item["out"]), out)
        return {"dataset": item["dataset"], "rows": out.num_rows,
                "failed": int(pc.sum(pc.is_valid(out["error_kind"])).as_py() or 0) if out.num_rows else 0}

    return run


def write_verdicts(con, workdir: Path) -> None:
    """One verdicts part per screens part (same relative name, so a judge unit finds its own),
    streamed from DuckDB in part order; the new folder replaces the old one whole."""
    final = table_dir(workdir, "screen_verdicts")
    fresh = final.with_name(".screen_verdicts-new")
    shutil.rmtree(fresh, ignore_errors=True)
    screens_root = str(table_dir(workdir, "screens"))
    reader = con.sql(f"""SELECT f.filename, v.* FROM verdict v JOIN screen_files f USING (sample_id)
                             ORDER BY f.filename, v.sample_id""").to_arrow_reader(65536)
    current, batches = None, []

    def flush():
        if current is not None:
            table = pa.Table.from_batches(batches).drop_columns(["filename"]).cast(SCREEN_VERDICTS)
            write_part(fresh / Path(current).relative_to(screens_root), table)

    for batch in reader:
        names = batch.column(0).to_pylist()
        start = 0
        for i in range(1, len(names) + 1):
            if i == len(names) or names[i] != names[start]:
                if names[start] != current:
                    flush()
                    current, batches = names[start], []
                batches.append(batch.slice(start, i - start))
                start = i
    flush()
    shutil.rmtree(final, ignore_errors=True)
    if fresh.exists():
        fresh.rename(final)


def finish(ctx: Context, units: list[Unit]) -> None:
    cfg = ctx.cfg.screen
    if not cfg.enabled:
        for t in TABLE_NAMES:
            shutil.rmtree(table_dir(ctx.workdir, t), ignore_errors=True)
            shutil.rmtree(compact.ledger_dir(ctx.workdir, t), ignore_errors=True)  # re-enabled: redo all
        return
    if not list_parts(ctx.workdir, "screens"):
        return
    spill = state_dir(ctx.workdir, "screens") / "duckdb-spill"
    spill.mkdir(parents=True, exist_ok=True)
    con = duckdb_connect()
    con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
    con.execute(f"SET temp_directory = '{spill}'")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"CREATE VIEW screens AS SELECT * FROM {read_parquet_sql(ctx.workdir, 'screens')}")
    con.execute(f"CREATE TEMP TABLE screen_files AS SELECT sample_id, filename FROM "
                f"{read_parquet_sql(ctx.workdir, 'screens', ', filename=true')}")
    bench = None
    if cfg.benchmarks:
        frames, unreadable = benchmark_table(cfg.benchmarks, Settings.of(cfg))
        for line in unreadable:
            print(f"screen: benchmark clip not read: {line}")
        con.register("benchmark_frames", frames)
        bench = "benchmark_frames"
    build(con, "screens", cfg, bench)
    con.execute(f"CREATE OR REPLACE TEMP TABLE verdict AS SELECT *, "
                f"{'screen_drop IS NOT NULL' if cfg.judge_skips_dropped else 'false'} AS judge_skip FROM verdict")
    write_verdicts(con, ctx.workdir)
    shutil.rmtree(spill, ignore_errors=True)


def check(ctx: Context) -> None:
    from pipeline.config_base import ConfigError

    cfg = ctx.cfg.screen
    if cfg.band_bits not in VALID_BAND_BITS:
        raise ConfigError(f"screen.band_bits: {cfg.band_bits} is not one of {VALID_BAND_BITS}; use 32 (the default)")
    if cfg.enabled:
        check_benchmarks(cfg.benchmarks)


def summary(ctx: Context) -> tuple[list[str], list[list]]:
    columns = ["dataset", "screened", "errors", "duplicates", "contaminated", "copies", "static"]
    if not list_parts(ctx.workdir, "screens"):
        return columns, []
    con = duckdb_connect()
    verdicts = (read_parquet_sql(ctx.workdir, "screen_verdicts") if list_parts(ctx.workdir, "screen_verdicts")
                else "(SELECT NULL::VARCHAR AS sample_id, NULL::VARCHAR AS screen_drop)")
    rows = con.execute(f"""SELECT s.dataset, count(*), count(*) FILTER (s.error_kind IS NOT NULL),
        count(*) FILTER (v.screen_drop = 'screen.duplicate'), count(*) FILTER (v.screen_drop = 'screen.contaminated'),
        count(*) FILTER (v.screen_drop = 'screen.copy'), count(*) FILTER (v.screen_drop = 'screen.static')
        FROM {read_parquet_sql(ctx.workdir, 'screens')} s LEFT JOIN {verdicts} v USING (sample_id)
        GROUP BY 1 ORDER BY 1""").fetchall()
    return columns, [list(r) for r in rows]


def _describe(ctx: Context, units: list[Unit], pending: list[Unit]) -> str:
    if not ctx.cfg.screen.enabled:
        return "screen: off (screen.enabled: false); its tables are removed, so no later stage reads them"
    return f"screen: {len(units)} units, {len(units) - len(pending)} already done"


def status(sc: StatusContext) -> list[list]:
    """The screen's `curate status` row, and how many samples the judge skips (its pending)."""
    if "samples" not in sc.present or "screen_verdicts" not in sc.present:
        return []
    screened, serr, skipped = sc.con.execute(
        "SELECT count(*), count(*) FILTER (error_kind IS NOT NULL), (SELECT count(*) FILTER (judge_skip) "
        "FROM screen_verdicts) FROM screens").fetchone()
    sc.figures["judge_skipped"] = skipped
    return [["screen", screened - serr, serr, 0, f"{skipped} dropped before the judge"]]


STAGE = Stage(
    name="screen", reads=("probes",), writes=TABLE_NAMES, section="screen", needs_media=True,
    # Fingerprints and scores per sample, and the corpus-wide verdicts (duplicate groups, benchmark
    # matches, the screen rule that drops a sample).
    tables=(Table("screens", "screen", SCREENS, joined=(
                "scr", "scr.copy_score, scr.motion_score, scr.content_motion, scr.camera_share, "
                       "scr.error_kind AS screen_error_kind")),
            Table("screen_verdicts", "screen", SCREEN_VERDICTS, joined=(
                "sv", "sv.duplicate_of, sv.duplicate_group, sv.benchmark, sv.benchmark_clip, sv.screen_drop, "
                      "sv.judge_skip"))),
    # the fingerprint layout too: parts hashed without weak bits or windows cannot be grouped with new ones
    fingerprint=lambda ctx: ({"all": {"screen": {"frame_step_s": ctx.cfg.screen.frame_step_s,
                                                 "max_frames": ctx.cfg.screen.max_frames,
                                                 "hashes": FINGERPRINT_LAYOUT}}}
                             if ctx.cfg.screen.enabled else {}),
    plan=lambda ctx: screen_units(ctx.workdir, ctx.cfg.run.rows_per_task) if ctx.cfg.screen.enabled else [],
    phases=lambda ctx: [Phase("screen", _unit_fn(Settings.of(ctx.cfg.screen), dataset_roots(ctx.cfg)))],
    summary=summary, check=check, finish=finish, describe=_describe,
    # screens only: verdicts are rewritten whole by finish, one part per (merged) screens part
    compact=lambda ctx, units: {"screens": compact.by_input_part(units)},
    facts=StageFacts(status=status),
)
