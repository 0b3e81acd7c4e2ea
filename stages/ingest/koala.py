"""Koala-36M: ten ~4.9 GB CSVs of YouTube clip windows, mapped to the user's local video files.

Scale drives the design (about 36 million rows):

* one unit per CSV, read in blocks of ``read_block_mb`` that end on record boundaries
  (stages.ingest.csv_blocks), so memory stays bounded by the block size, not the file size;
* every block goes through a single DuckDB query (in-process, zero-copy over the Arrow table,
  results streamed out in slices): timestamp parsing, the sample id (``sha1`` of the same JSON key
  ``make_sample_id`` hashes), the local file path, validation and the raw record as JSON are all
  vectorised; no Python object is created per row (scores become a map column in numpy).

A clip's natural key is (videoID, start, end) with the times as published (``HH:MM:SS.fff``).

``videoID`` names one *clip* (``<youtube_id>_<n>``); the YouTube video it was cut from is the
``v=`` of ``url``, else ``videoID`` without its last ``_<n>``. ``KoalaConfig.download`` says which
of the two the user's files are named after: whole videos (``{youtube_id}.mp4``, the window is cut
at decode) or pre-cut clips (``{videoID}.mp4``, no window).
"""
from __future__ import annotations

import os
import re
import string
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from manifests.io import duckdb_connect
from manifests.schema import SAMPLES, SCHEMA_VERSION, make_sample_id
from stages.ingest.base import Adapter, SourceRange, metadata_files, unit_key
from stages.ingest.csv_blocks import CsvBlocks, record_ranges

REQUIRED_COLUMNS = ("videoID", "timestamp", "caption")
SCORE_COLUMNS = ("clarity_score", "aesthetic_score", "motion_score", "video_training_suitability_score")
PATTERN_FIELDS = ("videoID", "youtube_id", "start", "end", "start_s", "end_s")
# The 11-character YouTube id in the url forms people publish (watch?v=, youtu.be/, shorts/, embed/).
YOUTUBE_URL_RE = r"(?:[?&]v=|youtu\.be/|/shorts/|/embed/)([A-Za-z0-9_-]{11})"

# "['00:00:05.120', '00:00:12.400']"; tolerant of quote style, spacing and a missing fraction.
_TIME = r"((\d+):([0-5]\d):([0-5]\d(?:\.\d+)?))"
_Q = r"""['"]?"""
TIMESTAMP_RE = rf"^\s*\[\s*{_Q}{_TIME}{_Q}\s*,\s*{_Q}{_TIME}{_Q}\s*\]\s*$"

# DuckDB's JSON writer spells these control characters \u000B where Python's json writes \u000b;
# the (vanishingly rare) keys holding them get their id from make_sample_id in Python instead.
_JSON_CASE_CHARS = r"[\x0b\x0e\x0f\x1a-\x1f]"


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _sql_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def pattern_sql(pattern: str) -> str:
    """The SQL expression rendering ``video_pattern`` for a row (fields as in KoalaConfig).

    Raises ValueError for unknown fields, format specs, or a pattern that is not a clean relative
    path (so a bad config fails the unit loudly instead of producing wrong paths).
    """
    exprs = {
        "videoID": "vid",
        "youtube_id": "yt",
        "start": "m.t0",
        "end": "m.t1",
        "start_s": "printf('%.3f', start_s)",
        "end_s": "printf('%.3f', end_s)",
    }
    parts = []
    for literal, field, spec, conv in string.Formatter().parse(pattern):
        if literal:
            parts.append(_sql_str(literal))
        if field is None:
            continue
        if field not in exprs or spec or conv:
            raise ValueError(
                f"video_pattern {pattern!r}: use only the plain fields {{{'}, {'.join(PATTERN_FIELDS)}}}"
            )
        parts.append(exprs[field])
    sample = pattern.format(videoID="x", youtube_id="x", start="0:00:00.000", end="0:00:01.000", start_s="0.000", end_s="1.000")
    if os.path.isabs(sample) or os.path.normpath(sample) != sample or sample.startswith(".."):
        raise ValueError(f"video_pattern {pattern!r} must be a clean path relative to video_root")
    return " || ".join(parts) if parts else "''"


def _seconds_sql(i: int) -> str:
    """Seconds from the captured H, M, S(.fff) of time ``i`` (TRY_CAST: DuckDB may evaluate a
    CASE branch on rows the condition excludes)."""
    return " + ".join(f"TRY_CAST(m.{u}{i} AS DOUBLE) * {k}" for u, k in (("h", 3600), ("m", 60), ("s", 1)))


