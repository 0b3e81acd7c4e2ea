"""Ditto-1M adapter (Hugging Face QingyanBai/Ditto-1M).

Published layout (see DATASETS.md):

* ``training_metadata/*.json``: JSON lists of ``{source_path, instruction, edited_path}``; one unit
  per file. ``csvs_for_DiffSynth/*.csv`` (columns ``video`` = edited, ``vace_video`` = source,
  ``prompt``) carry the same pairs; point ``metadata_glob`` at them to read those instead. Both give
  the same sample ids, since the id comes from the edited path, not from the file it was listed in.
* ``videos/{source,local,global_style1,global_style2,global_freeform1..3}/``: edited files are
  ``<hash>_<n>.mp4`` next to the source ``source/<hash>.mp4``. The archives may extract nested
  (``videos/source/source/<hash>.mp4``).

There is no category column: the category is the first folder of ``edited_path``.

Source captions (``source_video_captions/*.json``, lists of ``{path, caption}``) spell the path
*without* the ``source/`` folder (``0000/<hash>.mp4``, as third-party loaders that read the real
files show: ltx-trainer ``preprocess_ditto_subset.py`` keys them by the hash stem). They are keyed
here by that path and by the hash, so ``source/0000/<hash>.mp4`` finds its caption either way.

Metadata paths are taken to start at the category folder (``global_style1/<hash>_1.mp4``), but a
``videos/`` prefix or an absolute prefix from the authors' machine is tolerated: the path is
anchored at its first known category folder. Each path is then looked for in four places
(``videos/`` or the root, plain or nested) and the first that exists wins; if none exists the row is
an error that lists the places looked in.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterator

from stages.ingest.base import Adapter, PathEscapeError, SourceRange, metadata_files, to_json, unit_key
from stages.ingest.csv_records import iter_csv_records
from stages.ingest.video_pairs import (
    LayoutProbe, NotFoundError, candidate_paths, clean_text, json_records, missing_text_fields, norm_rel,
    numeric_scores,
)

FIELDS = ("source_path", "instruction", "edited_path")
# The DiffSynth-Studio training CSVs name the same three fields differently.
DIFFSYNTH_COLUMNS = {"edited_path": "video", "source_path": "vace_video", "instruction": "prompt"}
CAPTIONS_GLOB = "source_video_captions/*.json"

_FOLDER = re.compile(r"^(source|local\w*|global_(style|freeform)\d*)$")


def category_of(folder: str) -> str:
    """Normalised category of an edited-video folder (``global_style2`` -> ``style``)."""
    if re.fullmatch(r"global_style\d*", folder):
        return "style"
    if re.fullmatch(r"global_freeform\d*", folder):
        return "freeform"
    if folder.startswith("local"):
        return "local_change"
    return "other"


def canonical_path(path: str) -> str:
    """The path relative to ``videos/``, with nesting and foreign prefixes removed.

    ``videos/global_style1/x_1.mp4``, ``/data/Ditto-1M/videos/global_style1/x_1.mp4`` and
    ``global_style1/global_style1/x_1.mp4`` all become ``global_style1/x_1.mp4``. Paths with
    ``..`` are left alone so that ``resolve_under`` judges them as written.
    """
    written = norm_rel(path)
    parts = [p for p in written.split("/") if p]
    if ".." in parts:
        return written
    anchor = next((i for i, p in enumerate(parts) if _FOLDER.match(p)), None)
    if anchor is None:
        # Not a known layout: keep it as written (an absolute path stays absolute).
        return "/".join(parts[1:]) if parts and parts[0] == "videos" else written
    parts = parts[anchor:]
    if len(parts) > 2 and parts[1] == parts[0]:
        parts = parts[:1] + parts[2:]
    return "/".join(parts)


class DittoAdapter(Adapter):
    name = "ditto"
    # record fields read (curate inspect lists the others); *score* fields become native_scores
    fields_used = (*FIELDS, *DIFFSYNTH_COLUMNS.values(), "*score*")

    def __init__(self, cfg):
        super().__init__(cfg)
        self._captions: dict[str, str] | None = None

    def units(self) -> list[SourceRange]:
        files = metadata_files(self.root, self.cfg.metadata_glob)
        return [SourceRange(self.name, unit_key(self.root, p), str(p)) for p in files]

    def read(self, unit: SourceRange) -> Iterator[dict[str, Any]]:
        path = Path(unit.path)
        where = os.path.relpath(path, self.root)
        probes: dict[str, LayoutProbe] = {}  # one per top folder: archives extract independently
        for i, (raw, fields) in enumerate(self._records(path)):
            yield self.guarded(("record", where, i), raw, self._row, raw, fields, (where, i), path.stem, probes,
                               subset=path.stem, split="train")

    # -- reading the two metadata formats into (raw record, the three fields)
    def _records(self, path: Path) -> Iterator[tuple[Any, dict[str, Any] | None]]:
        if path.suffix.lower() == ".csv":
            records = iter_csv_records(path, ",")
            head = next(records, None)
            header = head.fields if head is not None and head.fields else []
            for record in records:
                if record.fields is None or len(record.fields) != len(header):
                    error = record.error or f"row has {len(record.fields)} fields, header has {len(header)}"
                    yield {"line": record.lineno, "text": record.text}, {"_error": error}
                    continue
                row = dict(zip(header, record.fields))
                yield row, {k: row.get(col) for k, col in DIFFSYNTH_COLUMNS.items()}
            return
        # A malformed file raises here, before any row: the core turns it into one unit error row.
        for rec in json_records(json.loads(path.read_bytes())):
            yield rec, rec if isinstance(rec, dict) else None

    def _row(self, raw: Any, fields: dict | None, where: tuple, subset: str,
             probes: dict[str, LayoutProbe]) -> dict[str, Any]:
        common = dict(subset=subset, split="train", raw_record=to_json(raw))
        if fields is None:
            return self.row(("record", *where), error="record is not a JSON object", **common)
        if "_error" in fields:  # a CSV record that could not be parsed
            return self.row(("record", *where), error=fields["_error"], **common)
        edited, source, instruction = (clean_text(fields.get(f)) for f in
                                       ("edited_path", "source_path", "instruction"))
        # Natural key: the edited path (canonical, so every spelling of it gives the same id);
        # a record without one falls back to its position in its metadata file.
        rel = canonical_path(edited) if edited else ""
        key = rel if edited else ("record", *where)
        folder = rel.split("/")[0] if "/" in rel else ""
        if folder not in ("", ".", ".."):
            common.update(category_raw=folder, category=category_of(folder))
        missing = missing_text_fields((f, fields.get(f)) for f in FIELDS)
        if missing:
            return self.row(key, error=missing, **common)
        try:
            source_uri = self._resolve(source, probes, "source_path")
            target_uri = self._resolve(edited, probes, "edited_path")
        except (PathEscapeError, ValueError) as e:
            return self.row(key, error=str(e), **common)
        return self.row(
            key,
            source_uri=str(source_uri),
            target_uri=str(target_uri),
            instruction=instruction,
            caption=self._caption_for(source),
            native_scores=numeric_scores(raw) if isinstance(raw, dict) else None,
            **common,
        )

    def _resolve(self, path: str, probes: dict[str, LayoutProbe], what: str) -> Path:
        rel = canonical_path(path)
        if rel.startswith("/"):  # absolute, and no known folder in it: judged as written
            [only] = candidate_paths(self.root, [rel], path)
            if only.is_file():
                return only
            raise NotFoundError(what, path, [str(only)])
        parts = rel.split("/")
        folder = parts[0]
        variants = [f"videos/{rel}", rel]
        if len(parts) > 1 and folder != "..":
            variants = [f"videos/{rel}", f"videos/{folder}/{rel}", rel, f"{folder}/{rel}"]
        candidates = candidate_paths(self.root, variants, path)
        hit = probes.setdefault(folder, LayoutProbe()).pick(candidates)
        if hit is None:
            raise NotFoundError(what, path, [str(c) for c in candidates if c is not None])
        return hit

    # -- optional source captions: source_video_captions/*.json lists of {path, caption}
    def _caption_for(self, source: str) -> str | None:
        if self._captions is None:
            self._captions = self._load_captions()
        if not self._captions:
            return None
        rel = caption_key(source)
        return self._captions.get(rel) or self._captions.get(hash_key(rel))

    def _load_captions(self) -> dict[str, str]:
        captions: dict[str, str] = {}
        for path in sorted(self.root.glob(CAPTIONS_GLOB)):
            try:
                records = json_records(json.loads(path.read_bytes()))
            except (OSError, ValueError):
                # Captions are auxiliary: a broken captions file must not turn every pair into
                # an error row. The pairs still come through, without a caption.
                continue
            for rec in records:
                if isinstance(rec, dict) and clean_text(rec.get("path")) and clean_text(rec.get("caption")):
                    rel, caption = caption_key(rec["path"]), clean_text(rec["caption"])
                    captions[rel] = caption
                    captions.setdefault(hash_key(rel), caption)
        return captions


def caption_key(path: str) -> str:
    """A source path as the captions files spell it: relative to ``videos/source/``
    (``source/0000/x.mp4``, ``videos/source/source/0000/x.mp4`` and ``0000/x.mp4`` -> ``0000/x.mp4``)."""
    rel = canonical_path(path)
    return rel[len("source/"):] if rel.startswith("source/") else rel


def hash_key(rel: str) -> str:
    """``#<hash>``: the source file's stem, shared by its edited files (``<hash>_<n>.mp4``)."""
    return "#" + re.sub(r"_\d+$", "", Path(rel).stem)
