"""Ingest core: run one adapter unit and write its rows as bounded, atomically written parts.

Plain Python over Arrow, no Ray: ``stages.ingest.stage`` maps this over units with Ray Data.
"""
from __future__ import annotations

import os
import re
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

import pyarrow.parquet as pq

from manifests import recut, repeats
from manifests.io import LEDGER_DIR, atomic_write_json, dataset_dir, list_parts, rechunk, write_part
from manifests.schema import SAMPLES, make_sample_id
from stages.ingest.base import Adapter, SourceRange, to_json
from stages.ingest.record_guard import check_regular, unconvertible_row

TABLE = "samples"


@dataclass
class UnitResult:
    dataset: str
    unit: str
    rows: int
    errors: int
    parts: int
    skipped: bool  # already done by an earlier run

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def part_path(workdir: Path, unit: SourceRange, chunk: int) -> Path:
    return dataset_dir(workdir, TABLE, unit.dataset) / f"{unit.key}-{chunk:05d}.parquet"


def done_marker(workdir: Path, unit: SourceRange) -> Path:
    return Path(workdir) / "state" / TABLE / unit.dataset / f"{unit.key}.json"


def _rows_to_tables(items: Iterable[dict | pa.Table], batch_rows: int) -> Iterator[pa.Table]:
    """Normalise an adapter's mixed output (dict rows and/or Arrow tables) into Arrow tables."""
    pending: list[dict] = []
    for item in items:
        if isinstance(item, pa.Table):
            if pending:
                yield _rows_table(pending)
                pending = []
            yield item.select(SAMPLES.names).cast(SAMPLES)
        else:
            pending.append(item)
            if len(pending) >= batch_rows:
                yield _rows_table(pending)
                pending = []
    if pending:
        yield _rows_table(pending)


def _rows_table(rows: list[dict]) -> pa.Table:
    """Rows as one table; if one row cannot be converted (text that is not valid Unicode, a value
    of the wrong type), the batch is converted row by row and that row alone becomes an error row."""
    try:
        return pa.Table.from_pylist(rows, schema=SAMPLES)
    except Exception:  # noqa: BLE001 - found row by row below
        return pa.Table.from_pylist([_convertible(r) for r in rows], schema=SAMPLES)


def _convertible(row: dict) -> dict:
    try:
        pa.Table.from_pylist([row], schema=SAMPLES)
        return row
    except Exception as e:  # noqa: BLE001 - any value Arrow refuses becomes this row's error
        return unconvertible_row(row, e)


def _guarded(adapter: Adapter, unit: SourceRange) -> Iterator[dict | pa.Table]:
    """The adapter's rows; if the unit itself breaks (unreadable file), one error row says so."""
    try:
        check_regular(unit.path)  # a FIFO would block the read below for ever
        yield from adapter.read(unit)
    except Exception as e:  # noqa: BLE001 - any failure becomes an error row, the run goes on
        yield adapter.error_row(
            ("unit-error", unit.key),
            f"unreadable {Path(unit.path).name}: {type(e).__name__}: {e}",
            record={"unit": unit.path, "traceback": traceback.format_exc(limit=3)},
        )


def ingest_unit(
    adapter: Adapter,
    unit: SourceRange,
    workdir: str | Path,
    rows_per_part: int = 100_000,
    limit: int | None = None,
) -> UnitResult:
    """Write one unit's rows into ``samples`` parts; skip the unit if an earlier run finished it.

    A unit killed half-way is redone from its start on the next run; parts it already wrote are
    not rewritten (they would get the same bytes), so a re-run costs reading, not writing.
    Rows are not de-duplicated here (that would need memory proportional to the unit): a sample
    listed twice keeps one row in the `samples` view, and `curate status` counts the repeats.
    """
    workdir = Path(workdir)
    marker = done_marker(workdir, unit)
    if marker.exists():
        import json

        info = json.loads(marker.read_text())
        return UnitResult(unit.dataset, unit.key, info["rows"], info["errors"], info["parts"], True)

    rows = _guarded(adapter, unit)
    if limit is not None:
        rows = _limit_rows(rows, limit)
    total = errors = parts = 0
    for chunk, table in enumerate(rechunk(_rows_to_tables(rows, 8192), rows_per_part)):
        total += table.num_rows
        errors += table.num_rows - pc.sum(pc.is_null(table["error"])).as_py() if table.num_rows else 0
        path = part_path(workdir, unit, chunk)
        if not path.exists():
            write_part(path, table)
        parts += 1
    atomic_write_json(marker, {"rows": total, "errors": errors, "parts": parts, "path": unit.path})
    return UnitResult(unit.dataset, unit.key, total, errors, parts, False)


