"""The DuckDB catalog over a run's manifests: one view per stage table plus a joined view.

Views read the Parquet parts in place (nothing is copied), so a catalog over a 36M-row manifest
opens instantly and queries stream. The catalog is read-only: only SELECT-like statements run.

A connect costs the same at 10 parts as at 50,000: a table exists when one part is found (the walk
stops there), and its view reads the parts by glob with the schema DuckDB takes from the first
part, which must hold every column its declaration has (manifests/tables.py) - the writers cast
to that schema, so every part of a run has it. Only a workdir written by older code, whose first
part of the table or of a dataset's folder lacks a declared column, falls back to unifying columns
by name over every file (which reads every footer at connect).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import duckdb
import pyarrow.parquet as pq

from manifests import repeats
from manifests.io import duckdb_connect, parquet_source, table_dir
from manifests.io import read_parquet_sql as _read  # noqa: F401  (the raw parts, for stages that need file names)
from manifests import tables as registry
from manifests.tables import Table

READ_ONLY_TYPES = {"SELECT", "EXPLAIN"}


class ReadOnlyError(ValueError):
    pass


class QueryError(ValueError):
    """DuckDB refused a user's query (a typo, an unknown column): its message, not a traceback."""


def _first_part(folder: Path) -> Path | None:
    """The first finished part under ``folder`` in DuckDB's glob order, found without listing
    every part (parts live at most one folder deep)."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return None
    for e in entries:
        if e.name.startswith("."):
            continue
        if e.is_file() and e.name.endswith(".parquet"):
            return Path(e.path)
        if e.is_dir():
            found = _first_part(Path(e.path))
            if found is not None:
                return found
    return None


def _firsts(workdir: Path, table: Table) -> list[Path]:
    """The table's first part and the first part of each dataset folder (a few files)."""
    root = table_dir(workdir, table.name)
    first = _first_part(root)
    if first is None:
        return []
    out = [first]
    if table.partition:
        for e in os.scandir(root):
            if e.is_dir() and not e.name.startswith("."):
                p = _first_part(Path(e.path))
                if p is not None and p != first:
                    out.append(p)
    return out


def scan_sql(workdir: Path, table: Table, firsts: list[Path], extra: str = "") -> str:
    """read_parquet SQL over every part of ``table`` with its declared schema (see the module
    docstring; ``extra``: more read_parquet options)."""
    names = [set(pq.read_schema(p).names) for p in firsts]
    declared = set(table.schema.names)
    whole = all(declared <= n for n in names)
    union = "" if whole else ", union_by_name=true"
    return f"read_parquet({parquet_source(workdir, table.name)}, hive_partitioning=false{union}{extra})"


class NoTablesError(RuntimeError):
    """connect() was given no table declarations and none are registered."""


def declared_tables(tables: Iterable[Table] | dict[str, Table] | None = None) -> dict[str, Table]:
    """{name: declaration} in pipeline order: ``tables`` as given, else the registered ones."""
    if tables is None:
        if not registry.TABLES:
            raise NoTablesError(
                "no tables are registered, so the catalog knows no table to show: import "
                "pipeline.curate.registry, which registers every stage's tables, or pass tables= "
                "(the stages' Table declarations) to catalog.connect")
        return dict(registry.TABLES)
    if isinstance(tables, dict):
        return dict(tables)
    return {t.name: t for t in tables}


def present_tables(workdir: str | os.PathLike, tables: dict[str, Table]) -> dict[str, list[Path]]:
    """{table: its first parts} of the view tables that have a part, in pipeline order."""
    workdir = Path(workdir)
    found = {t: _firsts(workdir, tables[t]) for t in registry.view_tables(tables)}
    return {t: f for t, f in found.items() if f}


# The driver-side commands (filter, report, status) join whole tables: a memory limit makes DuckDB
# spill those joins to disk under the workdir instead of growing the driver's RSS with the table.
MEMORY_LIMIT_ENV = "SAMA_DUCKDB_MEMORY_LIMIT"
DEFAULT_MEMORY_LIMIT = "1GB"


def bound_memory(con: duckdb.DuckDBPyConnection, workdir: str | os.PathLike) -> None:
    """Cap DuckDB's memory (env SAMA_DUCKDB_MEMORY_LIMIT, default 1GB) and spill under state/duckdb_tmp."""
    limit = os.environ.get(MEMORY_LIMIT_ENV, DEFAULT_MEMORY_LIMIT)
    try:
        con.execute(f"SET memory_limit = '{limit}'")
    except duckdb.Error as e:
        raise ValueError(f"{MEMORY_LIMIT_ENV}={limit!r} is not a DuckDB size; set it like '1GB' or '512MB'") from e
    spill = Path(workdir) / "state" / "duckdb_tmp"
    con.execute(f"SET temp_directory = '{spill.as_posix()}'")


def connect(workdir: str | os.PathLike, threads: int | None = None,
            tables: Iterable[Table] | dict[str, Table] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a view per existing stage table.

    ``tables``: the table declarations, in pipeline order; None: the registered ones (the driver
    imports the registry; a Ray task is handed them by the driver, since a worker imports only the
    modules of the function it runs)."""
    workdir = Path(workdir)
    tables = declared_tables(tables)
    con = duckdb_connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    bound_memory(con, workdir)
    present = present_tables(workdir, tables)
    for table, firsts in present.items():
        if table == "samples":
            # A sample listed twice by the dataset keeps its first occurrence; `repeats` shows the rest.
            repeats.create_views(con, workdir,
                                 lambda extra, f=firsts: scan_sql(workdir, tables["samples"], f, extra))
        else:
            excluded = tables[table].view_exclude
            exclude = f" EXCLUDE ({excluded})" if excluded else ""
            con.execute(f"CREATE VIEW {table} AS SELECT *{exclude} FROM {scan_sql(workdir, tables[table], firsts)}")
    if "samples" in present:
        cols, joins = ["s.*"], []
        for table in list(present)[1:]:
            if tables[table].joined:
                a, columns = tables[table].joined
                cols.append(columns)
                joins.append(f"LEFT JOIN {table} {a} USING (sample_id)")
        con.execute(f"CREATE VIEW samples_full AS SELECT {', '.join(cols)} FROM samples s {' '.join(joins)}")
    return con


def views(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse anything but SELECT/EXPLAIN (CREATE, COPY, INSERT, ATTACH, SET, PRAGMA ...)."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise ReadOnlyError(f"could not parse the query: {e}") from None
    if not statements:
        raise ReadOnlyError("empty query")
    for st in statements:
        kind = st.type.name
        if kind not in READ_ONLY_TYPES:
            raise ReadOnlyError(
                f"`curate query` is read-only: a {kind} statement is refused. Use SELECT; to save a "
                f"result, use --format csv|json|parquet --out FILE."
            )


def query_relation(con: duckdb.DuckDBPyConnection, sql: str):
    """A read-only query as a lazy DuckDB relation (nothing is computed until it is read)."""
    check_read_only(con, sql)
    try:
        return con.sql(sql)
    except duckdb.Error as e:
        raise QueryError(f"query failed: {e}") from None


def query(workdir: str | os.PathLike, sql: str, tables: Iterable[Table] | dict[str, Table] | None = None):
    """Run a read-only query over the run's views; returns a pyarrow Table."""
    con = connect(workdir, tables=tables)
    rel = query_relation(con, sql)
    try:
        return rel.to_arrow_table()
    except duckdb.Error as e:
        raise QueryError(f"query failed: {e}") from None
