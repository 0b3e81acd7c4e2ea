"""Atomic, partitioned Parquet tables under ``<workdir>/tables/<table>/``.

Per-dataset tables keep their parts in ``<table>/<dataset>/``: a plain directory name, not a hive
``dataset=<ds>`` key, because every part also holds ``dataset`` as a column and pyarrow (so pandas)
refuses a column that is both (``string vs dictionary``). With plain names pandas, pyarrow,
polars, DuckDB and Ray Data all read a table directory with no options and get ``dataset`` as
the string column of the files.

A part is written to a temporary name in the same directory and renamed, so a reader (or a
resumed run) never sees half a file. Part names are derived from the unit of work, so a re-run
writes the same names and skips the ones that exist.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

# Fixed writer settings: the same rows give the same bytes on every run.
PARQUET_KW = dict(compression="zstd", use_dictionary=True, write_statistics=True)
# Rows per row group: the unit of the stages that read a slice of a part (run.rows_per_task is
# 1,000 by default), so such a unit reads the row groups of its own rows only (``read_slice``),
# not the whole part (100k rows).
ROW_GROUP_ROWS = 1000


def rechunk(tables: Iterator[pa.Table], rows_per_part: int) -> Iterator[pa.Table]:
    """Re-cut a stream of tables into parts of exactly ``rows_per_part`` rows (the last shorter).
    Holds at most one output plus one input table."""
    buf: list[pa.Table] = []
    n = 0
    for t in tables:
        while t.num_rows:
            take = min(rows_per_part - n, t.num_rows)
            buf.append(t.slice(0, take))
            n += take
            t = t.slice(take)
            if n == rows_per_part:
                yield pa.concat_tables(buf)
                buf, n = [], 0
    if n:
        yield pa.concat_tables(buf)


def duckdb_connect(database: str = ":memory:"):
    """A DuckDB connection without DuckDB's own progress bar, which it draws on stdout for a query
    past ~2 s: it would land in `curate query`'s results and in the middle of our tables and
    progress lines; the commands say what they do themselves. (A per-connection setting: DuckDB
    refuses it in connect's config.)"""
    import duckdb

    con = duckdb.connect(database)
    con.execute("SET enable_progress_bar = false")
    return con


def table_dir(workdir: str | os.PathLike, table: str) -> Path:
    return Path(workdir) / "tables" / table


def dataset_dir(workdir: str | os.PathLike, table: str, dataset: str) -> Path:
    """Where a per-dataset table keeps one dataset's parts (see the module docstring)."""
    if not dataset or "=" in dataset or "/" in dataset or dataset.startswith("."):
        raise ValueError(f"dataset name {dataset!r}: use letters, digits, '_' or '-' (no '=', '/' or leading '.')")
    return table_dir(workdir, table) / dataset


def dataset_of(part: Path) -> str:
    """The dataset a part of a per-dataset table belongs to (its directory)."""
    return Path(part).parent.name


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file written under a temporary name beside ``path`` and renamed to it only once
    complete and synced, so a reader (or a resumed run) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_part(path: Path, table: pa.Table, row_group_size: int = ROW_GROUP_ROWS) -> None:
    """Write one Parquet part atomically (temp name in the same directory, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp, row_group_size=row_group_size, **PARQUET_KW)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_slice(path: str | os.PathLike, offset: int, length: int, columns: list[str] | None = None) -> pa.Table:
    """Rows ``offset`` .. ``offset + length`` of a part, reading only the row groups that hold them
    (and only ``columns``)."""
    pf = pq.ParquetFile(path)
    meta, groups, start = pf.metadata, [], 0
    first = None
    for g in range(meta.num_row_groups):
        n = meta.row_group(g).num_rows
        if start < offset + length and start + n > offset:
            groups.append(g)
            first = start if first is None else first
        start += n
    if not groups:
        return pf.schema_arrow.empty_table().select(columns) if columns else pf.schema_arrow.empty_table()
    return pf.read_row_groups(groups, columns=columns).slice(offset - first, length)


def list_parts(workdir: str | os.PathLike, table: str) -> list[Path]:
    """Finished parts of a table (temporary files are hidden by their leading dot)."""
    root = table_dir(workdir, table)
    if not root.exists():
        return []
    hidden = superseded(workdir, table)
    return sorted(p for p in root.rglob("*.parquet") if not p.name.startswith(".") and str(p) not in hidden)


LEDGER_DIR = "_compacted"  # state/<table>/_compacted/*.json: merged parts and the unit parts they replace
RECUT_DIR = "_recut"  # state/<table>/_recut/*.json: re-cut batches (manifests.recut), outputs and what they replace


def superseded(workdir: str | os.PathLike, table: str) -> set[str]:
    """Parts a killed merge or re-cut left on disk beside the parts that hold their rows: readers
    skip them so no row counts twice. A merged part hides the unit parts it replaces once it is in
    place. A re-cut batch hides what it replaces once all its outputs are in place; while only
    some are (a kill between two renames), those outputs are hidden instead and the replaced
    parts still read. Read-only (the next run of the stage finishes the job); one small JSON per
    merged part or batch."""
    base = Path(workdir)
    out: set[str] = set()
    root = base / "state" / table / LEDGER_DIR
    if root.exists():
        for entry in root.glob("*.json"):
            e = json.loads(entry.read_text())
            if (base / e["part"]).exists():
                out.update(str(base / o) for o in e["replaces"] if o != e["part"])
    root = base / "state" / table / RECUT_DIR
    if root.exists():
        for entry in root.glob("*.json"):
            e = json.loads(entry.read_text())
            present = [(base / p).exists() for p in e["parts"]]
            out.update(str(base / o) for o in (e["replaces"] if all(present) else
                                                [p for p, there in zip(e["parts"], present) if there]))
    return out


def read_table(workdir: str | os.PathLike, table: str, columns: list[str] | None = None) -> pa.Table | None:
    parts = list_parts(workdir, table)
    if not parts:
        return None
    return pa.concat_tables(
        [pq.read_table(p, columns=columns) for p in parts], promote_options="default"
    )


def clean_temporaries(workdir: str | os.PathLike, table: str) -> int:
    """Remove temp files a killed run left behind, in the table and in its state folder (done
    markers, ledgers and fingerprints are written atomically there too); returns how many."""
    n = 0
    for root in (table_dir(workdir, table), Path(workdir) / "state" / table):
        if root.exists():
            for p in root.rglob(".*.tmp"):
                p.unlink(missing_ok=True)
                n += 1
    return n


def parquet_glob(workdir: Path, table: str) -> str:
    """Every part of a table, for DuckDB's read_parquet."""
    return str(table_dir(workdir, table) / "**" / "*.parquet")


def parquet_source(workdir: Path, table: str) -> str:
    """read_parquet's first argument for a whole table: the glob, or the explicit list of parts
    while a killed merge left superseded unit parts beside their merged part (rare, so cheap)."""
    hidden = superseded(workdir, table)
    if hidden and any(Path(h).exists() for h in hidden):
        return "[" + ", ".join(f"'{p}'" for p in list_parts(workdir, table)) + "]"
    return f"'{parquet_glob(workdir, table)}'"


def read_parquet_sql(workdir: Path, table: str, extra: str = "") -> str:
    """SQL reading a whole table (columns unified by name; ``extra``: more read_parquet options)."""
    return (
        f"read_parquet({parquet_source(workdir, table)}, union_by_name=true, hive_partitioning=false{extra})"
    )


def null_counts(workdir: Path, table: str, column: str) -> tuple[int, int] | None:
    """(rows, rows whose top-level ``column`` is null) of a whole table, from its parts' footers:
    the row-group statistics the writers keep, so no data page is read. None where a part lacks
    the column or its null counts (the caller then scans the column)."""
    rows = nulls = 0
    for p in list_parts(workdir, table):
        md = pq.ParquetFile(p).metadata
        leaf = next((i for i in range(md.num_columns) if md.schema.column(i).path == column), None)
        if leaf is None:
            return None
        for g in range(md.num_row_groups):
            stats = md.row_group(g).column(leaf).statistics
            if stats is None or not stats.has_null_count:
                return None
            rows += md.row_group(g).num_rows
            nulls += stats.null_count
    return rows, nulls
