"""What the two part rewriters share, ``manifests.compact`` (unit parts merged into one) and
``manifests.recut`` (short parts re-cut into full ones): outputs written under a hidden temp
name, a ledger of small JSON entries under ``state/<table>/<folder>/`` as the commit point, and
the sweep of temps no entry vouches for. One spelling of each, so readers (``manifests.io``) and
both recoveries agree on what a temp and an entry are."""
from __future__ import annotations

import json
import os
from pathlib import Path

from manifests.io import table_dir

TEMP_SUFFIX = ".compacting"  # hidden (leading dot) and not *.parquet: no reader lists it


def ledger_dir(workdir: str | os.PathLike, table: str, folder: str) -> Path:
    return Path(workdir) / "state" / table / folder


def temp_of(part: Path) -> Path:
    return Path(part).with_name(f".{Path(part).name}{TEMP_SUFFIX}")


def part_of(temp: Path) -> Path:
    return temp.with_name(temp.name[1:-len(TEMP_SUFFIX)])


def raw_entries(workdir: str | os.PathLike, table: str, folder: str) -> list[dict]:
    """The committed entries, in name order, as written (paths relative to the workdir, so a
    moved or copied workdir keeps its ledger)."""
    root = ledger_dir(workdir, table, folder)
    return [json.loads(p.read_text()) for p in sorted(root.glob("*.json"))] if root.exists() else []


def sweep_temps(workdir: str | os.PathLike, table: str, vouched: set[str]) -> int:
    """Delete the temps of ``table`` whose part no entry vouches for (``vouched``: part paths as
    the caller resolves them); returns how many."""
    n = 0
    tdir = table_dir(workdir, table)
    if tdir.exists():
        for temp in tdir.rglob(f".*{TEMP_SUFFIX}"):
            if str(part_of(temp)) not in vouched:
                temp.unlink(missing_ok=True)
                n += 1
    return n
