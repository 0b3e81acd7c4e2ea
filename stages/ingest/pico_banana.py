"""Pico-Banana-400K (github.com/apple/pico-banana-400k): ``jsonl/{sft,preference,multi-turn}.jsonl``.

One unit per configured split file (``cfg.splits``, default ``sft``); ``split`` is the file's name.

* sft: ``{open_image_input_url, text, output_image, edit_type, summarized_text}``.
* preference: the same plus ``rejected_images`` (the failed edits, in ``extra`` and
  ``raw_record``); the row's target is the successful ``output_image``.
* multi-turn: ``{files: [{id: "original_input_image", url}, {id: "edit_turn1", url}, ...,
  {id: "final_image", url}], metadata_edit_turn_prompts: [...]}``: one row per turn, the source
  of turn k being the image of turn k-1 (the original for turn 1).

Source images are Open Images photos the user downloads separately, found (first existing wins,
see :mod:`stages.ingest.pico_sources`) through ``local_input_image`` (what Apple's
``map_openimage_url_to_local.py`` adds, relative to ``local_input_base``), the URL's ImageID from
Open Images' ``train-images-boxable-with-rotation.csv`` (``openimages_csv``) as
``<image_root>[/train_*]/<ImageID>.jpg``, or the URL's own file name under ``image_root``. Edited
images are relative to ``output_root``, else Apple's ``nb/`` folder, else the root. A row whose
image is nowhere is an error that lists every place tried. The URL stays in ``raw_record``;
``extra`` has ``image_id``.

The 35 edit types (8 groups) map to the normalised categories by keywords
(:func:`stages.ingest.image_edit_common.keyword_category`); ``edit_type`` is kept raw.
Natural keys: ``(split, output_image)``; for multi-turn ``(split, turn image, turn index)``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

from stages.ingest.base import Adapter, PathEscapeError, SourceRange, extra_json, to_json, unit_key
from stages.ingest.image_edit_common import (
    clean_text,
    iter_json_lines,
    keyword_category,
    label_text,
    numeric_scores,
    posix_rel,
    text_list,
)
from stages.ingest.pico_sources import ImageLocator, NotFound, url_image_ids

# The file names a split is published under (the multi-turn file is spelled both ways; Apple's
# CDN serves them under nb/jsonl/).
SPLIT_FILES = {
    "sft": ("jsonl/sft.jsonl", "nb/jsonl/sft.jsonl"),
    "preference": ("jsonl/preference.jsonl", "nb/jsonl/preference.jsonl"),
    "multi-turn": ("jsonl/multi-turn.jsonl", "jsonl/multi_turn.jsonl", "nb/jsonl/multi-turn.jsonl",
                   "nb/jsonl/multi_turn.jsonl"),
}
ORIGINAL_ID = "original_input_image"
FINAL_ID = "final_image"
TURN_ID = re.compile(r"edit_turn_?(\d+)$")


def edit_category(edit_type: str | None) -> str:
    return keyword_category(edit_type)


class PicoBananaAdapter(Adapter):
    name = "pico_banana"
    modality = "image"
    task = "edit"
    # record fields read (curate inspect lists the others)
    fields_used = ("open_image_input_url", "local_input_image", "text", "output_image", "edit_type",
                   "summarized_text", "rejected_images", "files", "metadata_edit_turn_prompts",
                   "metadata_edit_turn_types", "edit_types", "*score*")

    def __init__(self, cfg):
        super().__init__(cfg)
        self.image_root = Path(cfg.image_root).expanduser().resolve()
        self.output_root = Path(cfg.output_root).expanduser().resolve() if cfg.output_root else None
        base = Path(cfg.local_input_base).expanduser().resolve() if cfg.local_input_base else None
        self.locate = ImageLocator(self.root, self.image_root, self.output_root, base)
        self.csv = Path(cfg.openimages_csv).expanduser().resolve() if cfg.openimages_csv else None
        self._image_ids: dict[str, str] = {}  # OriginalURL -> ImageID for the unit being read

    def units(self) -> list[SourceRange]:
        units = []
        for split in dict.fromkeys(self.cfg.splits):  # de-duplicated, in the configured order
            candidates = [self.root / rel for rel in SPLIT_FILES[split]]
            path = next((p for p in candidates if p.is_file()), candidates[0])
            units.append(SourceRange(self.name, unit_key(self.root, path, split), str(path), {"split": split}))
        return units

    # ------------------------------------------------------------------ locations
    def _source(self, rec: dict[str, Any], url: Any) -> str:
        """Local path of an Open Images source (see stages.ingest.pico_sources for the places
        tried). Raises ValueError (NotFound lists the places) or PathEscapeError."""
        url = clean_text(url)
        return self.locate.source(clean_text(rec.get("local_input_image")), url,
                                  self._image_ids.get(url) if url else None, self.csv is not None)

    def _output(self, rel: Any) -> str:
        return self.locate.output(clean_text(rel))

    def _load_image_ids(self, path: Path) -> None:
        """The CSV's ImageIDs of this split's source URLs (one pass over the JSONL, one over the CSV)."""
        self._image_ids = {}
        if self.csv is None:
            return
        urls = []
        for _, _, rec, _ in iter_json_lines(path):
            if rec is None:
                continue
            urls.append(rec.get("open_image_input_url"))
            files = rec.get("files")
            if isinstance(files, list):
                urls += [f.get("url") for f in files if isinstance(f, dict) and f.get("id") == ORIGINAL_ID]
        self._image_ids = url_image_ids(self.csv, (u.strip() for u in urls if isinstance(u, str)))

    # ------------------------------------------------------------------ reading
    def read(self, unit: SourceRange) -> Iterator[dict[str, Any]]:
        split = unit.params["split"]
        path = Path(unit.path)
        rel = posix_rel(path, self.root)
        if not path.exists():
            yield self.error_row((split, "missing-file"), f"missing {rel} (split {split!r})",
                                 record={"path": str(path), "split": split}, split=split)
            return
        self._load_image_ids(path)
        for lineno, text, rec, err in iter_json_lines(path):
            if rec is None:
                yield self.error_row((split, "line", lineno), err, record={"line": lineno, "text": text}, split=split)
            elif split == "multi-turn":
                try:  # a turn's rows are built before any is yielded, so a failure loses no row twice
                    rows = list(self._multi_turn_rows(split, lineno, rec))
                except Exception as e:  # noqa: BLE001 - the record's failure is its error row
                    rows = [self.guarded((split, "line", lineno), rec, _raise, e, split=split)]
                yield from rows
            else:
                yield self.guarded((split, "line", lineno), rec, self._single_turn_row, split, lineno, rec,
                                   split=split)

    def _single_turn_row(self, split: str, lineno: int, rec: dict[str, Any]) -> dict[str, Any]:
        output = clean_text(rec.get("output_image"))
        key = (split, output) if output else (split, "line", lineno)
        edit_type = label_text(rec.get("edit_type"))
        values: dict[str, Any] = dict(
            split=split,
            instruction=clean_text(rec.get("text")),
            alt_instructions=text_list(rec.get("summarized_text")),
            category_raw=edit_type,
            category=edit_category(edit_type),
            native_scores=numeric_scores(rec),
            extra=extra_json(image_id=self._image_ids.get(clean_text(rec.get("open_image_input_url")) or ""),
                             rejected_images=text_list(rec.get("rejected_images"))),
        )
        problems = []
        try:
            values["source_uri"] = self._source(rec, rec.get("open_image_input_url"))
        except (PathEscapeError, ValueError) as e:
            problems.append(str(e) if isinstance(e, NotFound) else f"source: {e}")
        try:
            values["target_uri"] = self._output(output)
        except (PathEscapeError, ValueError) as e:
            problems.append(str(e) if isinstance(e, NotFound) else f"output_image: {e}")
        if values["instruction"] is None:
            problems.append("empty text (instruction)")
        if problems:
            return self.error_row(key, "; ".join(problems), record=rec, **values)
        return self.row(key, raw_record=to_json(rec), **values)

    def _multi_turn_rows(self, split: str, lineno: int, rec: dict[str, Any]) -> Iterator[dict[str, Any]]:
        prompts = rec.get("metadata_edit_turn_prompts")
        files = rec.get("files")
        if not isinstance(prompts, list) or not prompts or not isinstance(files, list):
            yield self.error_row((split, "line", lineno),
                                 "expected files: [...] and a non-empty metadata_edit_turn_prompts list",
                                 record=rec, split=split)
            return
        by_id = {str(f.get("id")): f.get("url") for f in files if isinstance(f, dict)}
        turn_images: dict[int, Any] = {}
        for file_id, url in by_id.items():
            m = TURN_ID.match(file_id)
            if m:
                turn_images[int(m.group(1))] = url
        n = len(prompts)
        if FINAL_ID in by_id:
            turn_images.setdefault(n, by_id[FINAL_ID])
        edit_types = rec.get("metadata_edit_turn_types", rec.get("edit_types"))
        record_id = clean_text(turn_images.get(n)) or clean_text(by_id.get(ORIGINAL_ID)) or f"line {lineno}"
        previous: str | None = None  # the previous turn's image, the next turn's source
        previous_problem: str | None = None
        for turn in range(1, n + 1):
            image = clean_text(turn_images.get(turn))
            key = (split, image, turn) if image else (split, record_id, turn)
            edit_type = label_text(edit_types[turn - 1]) if isinstance(edit_types, list) and turn <= len(edit_types) else None
            values: dict[str, Any] = dict(
                split=split,
                instruction=clean_text(prompts[turn - 1]),
                category_raw=edit_type,
                category=edit_category(edit_type),
            )
            problems = []
            if turn == 1:
                try:
                    values["source_uri"] = self._source(rec, by_id.get(ORIGINAL_ID))
                except (PathEscapeError, ValueError) as e:
                    problems.append(str(e) if isinstance(e, NotFound) else f"source: {e}")
            elif previous is not None:
                values["source_uri"] = previous
            else:
                problems.append(f"source: turn {turn - 1} has no usable image ({previous_problem})")
            try:
                values["target_uri"] = previous = self._output(image)
                previous_problem = None
            except (PathEscapeError, ValueError) as e:
                previous, previous_problem = None, f"turn {turn} image: {e}"
                problems.append(previous_problem)
            if values["instruction"] is None:
                problems.append(f"empty prompt for turn {turn}")
            raw = {"turn": turn, "turns": n, "record": rec}
            if problems:
                yield self.error_row(key, "; ".join(problems), record=raw, **values)
            else:
                yield self.row(key, raw_record=to_json(raw), **values)


def _raise(error: Exception):
    raise error
