"""The DuckDB catalog over a run's manifests: one view per stage table plus a joined view.

Views read the Parquet parts in place (nothing is copied), so a catalog over a 36M-row manifest
opens instantly and queries stream. The catalog is read-only: only SELECT-like statements run.
"""
from __future__ import annotations

import os
from pathlib import Path

import duckdb

from manifests import repeats
from manifests.io import list_parts
from manifests.io import read_parquet_sql as _read
from manifests.tables import TABLES, VIEW_TABLES

READ_ONLY_TYPES = {"SELECT", "EXPLAIN"}


class ReadOnlyError(ValueError):
    pass


class QueryError(ValueError):
    """DuckDB refused a user's query (a typo, an unknown column): its message, not a traceback."""


def connect(workdir: str | os.PathLike, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a view per existing stage table."""
    workdir = Path(workdir)
    con = duckdb.connect(":memory:")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    present = [t for t in VIEW_TABLES if list_parts(workdir, t)]
    for table in present:
        if table == "samples":
            # A sample listed twice by the dataset keeps its first occurrence; `repeats` shows the rest.
            repeats.create_views(con, workdir)
        else:
            excluded = TABLES[table].view_exclude
            exclude = f" EXCLUDE ({excluded})" if excluded else ""
            con.execute(f"CREATE VIEW {table} AS SELECT *{exclude} FROM {_read(workdir, table)}")
    if "samples" in present:
        cols, joins = ["s.*"], []
        for table in present[1:]:
            if TABLES[table].joined:
                a, columns = TABLES[table].joined
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


def query(workdir: str | os.PathLike, sql: str):
    """Run a read-only query over the run's views; returns a pyarrow Table."""
    con = connect(workdir)
    check_read_only(con, sql)
    try:
        return con.sql(sql).to_arrow_table()
    except duckdb.Error as e:
        raise QueryError(f"query failed: {e}") from None