def ingest_adapter(adapter: Adapter, workdir: str | Path, rows_per_part: int = 100_000,
                   limit: int | None = None) -> list[UnitResult]:
    """Every unit of one adapter, in order, in this process (no Ray): for tests and debugging."""
    return [ingest_unit(adapter, u, workdir, rows_per_part, limit) for u in adapter.units()]


# A later stage names its parts after the samples part it read: whole (``<stem>.parquet``) or a
# slice of it (``<stem>-r<first row, 9 digits>.parquet``), its merge ledger ``<dataset>--<stem>.json``.
_AFTER_PART = re.compile(r"^(?P<stem>.+?)(?:-r\d{9})?\.parquet$")


def _read_by_later_stages(workdir: Path) -> dict[str, set[str]]:
    """{dataset: stems of samples parts some later stage has written parts from}. Such a part is
    final: re-cutting it would leave that stage's rows under a name no plan makes again (the
    probe would probe its rows twice). Names only, from directory listings (no file is read);
    a false match only keeps a short part as it is."""
    out: dict[str, set[str]] = {}
    root = Path(workdir) / "tables"
    for tdir in (sorted(root.iterdir()) if root.exists() else []):
        if tdir.name in (TABLE, repeats.TABLE) or not tdir.is_dir():
            continue
        for ds in tdir.iterdir():
            if ds.is_dir():
                for f in os.scandir(ds):
                    m = _AFTER_PART.match(f.name)
                    if m:
                        out.setdefault(ds.name, set()).add(m["stem"])
    for ledger in (Path(workdir) / "state").glob(f"*/{LEDGER_DIR}/*--*.json"):
        ds, stem = ledger.stem.split("--", 1)
        out.setdefault(ds, set()).add(stem)
    return out


def recut_hooks(workdir: Path) -> recut.Hooks:
    """The repeats name rows by (part, row): they follow the rows a re-cut moves."""
    return recut.Hooks(moved=lambda entry: repeats.moved(workdir, entry),
                       gone=lambda paths: repeats.forget(workdir, paths))


def bound_parts(workdir: str | Path, rows_per_part: int = 100_000, stop_after: int | None = None) -> int:
    """Mark the repeats of the parts this run wrote, then re-cut each dataset's short parts into
    full ones (``manifests.recut``), so a dataset has ``ceil(rows / rows_per_part)`` parts however
    many units and ingest runs it was read in (each unit ends on a short part: Koala's byte
    ranges, one published file per unit elsewhere). Run once every unit is done; returns the parts
    written.

    Short parts of earlier runs are re-cut too (the last part of each earlier re-cut among them),
    unless a later stage has read them (``_read_by_later_stages``): those are final, so a workdir
    whose later stages ran between two ingest runs keeps one short part per dataset per such run.
    The mark runs first, on the parts as the units wrote them: the repeats of a re-cut batch are
    then carried to its outputs (``repeats.moved``), so the decisions do not depend on how rows
    were cut. Fewer rows than one part, new and short together, are left as written (at most a
    part per unit, less than one part's rows: a handful of small files, as in the demo and the
    tests). ``stop_after``: the first dataset's re-cut stops there, as a kill would (tests)."""
    workdir = Path(workdir)
    hooks = recut_hooks(workdir)
    recut.recover(workdir, TABLE, hooks)
    earlier = repeats.scanned_names(workdir)
    repeats.mark(workdir)
    parts = list_parts(workdir, TABLE)
    rows = {p: pq.ParquetFile(p).metadata.num_rows for p in parts}
    read = _read_by_later_stages(workdir)
    new = [p for p in parts if repeats.part_name(p) not in earlier]
    short: dict[str, list[Path]] = {}
    for p in parts:  # list_parts is sorted: each dataset's short parts in name (unit, chunk) order
        if rows[p] < rows_per_part and p.stem not in read.get(p.parent.name, ()):
            short.setdefault(p.parent.name, []).append(p)
    if sum(rows[p] for p in set(new) | {p for ps in short.values() for p in ps}) < rows_per_part:
        return 0
    written = 0
    for ds, sources in sorted(short.items()):
        written += len(recut.recut(workdir, TABLE, ds, sources, rows_per_part, stop_after, hooks))
        if stop_after is not None:
            break
    return written


def _limit_rows(items: Iterator[dict | pa.Table], limit: int) -> Iterator[dict | pa.Table]:
    left = limit
    for item in items:
        if left <= 0:
            return
        if isinstance(item, pa.Table):
            item = item.slice(0, left)
            left -= item.num_rows
        else:
            left -= 1
        yield item


__all__ = ["TABLE", "UnitResult", "ingest_unit", "ingest_adapter", "bound_parts", "part_path", "done_marker", "make_sample_id", "to_json"]
