"""Repeated sample ids: a dataset may list a sample twice; the samples view keeps the first."""
from __future__ import annotations

import shutil
from pathlib import Path

import duckdb

from manifests import catalog
from manifests.io import list_parts, table_dir, write_part


def mark_duplicates(workdir: Path) -> int:
    """Record repeated sample ids (all but the first occurrence) so the samples view drops them."""
    dup_dir = table_dir(workdir, catalog.DUPLICATES)
    shutil.rmtree(dup_dir, ignore_errors=True)
    if not list_parts(workdir, "samples"):
        return 0
    con = duckdb.connect()
    src = catalog._read(workdir, "samples", ", filename=true, file_row_number=true")
    dups = con.sql(
        f"SELECT sample_id, filename, file_row_number FROM (SELECT sample_id, filename, file_row_number, "
        f"row_number() OVER (PARTITION BY sample_id ORDER BY filename, file_row_number) AS k FROM {src}) "
        f"WHERE k > 1 ORDER BY filename, file_row_number"
    ).to_arrow_table()
    if dups.num_rows:
        write_part(dup_dir / "part-00000.parquet", dups)
    return dups.num_rows
