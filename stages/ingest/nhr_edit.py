"""NHR-Edit (Hugging Face iitolstykh/NHR-Edit): image edit triplets, in either of two layouts.

* ``jsonl``: ``train/metadata.jsonl`` plus ``train/images/NN/...``; one unit (the metadata file).
  File names are resolved relative to ``train/images`` unless they already start with
  ``images/`` (then relative to ``train/``) or ``train/`` (relative to the root). This is decided
  from the name alone, so ingest never stats the images (the probe stage does).
* ``parquet``: ``*.parquet`` files (e.g. ``data/train-*.parquet``) holding the same metadata
  columns plus the source and edited images embedded as ``{bytes, path}`` structs or raw binary.
  One unit per file, read in record batches of the metadata columns only: image bytes are never
  read here. Images are addressed as ``parquet://<abs file>#<row>/<column>`` (row = 0-based
  index within the file).

``layout: auto`` takes ``jsonl`` when ``train/metadata.jsonl`` exists, else ``parquet`` when any
parquet file exists; with neither, one error row says so. The natural key is the published
``sample_id``, so the same sample gets the same id in both layouts.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from stages.ingest.base import Adapter, PathEscapeError, Unit, resolve_under, to_json, unit_key
from stages.ingest.image_edit_common import (
    clean_text,
    iter_json_lines,
    keyword_category,
    label_text,
    numeric_scores,
    parquet_uri,
    posix_rel,
    text_list,
)

JSONL_PATH = "train/metadata.jsonl"
BATCH_ROWS = 1024  # metadata rows per parquet record batch (bounded memory)

# Image column names, most specific first; others are recognised by type plus a name hint.
SOURCE_COLUMNS = ("source_image", "source_img", "src_img", "original_image", "input_image",
                  "source", "original", "input", "image")
EDITED_COLUMNS = ("edited_image", "edited_img", "edit_image", "target_image", "output_image",
                  "edited", "target", "output")
SOURCE_HINTS = ("source", "src", "orig", "input")
EDITED_HINTS = ("edit", "target", "tgt", "output")


def is_image_type(t: pa.DataType) -> bool:
    """Embedded image cells: raw binary, or the Hugging Face ``{bytes, path}`` struct."""
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return True
    return pa.types.is_struct(t) and any(t.field(i).name == "bytes" for i in range(t.num_fields))


def pick_image_column(schema: pa.Schema, names: tuple[str, ...], hints: tuple[str, ...],
                      exclude: str | None = None) -> str | None:
    images = [f.name for f in schema if is_image_type(f.type) and f.name != exclude]
    for name in names:
        if name in images:
            return name
    for name in images:
        if any(h in name.lower() for h in hints):
            return name
    return None


class NHREditAdapter(Adapter):
    name = "nhr_edit"
    modality = "image"
    task = "edit"

    # ------------------------------------------------------------------ units
    def _parquet_files(self) -> list[Path]:
        # Hidden folders (.cache/huggingface ...) hold download state, not data.
        return sorted(p for p in self.root.rglob("*.parquet")
                      if p.is_file() and not any(part.startswith(".") for part in p.relative_to(self.root).parts))

    def units(self) -> list[Unit]:
        layout = self.cfg.layout
        jsonl = self.root / JSONL_PATH
        parquets: list[Path] = []
        if layout == "auto":
            if jsonl.is_file():
                layout = "jsonl"
            else:
                parquets = self._parquet_files()
                layout = "parquet" if parquets else "missing"
        elif layout == "parquet":
            parquets = self._parquet_files()
            if not parquets:
                layout = "missing"
        if layout == "jsonl":
            return [Unit(self.name, unit_key(self.root, jsonl), str(jsonl), {"layout": "jsonl"})]
        if layout == "parquet":
            return [Unit(self.name, unit_key(self.root, p), str(p), {"layout": "parquet"}) for p in parquets]
        return [Unit(self.name, unit_key(self.root, self.root, "missing-layout"), str(self.root),
                     {"layout": "missing", "configured": self.cfg.layout})]

    def read(self, unit: Unit) -> Iterator[dict[str, Any]]:
        layout = unit.params.get("layout")
        if layout == "jsonl":
            yield from self._read_jsonl(Path(unit.path))
        elif layout == "parquet":
            yield from self._read_parquet(Path(unit.path))
        else:
            want = unit.params.get("configured")
            yield self.error_row(
                ("missing-layout", str(self.root)),
                f"no NHR-Edit layout under the root (layout={want}): expected {JSONL_PATH} or *.parquet files",
                record={"root": str(self.root), "layout": want},
                split="train",
            )

    # ------------------------------------------------------------------ rows
    def _key(self, rec: dict[str, Any], where: tuple[Any, ...]) -> tuple[Any, ...]:
        """The published sample_id; failing that the file-name pair; failing that the position."""
        sid = label_text(rec.get("sample_id"))
        if sid:
            return (sid,)
        names = (label_text(rec.get("source_file_name")), label_text(rec.get("edited_file_name")))
        if any(names):
            return ("files", *names)
        return ("position", *where)

    def _record_row(self, rec: dict[str, Any], key: tuple[Any, ...], source_uri: str | None,
                    target_uri: str | None, problem: str | None) -> dict[str, Any]:
        category_raw = label_text(rec.get("category"))
        values = dict(
            split="train",
            source_uri=source_uri,
            target_uri=target_uri,
            instruction=clean_text(rec.get("edit_instruction")),
            alt_instructions=text_list(rec.get("augmented_instructions")),
            category_raw=category_raw,
            category=keyword_category(category_raw, label_text(rec.get("kind"))),
            native_scores=numeric_scores(rec),
        )
        if problem is None and values["instruction"] is None:
            problem = "empty edit_instruction"
        if problem is not None:
            return self.error_row(key, problem, record=rec, **values)
        return self.row(key, raw_record=to_json(rec), **values)

    # ------------------------------------------------------------------ jsonl layout
    def _image_path(self, rel: Any) -> Path:
        name = clean_text(rel)
        if name is None:
            raise ValueError("empty file name")
        name = name.replace("\\", "/")
        first = PurePosixPath(name).parts[0] if PurePosixPath(name).parts else ""
        base = {"train": "", "images": "train"}.get(first, "train/images")
        return resolve_under(self.root, f"{base}/{name}" if base else name)

    def _read_jsonl(self, path: Path) -> Iterator[dict[str, Any]]:
        rel = posix_rel(path, self.root)
        if not path.is_file():
            yield self.error_row(("missing-file", rel), f"missing {rel}", record={"path": str(path)}, split="train")
            return
        for lineno, text, rec, err in iter_json_lines(path):
            if rec is None:
                yield self.error_row(("position", rel, lineno), err, record={"line": lineno, "text": text},
                                     split="train")
                continue
            uris: list[str | None] = []
            problem = None
            for field in ("source_file_name", "edited_file_name"):
                try:
                    uris.append(str(self._image_path(rec.get(field))))
                except PathEscapeError as e:
                    uris.append(None)
                    problem = problem or f"{field}: {e}"
                except ValueError:
                    uris.append(None)
                    problem = problem or f"missing {field}"
            yield self._record_row(rec, self._key(rec, (rel, lineno)), uris[0], uris[1], problem)

    # ------------------------------------------------------------------ parquet layout
    def _read_parquet(self, path: Path) -> Iterator[dict[str, Any]]:
        rel = posix_rel(path, self.root)
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
        source_col = pick_image_column(schema, SOURCE_COLUMNS, SOURCE_HINTS)
        edited_col = pick_image_column(schema, EDITED_COLUMNS, EDITED_HINTS, exclude=source_col)
        # Every image-typed column is left unread (masks too): only metadata enters the manifest.
        meta_cols = [f.name for f in schema if not is_image_type(f.type)]
        problem = None
        if source_col is None or edited_col is None:
            image_cols = [f.name for f in schema if is_image_type(f.type)]
            problem = (f"no {'source' if source_col is None else 'edited'} image column in {rel} "
                       f"(image columns: {image_cols or 'none'})")
        abs_path = path.resolve()
        row = 0
        for batch in self._metadata_batches(pf, meta_cols):
            for rec in batch:
                key = self._key(rec, (rel, row))
                yield self._record_row(
                    rec, key,
                    parquet_uri(abs_path, row, source_col) if source_col else None,
                    parquet_uri(abs_path, row, edited_col) if edited_col else None,
                    problem,
                )
                row += 1

    @staticmethod
    def _metadata_batches(pf: pq.ParquetFile, columns: list[str]) -> Iterator[list[dict[str, Any]]]:
        if columns:
            for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns):
                yield batch.to_pylist()
        else:  # images only, no metadata: still one row per record
            for group in range(pf.metadata.num_row_groups):
                yield [{} for _ in range(pf.metadata.row_group(group).num_rows)]
