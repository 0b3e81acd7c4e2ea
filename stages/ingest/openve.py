"""OpenVE-3M adapter (Hugging Face Lewandofski/OpenVE-3M).

Published layout (see DATASETS.md, Corrections): per-category CSVs in ``csv_files/``
(``background_change.csv``, ``global_style.csv``, ``local_add.csv`` ...), columns
``video;original_video;prompt`` (``video`` = edited, ``original_video`` = source), ``;``-separated
(HiDream Kiwi-Edit reads them with ``sep=';'``); the separator is still detected from the header
unless the config fixes it. The category is the CSV's file stem (``local_add`` -> ``add``); words
are matched, so ``Local Change.csv`` or ``local_change_train.csv`` work too. One unit per CSV;
natural key: the edited video path as written.

Paths are relative to ``OpenVE-3M/videos/`` (ThinkV2V's ``OPENVE3M_VIDEO_ROOT``), not to the CSV's
folder. ``video_root`` names that folder; unset, the candidates are ``<root>/videos``, the root,
then the CSV's folder. Each path is looked for in the candidates (the folder that held the last
hit first, so a consistent download costs one stat a path); a path found in none is an error row
that lists where it was looked for.

Every row records ``skip_frames`` (default 4): SAMA's own loader drops the first 4 frames of both
OpenVE videos, and every later stage (probe, judge, encode, preview) starts after them.

OpenVE-Bench's ``benchmark_videos.csv`` (``edited_type, prompt, original_video``), when it lies
under the root, is ingested too, as split ``bench``: a source and an instruction with no target
(the benchmark publishes no edited video). Its category comes from ``edited_type``. Downstream
stages select ``split == "train"`` for training data.
"""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any, Iterator

from stages.ingest.base import Adapter, PathEscapeError, SourceRange, metadata_files, resolve_under, to_json, unit_key
from stages.ingest.csv_records import iter_csv_records
from stages.ingest.record_guard import open_regular
from stages.ingest.video_pairs import NotFoundError, clean_text, norm_rel, numeric_scores

# Column aliases, first match wins: the published names first.
EDITED_COLUMNS = ("video", "edited_video", "target_video")
SOURCE_COLUMNS = ("original_video", "source_video", "src_video")
PROMPT_COLUMNS = ("prompt", "instruction")
BENCH_TYPE_COLUMN = "edited_type"
# A per-row category column, used only when the file name names no known category.
ROW_CATEGORY_COLUMNS = ("edited_type", "category", "edit_type", "type")

# Words of a file name (or an ``edited_type``) -> category; checked in order, so "local remove"
# is a removal before the generic "local change" rule can claim it.
_CATEGORY_RULES: tuple[tuple[frozenset[str], str], ...] = tuple(
    (frozenset(words.split()), category) for words, category in (
        ("remove", "remove"),
        ("removal", "remove"),
        ("add", "add"),
        ("addition", "add"),
        ("background", "background"),
        ("style", "style"),
        ("subtitle", "subtitles"),
        ("subtitles", "subtitles"),
        ("camera", "camera"),
        ("shot", "camera"),
        ("creative", "creative"),
        ("local change", "local_change"),
        ("local", "local_change"),
    )
)
DEFAULT_CSV_GLOB = "csv_files/*.csv"
BENCH_CSV = "benchmark_videos.csv"


def words_of(name: str) -> set[str]:
    """Lower-case words of a file stem: ``Local_ChangeTrain-01`` -> {local, change, train}."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)
    return {w for w in re.split(r"[^a-z]+", spaced.lower()) if w}


def category_of(name: str) -> str:
    """Normalised category of a CSV file stem or an ``edited_type`` value; ``other`` if unknown."""
    words = words_of(name)
    for needed, category in _CATEGORY_RULES:
        if needed <= words:
            return category
    return "other"


def detect_separator(header_line: str, sample: str) -> str:
    """The separator that splits the header into known column names; else csv.Sniffer's guess."""
    known = {*EDITED_COLUMNS, *SOURCE_COLUMNS, BENCH_TYPE_COLUMN}
    for sep in (";", ",", "\t"):
        columns = next(csv.reader([header_line], delimiter=sep), [])
        if known & {c.strip().lower() for c in columns}:
            return sep
    try:
        return csv.Sniffer().sniff(sample, delimiters=";,\t").delimiter
    except csv.Error:
        return ","


