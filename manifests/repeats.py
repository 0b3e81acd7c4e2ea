"""Repeated sample ids: rows of ``samples`` whose id an earlier row already has.

A dataset may list a sample twice (a metadata file copied, two CSVs naming the same pair). Ingest
keeps every row (de-duplicating inside a unit would need memory proportional to it); this module
records which rows repeat an earlier id, in ``tables/duplicates/``, so the ``samples`` view drops
them, the probe skips them, ``curate status`` counts them and the ``repeats`` view shows them.

A row is named by its part's path *relative to* ``tables/samples/`` (``ditto/<unit>-00000.parquet``)
and its row number in that part: never by the path DuckDB was given, so a relative, an absolute or
a symlinked spelling of the workdir, or a copied or moved workdir, all name the same rows.

Marking is incremental: ``state/samples/_duplicates_scanned.json`` lists the samples parts
already scanned (beside ingest's other state, so `--overwrite` clears it with the tables), and each ingest run scans only the parts it added, writing one more small duplicates part
(never rewriting the table). "Earlier" is: a part scanned by an earlier ingest run, then the order
of (relative part name, row number) among the parts of one run. A fresh run scans every part at
once, so its rows are the same as a whole-table mark; a later run never turns a kept row into a
repeat (what an earlier run kept stays kept). It is not inside ``tables/duplicates/``: polars
refuses a folder holding other files than Parquet.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq

from manifests.io import atomic_write_json, duckdb_connect, list_parts, table_dir, write_part
from manifests.schema import DUPLICATES

TABLE = "duplicates"
SAMPLES_DIR = "tables/samples/"
SCANNED = "_duplicates_scanned.json"
# DuckDB's ``filename`` is the path as the glob spelled it; the part's name is what follows the
# last ``tables/samples/`` (greedy ``.*``: a workdir inside a folder of that name still works).
_REL_RE = r"(?:^|.*/)tables/samples/(.*)$"


def part_name_sql(column: str = "filename") -> str:
    """SQL for the relative part name of DuckDB's ``filename`` column."""
    return f"regexp_extract({column}, '{_REL_RE}', 1)"


def part_name(path: str | Path) -> str:
    """The relative part name of a samples part path (any spelling)."""
    m = re.match(_REL_RE, Path(path).as_posix())
    if m is None:
        raise ValueError(f"{path} is not under {SAMPLES_DIR}")
    return m.group(1)


def _sql_list(paths) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def _scanned(workdir: Path) -> tuple[list[str], int]:
    """(part names scanned so far, duplicates parts written so far). A table from before the
    scanned list (one whole-table part), or a list whose parts are gone, counts as nothing
    scanned: the table is marked afresh once."""
    path = _scanned_path(workdir)
    state = json.loads(path.read_text()) if path.exists() else None
    if state is None or len(list_parts(workdir, TABLE)) != state["batches"]:
        for p in list_parts(workdir, TABLE):
            p.unlink()
        return [], 0
    return state["parts"], state["batches"]


def scanned_names(workdir: Path) -> set[str]:
    """Part names an earlier mark scanned (read-only): the duplicates table names their rows by
    (part, row), so those parts must never be rewritten."""
    path = _scanned_path(workdir)
    return set(json.loads(path.read_text())["parts"]) if path.exists() else set()


def _scanned_path(workdir: Path) -> Path:
    return Path(workdir) / "state" / "samples" / SCANNED


