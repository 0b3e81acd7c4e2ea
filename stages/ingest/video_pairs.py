"""Helpers shared by the video edit-pair adapters (Ditto-1M, OpenVE-3M, ReCo-Data).

These datasets publish pairs as metadata records holding two relative paths and an instruction,
but the way the videos were extracted on disk varies (nested archive folders, a ``videos/``
prefix or not, paths relative to the root or to the metadata file). The helpers here keep that
tolerance in one place: text cleaning, path normalisation, and picking the on-disk variant.
"""
from __future__ import annotations

import os
import re
import tarfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

from stages.ingest.base import PathEscapeError, SymlinkEscapeError, resolve_under
# One parser per field kind for every adapter (the image adapters import them from here too).
from stages.ingest.fields import clean_text, missing_text_fields, numeric_scores  # noqa: F401


def norm_rel(path: str) -> str:
    """A metadata path in one spelling: forward slashes, no ``./`` prefix, no doubled slashes.

    ``..`` is kept on purpose: whether it escapes the root is for ``resolve_under`` to decide.
    """
    p = str(path).strip().replace("\\", "/")
    p = re.sub(r"/{2,}", "/", p)
    while p.startswith("./"):
        p = p[2:]
    return p


def json_records(doc: Any) -> list[Any]:
    """The record list of a metadata JSON file.

    Published files are JSON lists; a dict wrapping one list (``{"data": [...]}``) or a dict of
    records keyed by id is accepted too. Anything else is an unknown layout and raises, so the
    whole file becomes the core's unit error row instead of being silently skipped.
    """
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        lists = [v for v in doc.values() if isinstance(v, list)]
        if len(lists) == 1 and len(doc) == 1:
            return lists[0]
        if doc and all(isinstance(v, dict) for v in doc.values()):
            return list(doc.values())
    raise ValueError(f"expected a JSON list of records, got {type(doc).__name__}")


def candidate_paths(root: Path, variants: Sequence[str], written: str | None = None) -> list[Path | None]:
    """Each variant resolved under ``root``; None where it escapes. Raises if all escape, or if
    one is a symlink leading out of the root (that file exists: it is what the metadata means).

    ``written`` is the path as the metadata spells it, for the error message.
    """
    out: list[Path | None] = []
    for rel in variants:
        try:
            out.append(resolve_under(root, rel))
        except SymlinkEscapeError:
            raise
        except PathEscapeError:
            out.append(None)
    if all(p is None for p in out):
        raise PathEscapeError(f"path escapes the dataset root: {written or variants[0]!r}")
    return out


class NotFoundError(ValueError):
    """A metadata path found in none of the places a layout allows; the message lists them, so
    a user sees at once which layout was expected (``curate inspect`` shows two per dataset)."""

    def __init__(self, what: str, written: str, tried: Sequence[str]):
        self.what, self.written, self.tried = what, written, list(tried)
        super().__init__(f"not found: {what} {written!r}; looked in: {', '.join(self.tried)}")


class LayoutProbe:
    """Picks which of several on-disk variants of a path exists, remembering the last winner.

    Variants are given in the same order for every path of one kind (e.g. ``[plain, nested]``),
    so for a consistently extracted folder the first check hits and each path costs one stat.
    """

    def __init__(self) -> None:
        self._last = 0

    def pick(self, candidates: Sequence[Path | None]) -> Path | None:
        order = list(range(len(candidates)))
        if self._last < len(order):
            order.insert(0, order.pop(self._last))
        for i in order:
            path = candidates[i]
            if path is not None and path.is_file():
                self._last = i
                return path
        return None


class TarShards:
    """Members of the tar shards of some folders, listed on first use, by path and by file name.

    Published members are bare names (``<name>.mp4``), so a video is found by its file name; a
    member whose path matches the record's (``src_videos/x.mp4``) is preferred when there is one.
    """

    def __init__(self, root: Path, folders: list[Path], role: str = ""):
        self.root, self.folders, self.role = root, folders, role
        self._by_name: dict[str, tuple[Path, str]] | None = None
        self._by_base: dict[str, list[tuple[Path, str]]] = defaultdict(list)

    def shards(self) -> list[Path]:
        out = []
        for folder in self.folders:
            for shard in sorted(folder.glob("*.tar")) if folder.is_dir() else []:
                # a shard is read only if it lies in the root (a symlink out of it is not followed)
                try:
                    out.append(resolve_under(self.root, os.path.relpath(shard, self.root)))
                except PathEscapeError:
                    continue
        return out

    def _list(self) -> None:
        self._by_name = {}
        for shard in self.shards():
            with tarfile.open(shard, ignore_zeros=True) as tf:  # headers only, seeking over the data
                for member in tf:
                    if member.isfile():
                        where = (shard, member.name)
                        self._by_name.setdefault(norm_rel(member.name), where)
                        self._by_base[Path(member.name).name].append(where)

    def find(self, rel: str) -> str | None:
        if self._by_name is None:
            self._list()
        parts = norm_rel(rel).split("/")
        hit = next((self._by_name[t] for t in ("/".join(parts), "/".join(parts[-2:])) if t in self._by_name), None)
        if hit is None:
            same_name = list(dict.fromkeys(self._by_base.get(parts[-1], [])))
            # shards of both roles in one folder (task folder): `_src_` / `_tar_` in the name decides
            of_role = [w for w in same_name if self.role and f"_{self.role}_" in f"_{w[0].name}"] or same_name
            hit = of_role[0] if len(of_role) == 1 else None
        return f"tar://{hit[0]}#{hit[1]}" if hit else None

    def describe(self) -> str:
        return " or ".join(f"{os.path.relpath(f, self.root)}/*.tar" for f in self.folders)
