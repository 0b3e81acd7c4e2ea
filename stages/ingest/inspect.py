"""`curate inspect`: what the adapters make of a download, in seconds, writing nothing.

For each enabled dataset (or one), the first ``n`` records of every unit (metadata file, CSV, tar)
go through the adapter exactly as ingest would read them (``stages.ingest.core``'s guarded read),
but nothing is written: rows are counted and their media locations checked on the spot. The report
says, per dataset: records and errors per unit, categories, how many media paths resolved and
where (the folder or tar shard, relative to the root), two examples of each kind of failure with
the places the adapter looked (its error rows say where), and record fields the adapter does not
read (from the raw records, against the adapter's ``fields_used`` when it declares one).

A dataset whose records resolve no media at all is what a wrong layout looks like: the command
exits 1 then, so a script can stop before a long ingest.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import tarfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from stages.ingest import get_adapter
from stages.ingest.base import Adapter, SourceRange
from stages.ingest.core import _convertible, _guarded, _limit_rows
from stages.media.tar_members import split_ref

EXAMPLES = 2  # examples kept per kind of failure


@dataclass
class DatasetReport:
    name: str
    root: str
    units: list[tuple[str, int, int]] = field(default_factory=list)  # (unit, records, errors)
    categories: Counter = field(default_factory=Counter)
    paths_checked: int = 0
    paths_resolved: int = 0
    where: Counter = field(default_factory=Counter)  # folder / shard -> resolved paths
    failures: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    failure_counts: Counter = field(default_factory=Counter)
    fields_seen: Counter = field(default_factory=Counter)
    fields_used: tuple[str, ...] | None = None

    @property
    def records(self) -> int:
        return sum(n for _, n, _ in self.units)

    @property
    def resolves_nothing(self) -> bool:
        """Nothing read, or no media path of the records read exists."""
        return self.records == 0 or self.paths_resolved == 0

    def ignored_fields(self) -> list[str] | None:
        """Fields seen in the raw records that match none of the adapter's ``fields_used``
        (names or fnmatch patterns, e.g. ``*score*``); None when the adapter declares none."""
        if self.fields_used is None:
            return None
        return sorted(f for f in self.fields_seen
                      if not any(fnmatch.fnmatchcase(f, pat) for pat in self.fields_used))

    def fail(self, kind: str, example: str) -> None:
        self.failure_counts[kind] += 1
        if len(self.failures[kind]) < EXAMPLES:
            self.failures[kind].append(example)


def failure_kind(error: str) -> str:
    """A short class for an error message: its words before the first ':' (quotes and numbers
    dropped), so "not found: src_video 'x'; looked in ..." and "not found: src_video 'y' ..." group."""
    head = error.split(":", 1)[0] if ":" in error else error
    head = re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "", head)
    kind = " ".join(head.split())[:60] or "error"
    if error.startswith("not found:"):  # keep which column was not found
        m = re.match(r"not found: (\w+)", error)
        kind = f"not found ({m.group(1)})" if m else kind
    return kind


def _rows(items: Iterator[dict | pa.Table]) -> Iterator[dict]:
    for item in items:
        if isinstance(item, pa.Table):
            yield from item.to_pylist()
        else:
            yield _convertible(item)  # a row ingest could not write is the error row ingest writes


class _Checker:
    """Does a location exist? Plain files by stat; tar members by the shard's member list (read
    once per shard, headers only); parquet cells by the file."""

    def __init__(self, root: Path):
        self.root = root
        self._members: dict[str, set[str]] = {}

    def where(self, path: str) -> str:
        try:
            rel = os.path.relpath(path, self.root)
        except ValueError:
            rel = path
        if rel.startswith(".."):
            rel = path  # outside the root (e.g. a configured video_root): show it whole
        parent = os.path.dirname(rel) or "."
        return parent + "/"

    def check(self, uri: str) -> tuple[bool, str]:
        """(exists, where) for one location."""
        for scheme in ("tar://", "parquet://"):
            if uri.startswith(scheme):
                container, _, inner = uri[len(scheme):].partition("#")
                shown = os.path.relpath(container, self.root) if container.startswith(str(self.root)) else container
                if not os.path.isfile(container):
                    return False, shown
                if scheme == "tar://":  # "<member>@<header offset>" names a member too
                    return split_ref(inner)[0] in self._tar(container) or inner in self._tar(container), shown
                return True, shown
        if "://" in uri:
            return False, uri.split("://", 1)[0] + "://"
        return os.path.isfile(uri), self.where(uri)

    def _tar(self, path: str) -> set[str]:
        if path not in self._members:
            names: set[str] = set()
            try:
                with tarfile.open(path, ignore_zeros=True) as tf:
                    names = {m.name for m in tf if m.isfile()}
            except (tarfile.TarError, OSError):
                pass
            self._members[path] = names
        return self._members[path]


def inspect_adapter(adapter: Adapter, n: int) -> DatasetReport:
    root = Path(adapter.root)
    report = DatasetReport(adapter.name, str(root), fields_used=getattr(adapter, "fields_used", None))
    checker = _Checker(root)
    for unit in adapter.units():
        records = errors = 0
        for row in _rows(_limit_rows(_guarded(adapter, unit), n)):
            records += 1
            if not row.get("error"):  # an error row's raw record may be the adapter's own note
                _raw_fields(report, row.get("raw_record"))
            if row.get("category"):
                report.categories[row["category"]] += 1
            if row.get("error"):
                errors += 1
                report.fail(failure_kind(row["error"]), row["error"])
                continue
            for role in ("source_uri", "target_uri"):
                uri = row.get(role)
                if uri is None:
                    continue
                report.paths_checked += 1
                ok, where = checker.check(uri)
                if ok:
                    report.paths_resolved += 1
                    report.where[where] += 1
                else:
                    report.fail(f"missing ({role.removesuffix('_uri')})", f"no file at {uri}")
        report.units.append((_unit_name(root, unit), records, errors))
    return report


def _unit_name(root: Path, unit: SourceRange) -> str:
    try:
        return os.path.relpath(unit.path, root)
    except ValueError:
        return unit.path


def _raw_fields(report: DatasetReport, raw: str | None) -> None:
    if not raw:
        return
    try:
        rec = json.loads(raw)
    except ValueError:
        return
    if isinstance(rec, dict):
        report.fields_seen.update(k for k in rec if not str(k).startswith("_"))


def inspect_config(cfg, dataset: str | None = None, n: int = 200) -> list[DatasetReport]:
    """Reports for every enabled dataset of a Config (or the one named)."""
    enabled = cfg.datasets.enabled()
    if dataset is not None:
        if dataset not in enabled:
            raise ValueError(f"--dataset {dataset}: not an enabled dataset of this config "
                             f"(enabled: {', '.join(sorted(enabled)) or 'none'})")
        enabled = {dataset: enabled[dataset]}
    return [inspect_adapter(get_adapter(name, ds), n) for name, ds in enabled.items()]


def format_report(r: DatasetReport, n: int) -> str:
    lines = [f"== {r.name}  (root {r.root})"]
    lines.append(f"  units: {len(r.units)} (first {n} records of each)")
    for name, records, errors in r.units:
        lines.append(f"    {name}: {records} records, {errors} error rows")
    cats = ", ".join(f"{c} {k}" for c, k in sorted(r.categories.items(), key=lambda x: (-x[1], x[0])))
    lines.append(f"  categories: {cats or '-'}")
    lines.append(f"  media paths: {r.paths_resolved} of {r.paths_checked} resolved")
    for where, k in sorted(r.where.items(), key=lambda x: (-x[1], x[0])):
        lines.append(f"    {k:>5}  {where}")
    if r.failure_counts:
        lines.append("  failures:")
        for kind, k in sorted(r.failure_counts.items(), key=lambda x: (-x[1], x[0])):
            lines.append(f"    {kind}: {k}")
            for example in r.failures[kind]:
                lines.append(f"      e.g. {example[:400]}")
    if r.fields_seen:
        ignored = r.ignored_fields()
        if ignored is not None:
            lines.append(f"  fields ignored by the adapter: {', '.join(ignored) or '-'}")
        else:
            lines.append(f"  fields seen: {', '.join(sorted(r.fields_seen))}")
    if r.resolves_nothing:
        lines.append("  RESOLVES NOTHING: no media path of these records exists; check the root and the "
                     "layout settings against the failures above")
    return "\n".join(lines)


__all__ = ["DatasetReport", "failure_kind", "format_report", "inspect_adapter", "inspect_config"]
