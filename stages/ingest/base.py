"""The adapter interface and helpers every dataset adapter shares.

An adapter turns a dataset's published layout into `samples` rows:

* ``units()`` lists the units of work (one metadata file, one CSV, one tar ...) cheaply, in a
  deterministic order; each has a stable ``key`` that names its output parts.
* ``read(unit)`` yields rows (dicts from :func:`manifests.schema.empty_sample`) or whole Arrow
  tables in the `samples` schema (for vectorised adapters such as Koala's). A record that cannot be
  resolved is yielded as a row with ``error`` set, never dropped.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from manifests.schema import empty_sample, make_sample_id


@dataclass(frozen=True)
class SourceRange:
    """What one ingest unit reads: a published file, or a row range of one (``params``). The
    adapter's view; the stage turns each into a ``pipeline.stage.Unit`` (the contract's unit of work)."""

    dataset: str
    key: str  # filesystem-safe, stable: names the unit's output parts
    path: str  # the file the unit reads
    params: dict[str, Any] = field(default_factory=dict)


def unit_key(root: Path, path: Path, *extra: Any) -> str:
    """A readable, stable key for the file ``path`` under ``root``."""
    rel = os.path.relpath(path, root)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", rel)[-60:].strip("_.") or "unit"
    digest = hashlib.sha1(json.dumps([rel, *map(str, extra)]).encode()).hexdigest()[:8]
    return f"{stem}-{digest}"


class PathEscapeError(ValueError):
    """A metadata path that leaves the dataset root (the probe stage's ``path_escape``)."""


class SymlinkEscapeError(PathEscapeError):
    """A path inside the root, as written, that a symlink on the way leads out of it."""


def _inside(root: Path, path: Path) -> bool:
    # Both are absolute and normalised, so a prefix test on the text is exact; ``root in
    # path.parents`` built a Path per parent and was a fifth of a Ditto row's ingest time.
    r, p = str(root), str(path)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


@lru_cache(maxsize=64)
def _resolved_root(root: str) -> Path:
    """A dataset root, resolved once: every metadata path of the dataset resolves under it (each
    Ditto row tries four layouts for two videos, so resolving the root per path doubled the work)."""
    return Path(root).resolve()


def resolve_under(root: Path, rel: str) -> Path:
    """Resolve a path from metadata against the dataset root, refusing paths that leave it,
    whether by ``..`` / an absolute path, or through a symlink inside the root that points out of
    it (the same rule as the probe stage's ``path_escape``, applied at ingest)."""
    if rel is None or str(rel).strip() == "":
        raise ValueError("empty path")
    check_path_text(str(rel))
    root = _resolved_root(os.path.abspath(root))  # keyed absolute: a relative root follows the cwd
    lexical = Path(os.path.normpath(root / str(rel)))
    if not _inside(root, lexical):
        raise PathEscapeError(f"path escapes the dataset root: {rel!r}")
    try:
        candidate = lexical.resolve()
    except (RuntimeError, OSError) as e:  # a symlink loop (RuntimeError before Python 3.13)
        raise ValueError(f"unresolvable path {rel!r}: {type(e).__name__}: {e}") from None
    if not _inside(root, candidate):
        raise SymlinkEscapeError(f"path escapes the dataset root through a symlink: {rel!r} -> {candidate}")
    return candidate


NAME_MAX = 255  # bytes per path component on the file systems datasets are extracted to


def check_path_text(rel: str) -> None:
    """Refuse a path no file system can hold (a NUL byte, a component over NAME_MAX bytes, text
    that is not valid Unicode) with a ValueError that says why, before any system call."""
    if "\x00" in rel:
        raise ValueError(f"path holds a NUL byte: {rel!r}")
    try:
        parts = [p.encode("utf-8") for p in rel.replace("\\", "/").split("/")]
    except UnicodeEncodeError:
        raise ValueError(f"path is not valid Unicode: {rel!r}") from None
    long = next((p for p in parts if len(p) > NAME_MAX), None)
    if long is not None:
        raise ValueError(f"file name too long ({len(long)} bytes, at most {NAME_MAX}): {rel[:80]!r}...")


def metadata_files(root: Path, glob: str) -> list[Path]:
    """Files matching ``glob`` under ``root``, sorted; directories are left out, but a FIFO or
    other non-regular file is kept, so that it becomes its unit's error row instead of vanishing."""
    return sorted(p for p in root.glob(glob) if not p.is_dir())


def to_json(record: Any) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True, default=str)


def extra_json(**fields: Any) -> str | None:
    """The ``extra`` column: the non-null fields as one JSON object (sorted keys), None if none.
    DuckDB reads it with ``json_extract_string(extra, '$.<key>')``."""
    kept = {k: v for k, v in fields.items() if v is not None and v != [] and v != ""}
    return json.dumps(kept, ensure_ascii=False, sort_keys=True) if kept else None


class Adapter:
    """Base class: subclasses set ``name`` and implement ``units`` and ``read``."""

    name: str = ""
    modality: str = "video"
    task: str = "edit"

    def __init__(self, cfg):
        self.cfg = cfg
        self.root: Path = cfg.resolved_root

    def units(self) -> list[SourceRange]:
        raise NotImplementedError

    def read(self, unit: SourceRange) -> Iterator[dict[str, Any] | pa.Table]:
        raise NotImplementedError

    # -- helpers for subclasses
    def row(self, key: Any, **values: Any) -> dict[str, Any]:
        """A samples row whose id is derived from this dataset's natural ``key``."""
        keys = key if isinstance(key, (tuple, list)) else (key,)
        values.setdefault("modality", self.modality)
        values.setdefault("task", self.task)
        values.setdefault("license", self.cfg.license)
        return empty_sample(self.name, make_sample_id(self.name, *keys), **values)

    def error_row(self, key: Any, error: str, record: Any = None, **values: Any) -> dict[str, Any]:
        return self.row(key, error=error, raw_record=to_json(record) if record is not None else None, **values)

    def guarded(self, fallback_key: Any, record: Any, make_row, *args: Any, **values: Any) -> dict[str, Any]:
        """``make_row(*args)``, or, if it raises (a path the OS refuses, a key that cannot be
        hashed, a value of an unexpected type ...), one error row keyed by the record's place
        (``fallback_key``), so that the record's failure does not end its unit."""
        try:
            return make_row(*args)
        except Exception as e:  # noqa: BLE001 - any failure of one record is that record's error row
            from stages.ingest.record_guard import repair_text

            if isinstance(e, UnicodeEncodeError):  # e.g. a lone surrogate in the record's key
                reason = "text that is not valid Unicode (a lone surrogate) in a field naming the record"
            else:
                reason = repair_text(f"{type(e).__name__}: {e}")[:500]
            return self.error_row(fallback_key, f"record failed: {reason}", record=repair_text(record), **values)
