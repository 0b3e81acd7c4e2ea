"""Repeated sample ids: rows of ``samples`` whose id an earlier row already has.

A dataset may list a sample twice (a metadata file copied, two CSVs naming the same pair). Ingest
keeps every row (de-duplicating inside a unit would need memory proportional to it); this module
records which rows repeat an earlier id, in ``tables/duplicates/``, so the ``samples`` view drops
them, the probe skips them, ``curate status`` counts them and the ``repeats`` view shows them.

A row is named by its part's path *relative to* ``tables/samples/`` (``ditto/<unit>-00000.parquet``) and its row number in that part: never by the path DuckDB was given, so a relative, an
absolute or a symlinked spelling of the workdir, or a copied or moved workdir, all name the same
rows. "Earlier" is the order of (relative part name, row number).
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from manifests.io import list_parts, table_dir, write_part
from manifests.io import read_parquet_sql as _read
from manifests.tables import schema_of

TABLE = "duplicates"
SAMPLES_DIR = "tables/samples/"
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


def _samples_read(workdir: Path) -> str:
    return _read(workdir, "samples", ", filename=true, file_row_number=true")


def mark(workdir: Path) -> int:
    """Rewrite the repeats table from the samples parts; returns how many rows repeat an id.

    Columns: sample_id, dataset, part, file_row_number (of the repeating row)."""
    import duckdb

    out = table_dir(workdir, TABLE)
    shutil.rmtree(out, ignore_errors=True)
    if not list_parts(workdir, "samples"):
        return 0
    rel = part_name_sql()
    dups = duckdb.connect().sql(
        f"SELECT sample_id, dataset, part, file_row_number FROM (SELECT sample_id, dataset, {rel} AS part, "
        f"file_row_number, row_number() OVER (PARTITION BY sample_id ORDER BY {rel}, file_row_number) AS k "
        f"FROM {_samples_read(workdir)}) WHERE k > 1 ORDER BY part, file_row_number").to_arrow_table().cast(
        schema_of(TABLE))  # the registry's schema (manifests/tables.py): a drift fails here, not in a reader
    if dups.num_rows:
        write_part(out / "part-00000.parquet", dups)
    return dups.num_rows


def _part_column(workdir: Path) -> str:
    """The repeats table's part-name column (tables written before it was relative: ``filename``)."""
    names = pq.read_schema(list_parts(workdir, TABLE)[0]).names
    return "part" if "part" in names else part_name_sql("filename")


def rows_by_part(workdir: Path) -> dict[str, list[int]]:
    """{relative part name: row numbers that repeat an earlier id} (read once, on the driver)."""
    out: dict[str, list[int]] = {}
    for p in list_parts(workdir, TABLE):
        table = pq.read_table(p)
        names = (table["part"].to_pylist() if "part" in table.column_names
                 else [part_name(f) for f in table["filename"].to_pylist()])
        for name, row in zip(names, table["file_row_number"].to_pylist()):
            out.setdefault(name, []).append(row)
    return out


def create_views(con, workdir: Path) -> None:
    """``samples`` without the repeating rows, and ``repeats``: those rows, with ``part`` and
    ``part_row`` (empty when no id repeats, so a query over it always works)."""
    src = _samples_read(workdir)
    if not list_parts(workdir, TABLE):
        con.execute(f"CREATE VIEW samples AS SELECT * FROM {_read(workdir, 'samples')}")
        con.execute("CREATE VIEW repeats AS SELECT *, NULL::VARCHAR AS part, NULL::BIGINT AS part_row "
                    "FROM samples WHERE false")
        return
    dups = f"(SELECT {_part_column(workdir)} AS part, file_row_number FROM {_read(workdir, TABLE)})"
    match = f"d.part = {part_name_sql('s.filename')} AND d.file_row_number = s.file_row_number"
    con.execute(f"CREATE VIEW samples AS SELECT * EXCLUDE (filename, file_row_number) FROM {src} s "
                f"WHERE NOT EXISTS (SELECT 1 FROM {dups} d WHERE {match})")
    con.execute(f"CREATE VIEW repeats AS SELECT s.* EXCLUDE (filename, file_row_number), d.part, "
                f"d.file_row_number AS part_row FROM {src} s JOIN {dups} d ON {match}")


def count(workdir: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in list_parts(workdir, TABLE))