def block_sql(columns: list[str], cfg, subset: str) -> str:
    """One query turning a block of CSV rows (all text columns) into `samples` rows."""
    video_root = str(Path(cfg.video_root).expanduser().resolve())
    rel = pattern_sql(cfg.resolved_pattern)
    # Scores come out as plain DOUBLE columns; the map is assembled in Arrow (see scores_map),
    # which is several times faster than building MAP values in SQL.
    scores_sql = ", ".join(
        f"TRY_CAST({_sql_ident(c)} AS DOUBLE) AS {_sql_ident('score:' + c)}" for c in SCORE_COLUMNS if c in columns
    )
    # The original row, every column as published (text), keys sorted like stages.ingest.base.to_json.
    raw_sql = "json_object(" + ", ".join(f"{_sql_str(c)}, {_sql_ident(c)}" for c in sorted(set(columns))) + ")"
    score_cols = "".join(", " + _sql_ident("score:" + c) for c in SCORE_COLUMNS if c in columns)
    window = "NULL::DOUBLE" if cfg.files_are_cut else None
    url_sql = (f"regexp_extract(coalesce(\"url\", ''), {_sql_str(YOUTUBE_URL_RE)}, 1)"
               if "url" in columns else "''")
    return f"""
    WITH parsed AS (
        SELECT
            coalesce("videoID", '') AS vid,
            coalesce("timestamp", '') AS ts,
            "caption" AS cap,
            {url_sql} AS url_id,
            -- a partial regexp match stops at the first visible character: cheaper than trim()
            coalesce(regexp_matches("caption", '\\S'), false) AS has_cap,
            regexp_extract(coalesce("timestamp", ''), {_sql_str(TIMESTAMP_RE)},
                           ['t0', 'h0', 'm0', 's0', 't1', 'h1', 'm1', 's1']) AS m,
            {scores_sql + ',' if scores_sql else ''}
            {raw_sql} AS raw_record
        FROM batch
    ), timed AS (
        SELECT *,
            m.t0 <> '' AS ts_ok,
            CASE WHEN m.t0 <> '' THEN {_seconds_sql(0)} END AS start_s,
            CASE WHEN m.t0 <> '' THEN {_seconds_sql(1)} END AS end_s
        FROM parsed
    ), ided AS (
        SELECT *,
            coalesce(nullif(url_id, ''), nullif(regexp_extract(vid, '^(.+)_[0-9]+$', 1), ''), vid) AS yt
        FROM timed
    ), pathed AS (
        SELECT *, {rel} AS rel FROM ided
    ), checked AS (
        SELECT *,
            CASE
                WHEN NOT regexp_matches(vid, '\\S') THEN 'missing videoID'
                WHEN NOT ts_ok THEN 'unparsable timestamp: ' || left(ts, 80)
                WHEN end_s <= start_s THEN 'empty clip window: end <= start'
                WHEN NOT has_cap THEN 'missing caption'
                WHEN contains(vid, '/') OR contains(vid, '\\') THEN 'videoID contains a path separator'
                WHEN regexp_matches(rel, '(^|/)\\.\\.?(/|$)') THEN 'path escapes video_root: ' || rel
            END AS error,
            -- the natural key; rows whose timestamp cannot be parsed use the raw timestamp instead
            CASE WHEN ts_ok THEN to_json([vid, m.t0, m.t1]) ELSE to_json([vid, ts]) END AS key_json
        FROM pathed
    )
    SELECT
        'koala:' || left(sha1(key_json), 16) AS sample_id,
        'koala' AS dataset,
        {_sql_str(subset)} AS subset,
        NULL::VARCHAR AS split,
        'video' AS modality,
        't2v' AS task,
        NULL::VARCHAR AS source_uri,
        CASE WHEN error IS NULL THEN {_sql_str(video_root + '/')} || rel END AS target_uri,
        CASE WHEN has_cap THEN cap END AS instruction,
        NULL::VARCHAR[] AS alt_instructions,
        CASE WHEN has_cap THEN cap END AS caption,
        NULL::VARCHAR AS category_raw,
        'motion' AS category,
        CASE WHEN error IS NULL THEN {window or 'start_s'} END AS clip_start_s,
        CASE WHEN error IS NULL THEN {window or 'end_s'} END AS clip_end_s,
        NULL::INTEGER AS skip_frames,
        NULL::MAP(VARCHAR, DOUBLE) AS native_scores,
        json_object('youtube_id', yt) AS extra,
        {_sql_str(cfg.license)} AS license,
        raw_record,
        error,
        {SCHEMA_VERSION}::SMALLINT AS schema_version,
        regexp_matches(vid || ts, {_sql_str(_JSON_CASE_CHARS)}) AS id_in_python,
        vid, ts, m.t0 AS t0, m.t1 AS t1, ts_ok{score_cols}
    FROM checked
    """


def scores_map(t: pa.Table) -> pa.Array:
    """native_scores as a map per row, from the ``score:<name>`` columns; null scores are left out
    (as manifests.schema.empty_sample does), so a row without scores gets an empty map."""
    names = [c.split(":", 1)[1] for c in t.column_names if c.startswith("score:")]
    n = t.num_rows
    if not names:
        return pa.MapArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), pa.array([], pa.string()),
                                       pa.array([], pa.float64()))
    cols = [t["score:" + c].combine_chunks() for c in names]
    values = np.column_stack([c.fill_null(0.0).to_numpy() for c in cols])
    valid = np.column_stack([c.is_valid().to_numpy(zero_copy_only=False) for c in cols])
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(valid.sum(axis=1), out=offsets[1:])
    key_index = np.broadcast_to(np.arange(len(names)), valid.shape)[valid]
    keys = pa.array(names, pa.string()).take(pa.array(key_index))
    return pa.MapArray.from_arrays(pa.array(offsets), keys, pa.array(values[valid]))