def _pick(record: dict[str, Any], names: tuple[str, ...]) -> Any:
    return next((record[n] for n in names if n in record), None)


class OpenVEAdapter(Adapter):
    name = "openve"
    # record fields read (curate inspect lists the others); *score* fields become native_scores
    fields_used = (*EDITED_COLUMNS, *SOURCE_COLUMNS, *PROMPT_COLUMNS, *ROW_CATEGORY_COLUMNS, "*score*")

    def units(self) -> list[SourceRange]:
        files = metadata_files(self.root, self.cfg.csv_glob)
        if not files and self.cfg.csv_glob == DEFAULT_CSV_GLOB:
            # No csv_files/ (CSVs moved or renamed): any CSV outside the video folder.
            files = sorted(p for p in self.root.glob("**/*.csv")
                           if p.is_file() and "videos" not in p.relative_to(self.root).parts[:-1])
        bench = self.root / BENCH_CSV
        if bench.is_file() and bench not in files:
            files.append(bench)
        return [SourceRange(self.name, unit_key(self.root, p), str(p)) for p in files]

    def video_bases(self, csv_dir: Path) -> list[Path]:
        """Folders a CSV path may be relative to, in the order they are tried."""
        if self.cfg.video_root is not None:
            return [Path(self.cfg.video_root).expanduser().resolve()]
        bases = []
        for base in (self.root / "videos", self.root, csv_dir.resolve()):
            if base not in bases:
                bases.append(base)
        return bases

    def read(self, unit: SourceRange) -> Iterator[dict[str, Any]]:
        path = Path(unit.path)
        where = os.path.relpath(path, self.root)
        sep = self.cfg.separator
        if sep == "auto":
            with open_regular(path, "rb") as f:
                sample = f.read(64 * 1024).removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace")
            sep = detect_separator(sample.splitlines()[0] if sample else "", sample)
        records = iter_csv_records(path, sep)
        head = next(records, None)
        header = [h.strip() for h in head.fields] if head is not None and head.fields else []
        columns = {h.lower(): i for i, h in enumerate(header)}
        bench = not any(c in columns for c in EDITED_COLUMNS) and BENCH_TYPE_COLUMN in columns
        if not bench and not any(c in columns for c in EDITED_COLUMNS):
            # An unknown layout: one unit error row naming what was found.
            raise ValueError(f"no edited-video column ({'/'.join(EDITED_COLUMNS)}) "
                             f"with separator {sep!r}; header: {header}")
        base = _Bases(self.video_bases(path.parent))
        make = self._bench_row if bench else self._pair_row
        i = 0  # records counted as before (parsed, non-blank), so ids keyed on position are unchanged
        for record in records:
            if record.fields is None:
                yield self.error_row(("csv-line", where, record.lineno), record.error,
                                     record={"line": record.lineno, "text": record.text}, subset=path.stem,
                                     split="bench" if bench else "train")
                continue
            if not any(cell.strip() for cell in record.fields):
                continue  # a line of separators only, not a record
            raw, fields = self._record(record.fields, header, columns)
            yield self.guarded(("row", where, i), raw, make, raw, fields, (where, i), path.stem, base,
                               subset=path.stem, split="bench" if bench else "train")
            i += 1

    # -- reading
    @staticmethod
    def _record(row: list[str], header: list[str], columns: dict[str, int]) -> tuple[dict, dict]:
        """(raw record, field view keyed by lower-cased column).

        A row whose width differs from the header keeps all its cells in ``_fields`` and is
        flagged, since its columns cannot be trusted to line up.
        """
        raw: dict[str, Any] = dict(zip(header, row))
        if len(row) != len(header):
            raw["_fields"] = row
        fields = {name: row[i] for name, i in columns.items() if i < len(row)}
        fields["_width_error"] = (f"row has {len(row)} fields, header has {len(header)}"
                                  if len(row) != len(header) else None)
        return raw, fields

    # -- rows
    def _category(self, stem: str, fields: dict) -> tuple[str, str]:
        category = category_of(stem)
        row_value = clean_text(_pick(fields, ROW_CATEGORY_COLUMNS))
        if category == "other" and row_value:
            return row_value, category_of(row_value)
        return stem, category

    def _pair_row(self, raw: dict, fields: dict, where: tuple, stem: str, base: str) -> dict[str, Any]:
        edited = clean_text(_pick(fields, EDITED_COLUMNS))
        source = clean_text(_pick(fields, SOURCE_COLUMNS))
        prompt = clean_text(_pick(fields, PROMPT_COLUMNS))
        category_raw, category = self._category(stem, fields)
        key = norm_rel(edited) if edited else ("row", *where)
        common = dict(subset=stem, split="train", category_raw=category_raw, category=category,
                      raw_record=to_json(raw))
        if fields["_width_error"]:
            return self.row(key, error=fields["_width_error"], **common)
        missing = [n for n, v in (("video", edited), ("original_video", source), ("prompt", prompt)) if v is None]
        if missing:
            return self.row(key, error=f"missing or empty field: {', '.join(missing)}", **common)
        try:
            source_uri, target_uri = base.find(source, "original_video"), base.find(edited, "video")
        except (PathEscapeError, ValueError) as e:
            return self.row(key, error=str(e), **common)
        return self.row(
            key, source_uri=source_uri, target_uri=target_uri, instruction=prompt,
            native_scores=numeric_scores(raw), skip_frames=self.cfg.skip_frames, **common,
        )

    def _bench_row(self, raw: dict, fields: dict, where: tuple, stem: str, base: str) -> dict[str, Any]:
        source = clean_text(_pick(fields, SOURCE_COLUMNS))
        prompt = clean_text(_pick(fields, PROMPT_COLUMNS))
        edited_type = clean_text(fields.get(BENCH_TYPE_COLUMN))
        # One source is benchmarked under several edit types, so the key is all three fields.
        key = ("bench", norm_rel(source), edited_type, prompt) if source else ("bench-row", *where)
        common = dict(subset=stem, split="bench", category_raw=edited_type,
                      category=category_of(edited_type) if edited_type else None, raw_record=to_json(raw))
        if fields["_width_error"]:
            return self.row(key, error=fields["_width_error"], **common)
        missing = [n for n, v in (("original_video", source), ("prompt", prompt)) if v is None]
        if missing:
            return self.row(key, error=f"missing or empty field: {', '.join(missing)}", **common)
        try:
            source_uri = base.find(source, "original_video")
        except (PathEscapeError, ValueError) as e:
            return self.row(key, error=str(e), **common)
        return self.row(key, source_uri=source_uri, instruction=prompt,
                        native_scores=numeric_scores(raw), skip_frames=self.cfg.skip_frames, **common)


class _Bases:
    """Finds a CSV path under the first of several base folders that has it; the folder of the
    last hit is tried first. A path leaving its base (``..``, a symlink out) is refused as it is
    met, even if another base would hold it: it says the CSV does not mean that folder."""

    def __init__(self, bases: list[Path]):
        self.bases = bases
        self._last = 0

    def find(self, rel: str, column: str) -> str:
        rel = norm_rel(rel)
        parts = rel.split("/")
        # A prefix from the authors' machine (".../OpenVE-3M/videos/<rest>"): <rest> in the first base.
        rest = None
        if "videos" in parts[:-1] and ".." not in parts:
            rest = "/".join(parts[len(parts) - parts[::-1].index("videos"):])
        tried = []
        if not (rel.startswith("/") and rest):  # an absolute path without videos/ is judged as written
            order = [self._last] + [i for i in range(len(self.bases)) if i != self._last]
            for i in order:
                path = resolve_under(self.bases[i], rel)
                if path.is_file():
                    self._last = i
                    return str(path)
                tried.append(str(path))
        if rest:
            path = resolve_under(self.bases[0], rest)
            if path.is_file():
                return str(path)
            tried.append(str(path))
        raise NotFoundError(column, rel, tried)
