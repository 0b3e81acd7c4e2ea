"""Re-cut the small parts of one dataset of a table into full parts of ``rows_per_part`` rows.

Why: a writer whose units do not hold a multiple of ``rows_per_part`` rows ends each unit with a
short part (Koala's byte-range units, one published file per unit elsewhere), so parts grow with
the number of units, not with rows. Re-cutting the short parts of a batch together (full parts are
left alone) gives ``ceil(rows / rows_per_part)`` parts for the dataset's rows of that batch.

Why a step after the units, not parts cut across units while they are written: units run in
parallel Ray tasks and a killed run redoes only unfinished units, so a part spanning two units
would need both to be done and an order between the tasks; after the units, the inputs are
fixed files in a fixed (name) order and the output is a pure function of them, which keeps a
resumed run byte-identical by construction.

A batch's sources may include the short last output of an earlier batch (an earlier ingest run):
that output leaves its batch's entry, so parts stay bounded across runs, not only within one.

Steps, each safe to be killed after (kill -9):
  1. write every output under a hidden temp name (``.<name>.compacting``: no reader lists it);
  2. write the ledger entry ``state/<table>/_recut/<dataset>--b<batch>.json`` (atomic): the
     outputs, their row counts and bytes, and the parts they replace (the commit point);
  3. the table's bookkeeping learns where the rows moved (``Hooks.moved``);
  4. rename the temps into place;
  5. drop the replaced parts from earlier entries, delete them, and tell the bookkeeping
     (``Hooks.gone``).
Readers (``manifests.io.superseded``) see exactly one copy of every row at every step: before step
3 ends, the outputs already renamed are hidden and the replaced parts shown; once every output is
in place, the replaced parts are hidden. ``recover`` rolls a committed entry forward and drops
temps no entry names; an uncommitted batch is simply redone, giving the same bytes.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq

from manifests import ledger
from manifests.io import RECUT_DIR, atomic_write_json, rechunk, table_dir, write_part
from manifests.ledger import TEMP_SUFFIX, temp_of as _temp_of  # noqa: F401  (TEMP_SUFFIX: the tests' spelling)


def ledger_dir(workdir: str | os.PathLike, table: str) -> Path:
    return ledger.ledger_dir(workdir, table, RECUT_DIR)


def entries(workdir: str | os.PathLike, table: str) -> list[dict]:
    """The committed batches, paths resolved against the workdir (stored relative to it, so a
    moved or copied workdir keeps its ledger)."""
    base = Path(workdir)
    return [{**e, "parts": [str(base / x) for x in e["parts"]], "replaces": [str(base / x) for x in e["replaces"]]}
            for e in ledger.raw_entries(workdir, table, RECUT_DIR)]


def outputs(workdir: str | os.PathLike, table: str) -> set[str]:
    """Every part a re-cut wrote and no later re-cut replaced."""
    return {p for e in entries(workdir, table) for p in e["parts"]}


@dataclass(frozen=True)
class Hooks:
    """What the table's own bookkeeping does as rows move (``samples``: the repeats, named by
    (part, row), see ``manifests.repeats``): ``moved(entry)`` once a batch is committed, before
    its outputs are renamed into place; ``gone(paths)`` once the replaced parts are deleted. Both
    idempotent: a killed run's batch is rolled forward through them again."""

    moved: Callable[[dict], None] = lambda entry: None
    gone: Callable[[set[str]], None] = lambda paths: None


def _retire(workdir: Path, table: str, entry: dict) -> None:
    """An earlier batch's outputs that this batch re-cuts leave that batch's entry (its other
    outputs stay listed, so ``superseded`` still sees that batch complete); the entry file stays
    even when empty, since batches are numbered by counting them."""
    replaced = {str(Path(p).relative_to(workdir)) for p in entry["replaces"]}
    for path in sorted(ledger_dir(workdir, table).glob("*.json")):
        e = json.loads(path.read_text())
        keep = [i for i, p in enumerate(e["parts"]) if p not in replaced]
        if len(keep) != len(e["parts"]):
            atomic_write_json(path, {**e, "parts": [e["parts"][i] for i in keep],
                                     "rows": [e["rows"][i] for i in keep], "bytes": [e["bytes"][i] for i in keep]})