def mark(workdir: Path) -> int:
    """Scan the samples parts no earlier run scanned for repeated ids; returns how many rows of the
    whole table repeat an id. Columns: sample_id, dataset, part, file_row_number (of the repeat)."""
    workdir = Path(workdir)
    out = table_dir(workdir, TABLE)
    parts = list_parts(workdir, "samples")  # the one listing of every part: ingest's finish only
    if not parts:
        return 0
    scanned, batches = _scanned(workdir)
    done = set(scanned)
    new = [p for p in parts if part_name(p) not in done]
    if new:
        datasets = {p.parent.name for p in new}
        old = [p for p in parts if part_name(p) in done and p.parent.name in datasets]
        rel = part_name_sql()
        fresh = (f"(SELECT sample_id, dataset, {rel} AS part, file_row_number FROM "
                 f"read_parquet({_sql_list(new)}, filename=true, file_row_number=true))")
        # Ids that repeat: twice among the new rows, or already present in an earlier run's parts.
        # A hash aggregate over one column, then a window over the (few) repeating rows only.
        repeated = f"SELECT sample_id FROM {fresh} GROUP BY 1 HAVING count(*) > 1"
        seen = "SELECT NULL::VARCHAR AS sample_id WHERE false"
        if old:
            seen = (f"SELECT DISTINCT sample_id FROM read_parquet({_sql_list(old)}) "
                    f"WHERE sample_id IN (SELECT sample_id FROM {fresh})")
        dups = duckdb_connect().sql(
            f"WITH seen AS ({seen}), hit AS ({repeated} UNION SELECT sample_id FROM seen) "
            f"SELECT sample_id, dataset, part, file_row_number FROM (SELECT f.*, row_number() OVER "
            f"(PARTITION BY f.sample_id ORDER BY f.part, f.file_row_number) AS k, "
            f"f.sample_id IN (SELECT sample_id FROM seen) AS earlier FROM {fresh} f "
            f"SEMI JOIN hit USING (sample_id)) WHERE k > 1 OR earlier ORDER BY part, file_row_number"
        ).to_arrow_table().cast(DUPLICATES)  # the declared schema: a drift fails here
        if dups.num_rows:
            write_part(out / f"part-{batches:05d}.parquet", dups)
            batches += 1
        # Written after the part: a run killed in between rescans the same parts into the same name.
        atomic_write_json(_scanned_path(workdir), {"parts": sorted(done | {part_name(p) for p in new}),
                                          "batches": batches})
    return count(workdir)


def moved(workdir: Path, entry: dict) -> None:
    """A re-cut batch (``manifests.recut``; ``entry`` with absolute paths) moves the rows of scanned
    parts into its outputs, concatenated in order: each repeat naming a moved row gets a copy
    naming the same row in its output, in the same duplicates part, and the outputs join the
    scanned list (they hold scanned rows only: the mark must not scan them again). The copies
    naming the sources stay until ``forget``: while a kill leaves both spellings, each names a row
    only where that file is read, so the view drops every repeat exactly once. Idempotent."""
    import bisect

    import pyarrow as pa
    import pyarrow.compute as pc

    workdir = Path(workdir)
    sources = [part_name(p) for p in entry["replaces"]]
    outs = [part_name(p) for p in entry["parts"]]
    start_of, n = {}, 0
    for name, rows in zip(sources, entry["replaced_rows"]):
        start_of[name], n = n, n + rows
    out_starts, n = [], 0
    for rows in entry["rows"]:
        out_starts.append(n)
        n += rows
    for p in list_parts(workdir, TABLE):
        t = pq.read_table(p)
        if "part" not in t.column_names:
            continue  # a table from before relative names is marked afresh (``_scanned``)
        hit = t.filter(pc.is_in(t["part"], value_set=pa.array(sources, pa.string())))
        if not hit.num_rows:
            continue
        copies = []
        for r in hit.to_pylist():  # the repeats of one batch's sources: a few rows
            g = start_of[r["part"]] + r["file_row_number"]
            j = bisect.bisect_right(out_starts, g) - 1
            copies.append({**r, "part": outs[j], "file_row_number": g - out_starts[j]})
        # Copies an earlier, killed roll-forward already wrote: only rows naming this batch's outputs.
        done = t.filter(pc.is_in(t["part"], value_set=pa.array(outs, pa.string())))
        have = set(zip(done["part"].to_pylist(), done["file_row_number"].to_pylist()))
        copies = [c for c in copies if (c["part"], c["file_row_number"]) not in have]
        if copies:
            new = pa.concat_tables([t.cast(DUPLICATES), pa.Table.from_pylist(copies, DUPLICATES)])
            write_part(p, new.sort_by([("part", "ascending"), ("file_row_number", "ascending")]))
    path = _scanned_path(workdir)
    if path.exists():
        state = json.loads(path.read_text())
        if not set(outs) <= set(state["parts"]):
            atomic_write_json(path, {**state, "parts": sorted(set(state["parts"]) | set(outs))})


