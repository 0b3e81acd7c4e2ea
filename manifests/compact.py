"""Bounded part counts: merge the per-unit parts of a table into one part per group (e.g. per input
samples part), with a done-ledger so that resume never depends on a unit's own part once merged.

Steps, each safe to be killed after (kill -9):
  1. write the merged part under a hidden temp name (``.<name>.compacting``);
  2. write the ledger entry ``state/<table>/_compacted/<name>.json`` (atomic) listing the unit outs
     it replaces;
  3. rename the temp part into place;
  4. delete the unit parts.
``recover`` (run before planning) rolls an entry forward (steps 3-4) and drops a temp part with no
ledger entry, so readers never see a row twice after a completed step and a resumed run ends with
the same bytes as an uninterrupted one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from manifests.io import ROW_GROUP_ROWS, atomic_write_json, read_slice, table_dir, write_part

TEMP_SUFFIX = ".compacting"


def ledger_dir(workdir: str | os.PathLike, table: str) -> Path:
    return Path(workdir) / "state" / table / "_compacted"


def _temp_of(part: Path) -> Path:
    return part.with_name(f".{part.name}{TEMP_SUFFIX}")


def compacted_outs(workdir: str | os.PathLike, table: str) -> set[str]:
    """Unit outs already merged into a compacted part (their own file may be gone)."""
    outs: set[str] = set()
    for entry in _entries(workdir, table):
        outs.update(entry["replaces"])
    return outs


def _rel(workdir, path) -> str:
    return str(Path(path).relative_to(Path(workdir)))


def _resolve(workdir, entry: dict) -> dict:
    root = Path(workdir)
    return {**entry, "part": str(root / entry["part"]), "replaces": [str(root / o) for o in entry["replaces"]]}


def _entries(workdir, table) -> list[dict]:
    root = ledger_dir(workdir, table)
    if not root.exists():
        return []
    return [_resolve(workdir, json.loads(p.read_text())) for p in sorted(root.glob("*.json"))]


def locate(workdir: str | os.PathLike, table: str) -> dict[str, tuple[str, int, int]]:
    """Unit out -> (merged part, first row, rows) for every merged unit of a table: how a
    downstream planner finds a unit's rows once its own part is gone (units keep their keys)."""
    found: dict[str, tuple[str, int, int]] = {}
    for entry in _entries(workdir, table):
        offset = 0
        for out, n in zip(entry["replaces"], entry["rows"]):
            found[out] = (entry["part"], offset, n)
            offset += n
    return found


def unit_source(out: str, merged: dict[str, tuple[str, int, int]]) -> tuple[str, int, int] | None:
    """Where a unit's rows are now: its own part (offset -1: the whole file), its merged part, or
    None when not written yet."""
    if Path(out).exists():
        return out, -1, -1
    return merged.get(out)


def read_unit_rows(path: str, offset: int, rows: int, columns: list[str] | None = None) -> pa.Table:
    """A unit's rows from ``unit_source``'s answer (row-group aligned slice of a merged part)."""
    if offset < 0:
        return pq.read_table(path, columns=columns)
    return read_slice(path, offset, rows, columns)


def _finish(entry: dict) -> None:
    part = Path(entry["part"])
    temp = _temp_of(part)
    if temp.exists():
        os.replace(temp, part)
    for out in entry["replaces"]:
        if out != str(part):
            Path(out).unlink(missing_ok=True)


def recover(workdir: str | os.PathLike, table: str) -> int:
    """Finish a compaction a killed run left half done; drop temps with no ledger entry.
    Returns how many entries were rolled forward or temps dropped."""
    n = 0
    entries = {}
    for entry in _entries(workdir, table):
        entries[entry["part"]] = entry
        if _temp_of(Path(entry["part"])).exists() or any(
                Path(o).exists() for o in entry["replaces"] if o != entry["part"]):
            _finish(entry)
            n += 1
    tdir = table_dir(workdir, table)
    if tdir.exists():
        for temp in tdir.rglob(f".*{TEMP_SUFFIX}"):
            part = temp.with_name(temp.name[1:-len(TEMP_SUFFIX)])
            if str(part) not in entries:
                temp.unlink(missing_ok=True)
                n += 1
    return n


def compact_group(workdir: str | os.PathLike, table: str, part: Path, outs: list[str],
                  stop_after: int | None = None) -> bool:
    """Merge the unit parts ``outs`` (in this order: unit order) into ``part``. ``stop_after``
    (1..3) stops after that step, as a kill would (for tests). Returns False when there was
    nothing to merge (a single unit already named ``part``, or every out already merged)."""
    part = Path(part)
    present = [o for o in outs if Path(o).exists()]
    if len(present) != len(outs) or outs == [str(part)]:
        return False
    merged = pa.concat_tables([pq.read_table(o) for o in outs], promote_options="default")
    temp = _temp_of(part)
    write_part(temp, merged, row_group_size=ROW_GROUP_ROWS)  # 1,000-row groups: unit reads stay aligned
    if stop_after == 1:
        return True
    rows = [pq.ParquetFile(o).metadata.num_rows for o in outs]
    # paths relative to the workdir: a copied or moved workdir keeps its ledger
    entry = {"part": _rel(workdir, part), "replaces": [_rel(workdir, o) for o in outs], "rows": rows}
    atomic_write_json(ledger_dir(workdir, table) / f"{part.parent.name}--{part.stem}.json", entry)
    if stop_after == 2:
        return True
    os.replace(temp, part)
    if stop_after == 3:
        return True
    _finish(_resolve(workdir, entry))
    return True


def compact_table(workdir: str | os.PathLike, table: str, groups: dict[str, list[str]]) -> int:
    """Merge each group (merged part path -> unit outs in unit order); returns parts written."""
    recover(workdir, table)
    return sum(compact_group(workdir, table, Path(part), outs) for part, outs in sorted(groups.items()))
# A kill between steps 3 and 4 leaves the merged part beside its unit parts until ``recover`` runs
# (run_stage runs it before planning a stage that compacts): a raw glob in that window counts twice.