def _finish(workdir: Path, table: str, entry: dict, hooks: Hooks, stop_after: int | None = None) -> None:
    hooks.moved(entry)
    for i, part in enumerate(map(Path, entry["parts"])):
        temp = _temp_of(part)
        if temp.exists():
            os.replace(temp, part)
        if stop_after == 3 and i == 0:  # killed between two renames
            return
    if stop_after == 4:
        return
    missing = [p for p in entry["parts"] if not Path(p).exists()]
    if missing:  # only by hand: the replaced parts are deleted after every output is in place
        raise RuntimeError(f"re-cut outputs {missing} are gone while their ledger entry stands; "
                           f"re-run with --overwrite")
    _retire(workdir, table, entry)
    for src in entry["replaces"]:
        Path(src).unlink(missing_ok=True)
    hooks.gone(set(entry["replaces"]))


def recover(workdir: str | os.PathLike, table: str, hooks: Hooks) -> int:
    """Finish the batches a killed run committed; drop temps of batches it did not commit.
    ``hooks``: the table's own (no default: a roll-forward without them would leave the repeats
    naming deleted parts). Returns how many batches were rolled forward plus temps dropped."""
    n = 0
    named, gone = set(), set()
    for entry in entries(workdir, table):
        named.update(entry["parts"])
        if any(_temp_of(Path(p)).exists() for p in entry["parts"]) or \
                any(Path(s).exists() for s in entry["replaces"]):
            _finish(Path(workdir), table, entry, hooks)
            n += 1
        gone.update(entry["replaces"])
    hooks.gone(gone)  # a run killed after its deletes left only this bookkeeping to do
    return n + ledger.sweep_temps(workdir, table, named)


def plan_outputs(workdir: str | os.PathLike, table: str, dataset: str, rows: int,
                 rows_per_part: int) -> list[Path]:
    """The output names of the next batch of ``dataset``: ``merged-b<batch>-<j>.parquet``, the
    batch numbered after the committed ones (a later ingest run that adds units adds a batch)."""
    batch = sum(1 for p in ledger_dir(workdir, table).glob(f"{dataset}--b*.json")) \
        if ledger_dir(workdir, table).exists() else 0
    folder = table_dir(workdir, table) / dataset
    return [folder / f"merged-b{batch:04d}-{j:05d}.parquet" for j in range(math.ceil(rows / rows_per_part))]


def recut(workdir: str | os.PathLike, table: str, dataset: str, sources: list[Path], rows_per_part: int,
          stop_after: int | None, hooks: Hooks) -> list[Path]:
    """Re-cut ``sources`` (short parts of one dataset, in this order) into full parts; returns the
    outputs (none when that would not lower the part count). ``hooks``: the table's own (no
    default, as for ``recover``). ``stop_after`` stops as a kill would
    (for tests): 1 after the temps, 2 after the commit, 3 after the first rename, 4 after them all."""
    workdir = Path(workdir)
    sizes = [pq.ParquetFile(s).metadata.num_rows for s in sources]
    total = sum(sizes)
    outs = plan_outputs(workdir, table, dataset, total, rows_per_part)
    if len(outs) >= len(sources):
        return []
    written = []
    for out, t in zip(outs, rechunk((pq.read_table(src) for src in sources), rows_per_part), strict=True):
        write_part(_temp_of(out), t)
        written.append(t.num_rows)
    if sum(written) != total:  # nothing may be lost: checked before the commit
        raise RuntimeError(f"re-cut of {dataset}: {sum(written)} rows written for {total} read")
    if stop_after == 1:
        return outs
    rel = lambda p: str(Path(p).relative_to(workdir))  # noqa: E731
    entry = {"parts": [rel(o) for o in outs], "rows": written,
             "bytes": [_temp_of(o).stat().st_size for o in outs],
             "replaces": [rel(s) for s in sources], "replaced_rows": sizes}
    batch = outs[0].stem.split("-")[1]
    atomic_write_json(ledger_dir(workdir, table) / f"{dataset}--{batch}.json", entry)
    if stop_after == 2:
        return outs
    _finish(workdir, table, {**entry, "parts": [str(o) for o in outs], "replaces": [str(x) for x in sources]},
            hooks, stop_after)
    return outs