def forget(workdir: Path, gone: set[str]) -> None:
    """Once a re-cut deleted its sources (absolute paths ``gone``): the repeats naming their rows
    and their names in the scanned list go (``moved`` copied them to the outputs). Idempotent."""
    import pyarrow as pa
    import pyarrow.compute as pc

    workdir = Path(workdir)
    names = sorted(part_name(p) for p in gone if not Path(p).exists())
    if not names:
        return
    value_set = pa.array(names, pa.string())
    for p in list_parts(workdir, TABLE):
        t = pq.read_table(p)
        if "part" in t.column_names and pc.any(pc.is_in(t["part"], value_set=value_set)).as_py():
            write_part(p, t.filter(pc.invert(pc.is_in(t["part"], value_set=value_set))).cast(DUPLICATES))
    path = _scanned_path(workdir)
    if path.exists():
        state = json.loads(path.read_text())
        if set(names) & set(state["parts"]):
            atomic_write_json(path, {**state, "parts": sorted(set(state["parts"]) - set(names))})


def _part_column(workdir: Path, first: Path) -> str:
    """The repeats table's part-name column (tables written before it was relative: ``filename``)."""
    names = pq.read_schema(first).names
    return "part" if "part" in names else part_name_sql("filename")


def rows_by_part(workdir: Path) -> dict[str, list[int]]:
    """{relative part name: row numbers that repeat an earlier id} (read once, on the driver; as
    large as the repeats, not the table)."""
    out: dict[str, list[int]] = {}
    for p in list_parts(workdir, TABLE):
        table = pq.read_table(p)
        names = (table["part"].to_pylist() if "part" in table.column_names
                 else [part_name(f) for f in table["filename"].to_pylist()])
        for name, row in zip(names, table["file_row_number"].to_pylist()):
            out.setdefault(name, []).append(row)
    return out


def _filename_prefix(con, workdir: Path) -> str:
    """What DuckDB's ``filename`` puts before a part's relative name: the glob's spelling of the
    samples folder as DuckDB normalises it (``a/../a`` is not kept), asked of DuckDB itself."""
    from manifests.io import parquet_glob

    first = con.execute(f"SELECT file FROM glob('{parquet_glob(workdir, 'samples')}') LIMIT 1").fetchone()[0]
    return first[: len(first) - len(part_name(first))]


def create_views(con, workdir: Path, samples_scan) -> None:
    """``samples`` without the repeating rows, and ``repeats``: those rows, with ``part`` and
    ``part_row`` (empty when no id repeats, so a query over it always works).

    ``samples_scan(extra)`` is the read_parquet SQL of the samples parts. The repeats are removed
    by a hash anti-join on (file, row) whose build side is the small repeats table, with each
    repeat's part name turned into the file name DuckDB reports for it (the glob's own prefix): no
    per-row string work on the samples side, and DuckDB still reads only the columns a query uses
    (a ``NOT EXISTS`` here became a join that loaded every column of every row)."""
    dup_parts = list_parts(workdir, TABLE)
    if not dup_parts:
        con.execute(f"CREATE VIEW samples AS SELECT * FROM {samples_scan('')}")
        con.execute("CREATE VIEW repeats AS SELECT *, NULL::VARCHAR AS part, NULL::BIGINT AS part_row "
                    "FROM samples WHERE false")
        return
    src = samples_scan(", filename=true, file_row_number=true")
    root = _filename_prefix(con, workdir).replace("'", "''")
    dups = (f"(SELECT part, '{root}' || part AS part_file, file_row_number AS part_row FROM "
            f"(SELECT {_part_column(workdir, dup_parts[0])} AS part, file_row_number "
            f"FROM read_parquet({_sql_list(dup_parts)}, union_by_name=true)))")
    match = "d.part_file = s.filename AND d.part_row = s.file_row_number"
    con.execute(f"CREATE VIEW samples AS SELECT s.* EXCLUDE (filename, file_row_number) FROM {src} s "
                f"ANTI JOIN {dups} d ON {match}")
    con.execute(f"CREATE VIEW repeats AS SELECT s.* EXCLUDE (filename, file_row_number), d.part, d.part_row "
                f"FROM {src} s JOIN {dups} d ON {match}")


def count(workdir: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in list_parts(workdir, TABLE))