def _natural_sort_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


class KoalaAdapter(Adapter):
    name = "koala"
    # CSV columns read (curate inspect lists the others); url gives the YouTube id
    fields_used = ("videoID", "url", "timestamp", "caption", *SCORE_COLUMNS)
    modality = "video"
    task = "t2v"

    def units(self) -> list[SourceRange]:
        files = sorted(metadata_files(self.root, self.cfg.csv_glob), key=_natural_sort_key)
        return [u for p in files for u in self._file_units(p)]

    def _file_units(self, path: Path) -> list[SourceRange]:
        """One unit for a file up to ``unit_mb`` (its key as it always was), else one per byte
        range (``<key>-r0000`` ...; params ``start``/``end``)."""
        key = unit_key(self.root, path)
        try:
            blocks = CsvBlocks.open(path, self.cfg.read_block_mb << 20)
            ranges = record_ranges(path, blocks.data_offset, self.cfg.unit_mb << 20, blocks.max_block_size)
        except OSError:  # unreadable or not a regular file: its one unit says why when read
            return [SourceRange(self.name, key, str(path))]
        if len(ranges) == 1:
            return [SourceRange(self.name, key, str(path))]
        return [SourceRange(self.name, f"{key}-r{i:04d}", str(path), {"start": a, "end": b})
                for i, (a, b) in enumerate(ranges)]

    def read(self, unit: SourceRange) -> Iterator[dict[str, Any] | pa.Table]:
        path = Path(unit.path)
        blocks = CsvBlocks.open(path, self.cfg.read_block_mb << 20)
        missing = [c for c in REQUIRED_COLUMNS if c not in blocks.columns]
        if missing:
            raise ValueError(f"CSV header lacks required columns {missing} (has {blocks.columns})")
        sql = block_sql(blocks.columns, self.cfg, subset=path.stem)

        # Rows with the wrong number of fields cannot be parsed into columns: they become error
        # rows, yielded after their block's table.
        seen: Counter[str] = Counter()
        con = duckdb_connect()
        # One thread per unit: the runner already runs the CSVs in parallel, one task per core.
        con.execute("SET threads = 1")
        try:
            for table, bad_rows in blocks.tables(start=unit.params.get("start"), end=unit.params.get("end")):
                con.register("batch", table)
                # streamed out in slices: the block's result is never materialised twice
                for out in con.sql(sql).to_arrow_reader(batch_size=16384):
                    yield self._finish(pa.Table.from_batches([out]))
                con.unregister("batch")
                # parsing threads report them in any order, and without row numbers
                for r in sorted(bad_rows, key=lambda r: (r.number or 0, r.text)):
                    seen[r.text] += 1
                    yield self._invalid_row(path, r, seen[r.text], len(blocks.columns), unit.params.get("start"))
        finally:
            con.close()

    def _finish(self, t: pa.Table) -> pa.Table:
        """Fix the rare ids DuckDB's JSON spelling cannot produce, then shape to SAMPLES."""
        fix = t["id_in_python"]
        if pc.any(fix).as_py():
            ids = t["sample_id"].to_pylist()
            cols = {k: t[k].to_pylist() for k in ("vid", "ts", "t0", "t1", "ts_ok")}
            for i in pc.indices_nonzero(fix.combine_chunks()).to_pylist():
                vid = cols["vid"][i]
                key = (vid, cols["t0"][i], cols["t1"][i]) if cols["ts_ok"][i] else (vid, cols["ts"][i])
                ids[i] = make_sample_id(self.name, *key)
            t = t.set_column(0, "sample_id", pa.array(ids, pa.string()))
        t = t.set_column(t.schema.get_field_index("native_scores"), "native_scores", scores_map(t))
        return t.select(SAMPLES.names).cast(SAMPLES)

    def _invalid_row(self, path: Path, r, occurrence: int, ncols: int, start: int | None) -> dict[str, Any]:
        # Keyed on the row's text (and which repeat of that text it is), so the id does not
        # depend on read_block_mb, which changes the block-relative row numbers. Repeats are
        # counted per unit, so in a file split into byte ranges the range's start is in the key
        # (those ids, of malformed rows only, depend on unit_mb).
        where = (path.name,) if start is None else (path.name, start)
        return self.error_row(
            ("csv-invalid-row", *where, r.text, occurrence),
            f"malformed CSV row: {r.actual_columns} fields, expected {ncols}",
            record={"csv_row": r.text, "file": path.name, "occurrence": occurrence},
            category="motion",
        )
