"""NHR-Edit (Hugging Face iitolstykh/NHR-Edit): image edit triplets, in either of two layouts, from
the dataset root and, if configured, the separate repository iitolstykh/NHR-Edit-part2
(``part2_root``; same layouts, its rows keyed under ``part2`` so its ids cannot collide with
part 1's).

* ``jsonl``: ``train/metadata.jsonl`` plus ``train/images/NN/...``; one unit (the metadata file).
  File names are resolved relative to ``train/images`` unless they already start with
  ``images/`` (then relative to ``train/``) or ``train/`` (relative to the root). This is decided
  from the name alone, so ingest never stats the images (the probe stage does).
* ``parquet``: ``*.parquet`` files (e.g. ``data/train-*.parquet``) holding the images embedded as
  ``{bytes, path}`` structs or raw binary, either with the jsonl's metadata columns or in the
  short form ``source_image, edit_instruction, edited_image`` (358K rows, reported). One unit per
  file, read in record batches of the metadata columns only: image bytes are never read here.
  Images are addressed as ``parquet://<abs file>#<row>/<column>`` (row = 0-based index within
  the file). A string ``source_image`` / ``edited_image`` column is taken as file names, resolved
  like the jsonl layout's.

``layout: auto`` takes ``jsonl`` when ``train/metadata.jsonl`` exists, else ``parquet`` when any
parquet file exists; with neither, one error row says so (naming the root setting). The natural
key is the published ``sample_id``, so the same sample gets the same id in both layouts; the short
parquet form has none, so its rows are keyed by (file, row). ``extra`` holds ``kind``, ``style``,
``width``, ``height``.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from stages.ingest.base import Adapter, PathEscapeError, SourceRange, resolve_under, extra_json, to_json, unit_key
from stages.ingest.image_edit_common import (
    clean_text,
    int_or_none,
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
# Columns that may hold image *file names* (relative like the jsonl layout's) instead of bytes.
SOURCE_PATH_COLUMNS = ("source_image", "source_img", "original_image", "input_image", "source_file_name")
EDITED_PATH_COLUMNS = ("edited_image", "edited_img", "edit_image", "target_image", "output_image", "edited_file_name")
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
    # record fields read (curate inspect lists the others)
    fields_used = ("sample_id", "source_file_name", "edited_file_name", "edit_instruction",
                   "augmented_instructions", "category", "kind", "style", "img_width", "img_height",
                   *SOURCE_PATH_COLUMNS, *EDITED_PATH_COLUMNS, "*score*")

    # ------------------------------------------------------------------ units
    def _parquet_files(self, root: Path) -> list[Path]:
        # Hidden folders (.cache/huggingface ...) hold download state, not data; another configured
        # root inside this one (part 2 downloaded into part 1's folder) is read as its own.
        others = [r for r, _ in self._roots() if r != root and root in r.parents]
        return sorted(p for p in root.rglob("*.parquet")
                      if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
                      and not any(o in p.parents for o in others))

    def _roots(self) -> list[tuple[Path, str | None]]:
        """(root, tag): the dataset root, and the separate NHR-Edit-part2 repository if configured."""
        roots: list[tuple[Path, str | None]] = [(self.root, None)]
        if self.cfg.part2_root is not None:
            roots.append((Path(self.cfg.part2_root).expanduser().resolve(), "part2"))
        return roots

    def units(self) -> list[SourceRange]:
        return [u for root, tag in self._roots() for u in self._root_units(root, tag)]

    def _root_units(self, root: Path, tag: str | None) -> list[SourceRange]:
        layout = self.cfg.layout
        jsonl = root / JSONL_PATH
        parquets: list[Path] = []
        if layout == "auto":
            if jsonl.exists() and not jsonl.is_dir():  # a FIFO too: its unit says it is not a file
                layout = "jsonl"
            else:
                parquets = self._parquet_files(root)
                layout = "parquet" if parquets else "missing"
        elif layout == "parquet":
            parquets = self._parquet_files(root)
            if not parquets:
                layout = "missing"
        base = {"root": str(root), "tag": tag}
        if layout == "jsonl":
            return [SourceRange(self.name, unit_key(self.root, jsonl, *([tag] if tag else [])), str(jsonl),
                         {**base, "layout": "jsonl"})]
        if layout == "parquet":
            return [SourceRange(self.name, unit_key(self.root, p, *([tag] if tag else [])), str(p),
                         {**base, "layout": "parquet"}) for p in parquets]
        return [SourceRange(self.name, unit_key(self.root, root, "missing-layout", *([tag] if tag else [])), str(root),
                     {**base, "layout": "missing", "configured": self.cfg.layout})]

    def read(self, unit: SourceRange) -> Iterator[dict[str, Any]]:
        layout = unit.params.get("layout")
        root, tag = Path(unit.params.get("root", self.root)), unit.params.get("tag")
        if layout == "jsonl":
            yield from self._read_jsonl(Path(unit.path), root, tag)
        elif layout == "parquet":
            yield from self._read_parquet(Path(unit.path), root, tag)
        else:
            want = unit.params.get("configured")
            field = "part2_root" if tag else "root"
            yield self.error_row(
                ("missing-layout", str(root)),
                f"no NHR-Edit layout under {root} ({field}, layout={want}): expected {JSONL_PATH} or *.parquet files",
                record={"root": str(root), "layout": want},
                split="train",
            )

    # ------------------------------------------------------------------ rows
    def _key(self, rec: dict[str, Any], where: tuple[Any, ...], tag: str | None = None) -> tuple[Any, ...]:
        """The published sample_id; failing that the file-name pair; failing that the position.
        Rows of the part-2 repository are keyed under its tag (its ids may repeat part 1's)."""
        prefix = (tag,) if tag else ()
        sid = label_text(rec.get("sample_id"))
        if sid:
            return (*prefix, sid)
        names = (label_text(rec.get("source_file_name")), label_text(rec.get("edited_file_name")))
        if any(names):
            return (*prefix, "files", *names)
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
            extra=extra_json(kind=label_text(rec.get("kind")), style=label_text(rec.get("style")),
                             width=int_or_none(rec.get("img_width")), height=int_or_none(rec.get("img_height"))),
        )
        if problem is None and values["instruction"] is None:
            problem = "empty edit_instruction"
        if problem is not None:
            return self.error_row(key, problem, record=rec, **values)
        return self.row(key, raw_record=to_json(rec), **values)

    # ------------------------------------------------------------------ jsonl layout
    def _image_path(self, rel: Any, root: Path | None = None) -> Path:
        name = clean_text(rel)
        if name is None:
            raise ValueError("empty file name")
        name = name.replace("\\", "/")
        first = PurePosixPath(name).parts[0] if PurePosixPath(name).parts else ""
        base = {"train": "", "images": "train"}.get(first, "train/images")
        return resolve_under(root or self.root, f"{base}/{name}" if base else name)

    def _read_jsonl(self, path: Path, root: Path, tag: str | None) -> Iterator[dict[str, Any]]:
        rel = posix_rel(path, root) if not tag else f"{tag}:{posix_rel(path, root)}"
        if not path.exists():
            yield self.error_row(("missing-file", rel), f"missing {rel}", record={"path": str(path)}, split="train")
            return
        for lineno, text, rec, err in iter_json_lines(path):
            if rec is None:
                yield self.error_row(("position", rel, lineno), err, record={"line": lineno, "text": text},
                                     split="train")
                continue
            yield self.guarded(("position", rel, lineno), rec, self._jsonl_row, rec, rel, lineno, root, tag,
                               split="train")

    def _jsonl_row(self, rec: dict, rel: str, lineno: int, root: Path, tag: str | None) -> dict[str, Any]:
        uris: list[str | None] = []
        problem = None
        for field in ("source_file_name", "edited_file_name"):
            try:
                uris.append(str(self._image_path(rec.get(field), root)))
            except PathEscapeError as e:
                uris.append(None)
                problem = problem or f"{field}: {e}"
            except ValueError as e:  # missing, or a name no file system can hold
                uris.append(None)
                empty = str(e) in ("empty file name", "empty path")
                problem = problem or (f"missing {field}" if empty else f"{field}: {e}")
        return self._record_row(rec, self._key(rec, (rel, lineno), tag), uris[0], uris[1], problem)

    # ------------------------------------------------------------------ parquet layout
    def _read_parquet(self, path: Path, root: Path, tag: str | None) -> Iterator[dict[str, Any]]:
        rel = posix_rel(path, root) if not tag else f"{tag}:{posix_rel(path, root)}"
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
        source_col = pick_image_column(schema, SOURCE_COLUMNS, SOURCE_HINTS)
        edited_col = pick_image_column(schema, EDITED_COLUMNS, EDITED_HINTS, exclude=source_col)
        # Every image-typed column is left unread (masks too): only metadata enters the manifest.
        meta_cols = [f.name for f in schema if not is_image_type(f.type)]
        # An export holding file names instead of bytes: string columns of the image names.
        path_cols = {role: next((n for n in names if n in meta_cols and pa.types.is_string(schema.field(n).type)), None)
                     for role, names, col in (("source", SOURCE_PATH_COLUMNS, source_col),
                                              ("edited", EDITED_PATH_COLUMNS, edited_col)) if col is None}
        problem = None
        missing = [role for role, col in (("source", source_col), ("edited", edited_col))
                   if col is None and not path_cols.get(role)]
        if missing:
            image_cols = [f.name for f in schema if is_image_type(f.type)]
            problem = f"no {missing[0]} image column in {rel} (image columns: {image_cols or 'none'})"
        abs_path = path.resolve()
        row = 0
        for batch in self._metadata_batches(pf, meta_cols):
            for rec in batch:
                key = self._key(rec, (rel, row), tag)
                uris, row_problem = [], problem
                for role, col in (("source", source_col), ("edited", edited_col)):
                    if col is not None:
                        uris.append(parquet_uri(abs_path, row, col))
                    elif path_cols.get(role):
                        try:
                            uris.append(str(self._image_path(rec.get(path_cols[role]), root)))
                        except (PathEscapeError, ValueError) as e:
                            uris.append(None)
                            row_problem = row_problem or f"{path_cols[role]}: {e}"
                    else:
                        uris.append(None)
                yield self.guarded(("position", rel, row), rec, self._record_row, rec, key, uris[0], uris[1],
                                   row_problem, split="train")
                row += 1

    @staticmethod
    def _metadata_batches(pf: pq.ParquetFile, columns: list[str]) -> Iterator[list[dict[str, Any]]]:
        if columns:
            for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns):
                yield batch.to_pylist()
        else:  # images only, no metadata: still one row per record
            for group in range(pf.metadata.num_row_groups):
                yield [{} for _ in range(pf.metadata.row_group(group).num_rows)]
