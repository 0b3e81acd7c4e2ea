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

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from manifests import ledger
from manifests.io import LEDGER_DIR, ROW_GROUP_ROWS, atomic_write_json, read_slice, write_part
from manifests.ledger import TEMP_SUFFIX, temp_of as _temp_of  # noqa: F401  (TEMP_SUFFIX: the tests' spelling)


def ledger_dir(workdir: str | os.PathLike, table: str) -> Path:
    return ledger.ledger_dir(workdir, table, LEDGER_DIR)


def compacted_outs(workdir: str | os.PathLike, table: str) -> set[str]:
    """Unit outs already merged into a compacted part that exists (their own file may be gone);
    an entry whose part was removed with its table vouches for nothing."""
    outs: set[str] = set()
    for entry in _entries(workdir, table):
        if Path(entry["part"]).exists():
            outs.update(entry["replaces"])
    return outs


def _rel(workdir, path) -> str:
    return str(Path(path).relative_to(Path(workdir)))


def _resolve(workdir, entry: dict) -> dict:
    root = Path(workdir)
    return {**entry, "part": str(root / entry["part"]), "replaces": [str(root / o) for o in entry["replaces"]]}


def _entries(workdir, table) -> list[dict]:
    return [_resolve(workdir, e) for e in ledger.raw_entries(workdir, table, LEDGER_DIR)]


def locate(workdir: str | os.PathLike, table: str) -> dict[str, tuple[str, int, int]]:
    """Unit out -> (merged part, first row, rows) for every merged unit of a table: how a
    downstream planner finds a unit's rows once its own part is gone (units keep their keys)."""
    found: dict[str, tuple[str, int, int]] = {}
    for entry in _entries(workdir, table):
        if not Path(entry["part"]).exists():
            continue
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
    """Finish a merge a killed run left half done; drop temps no ledger entry vouches for.
    A unit part still beside its merged part is either a merge killed before deleting it or a
    re-written unit (judge.rescore: failed) killed before its re-merge: the merged part holds a
    whole version of its rows either way, so it goes (a re-scoring run redoes it).
    Returns how many entries were rolled forward or temps dropped."""
    n = 0
    entries = {}
    for entry in _entries(workdir, table):
        entries[entry["part"]] = entry
        temp = _temp_of(Path(entry["part"]))
        if temp.exists() and temp.stat().st_size != entry.get("bytes"):
            temp.unlink()  # a re-merge killed before its entry was written: the old part stands
            n += 1
        if temp.exists() or any(Path(o).exists() for o in entry["replaces"] if o != entry["part"]):
            _finish(entry)
            n += 1
    return n + ledger.sweep_temps(workdir, table, set(entries))


def compact_group(workdir: str | os.PathLike, table: str, part: Path, outs: list[str],
                  stop_after: int | None = None) -> bool:
    """Merge the unit parts ``outs`` (in this order: unit order) into ``part``; a unit already
    merged and not re-written since is read back from the merged part. ``stop_after`` (1..3) stops
    after that step, as a kill would (for tests). Returns False when there was nothing to merge (a
    single unit already named ``part``, a unit not written, or nothing re-written since the merge)."""
    part = Path(part)
    merged = locate(workdir, table)
    sources = [unit_source(o, merged) for o in outs]
    if outs == [str(part)] or any(s is None for s in sources) or all(s[1] >= 0 for s in sources):
        return False
    # whole group in memory: one samples part's rows (run.rows_per_part), never a table
    table_rows = pa.concat_tables([read_unit_rows(*s) for s in sources], promote_options="default")
    rows = [(pq.ParquetFile(s[0]).metadata.num_rows if s[1] < 0 else s[2]) for s in sources]
    temp = _temp_of(part)
    write_part(temp, table_rows, row_group_size=ROW_GROUP_ROWS)  # 1,000-row groups: unit reads stay aligned
    if stop_after == 1:
        return True
    # paths relative to the workdir: a copied or moved workdir keeps its ledger; bytes: which temp
    # this entry vouches for (a re-merge killed before its entry must not roll forward)
    entry = {"part": _rel(workdir, part), "replaces": [_rel(workdir, o) for o in outs], "rows": rows,
             "bytes": temp.stat().st_size}
    atomic_write_json(ledger_dir(workdir, table) / f"{part.parent.name}--{part.stem}.json", entry)
    if stop_after == 2:
        return True
    os.replace(temp, part)
    if stop_after == 3:
        return True
    _finish(_resolve(workdir, entry))
    return True


def compact_table(workdir: str | os.PathLike, table: str, groups: dict[str, list[str]]) -> int:
    """Merge each group (merged part path -> unit outs in unit order); returns parts written.
    The caller runs ``recover`` first (run_stage does, before planning): here a unit part beside
    its merged part is a re-written unit to merge in."""
    return sum(compact_group(workdir, table, Path(part), outs) for part, outs in sorted(groups.items()))


def by_input_part(units) -> dict[str, list[str]]:
    """Units cut from one samples part merge into one part named after it, in unit (row) order, so
    a table has about one part per samples part instead of one per unit."""
    groups: dict[str, list[str]] = {}
    for u in units:
        groups.setdefault(str(Path(u.out).parent / f"{Path(u.params['part']).stem}.parquet"), []).append(u.out)
    return groups
