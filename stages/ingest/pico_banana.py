"""Pico-Banana-400K (github.com/apple/pico-banana-400k): ``jsonl/{sft,preference,multi-turn}.jsonl``.

One unit per configured split file (``cfg.splits``, default ``sft``); ``split`` is the file's name.

* sft: ``{open_image_input_url, text, output_image, edit_type, summarized_text}``.
* preference: the same plus ``rejected_images`` (the failed edits, kept in ``raw_record``); the
  row's target is the successful ``output_image``.
* multi-turn: ``{files: [{id: "original_input_image", url}, {id: "edit_turn1", url}, ...,
  {id: "final_image", url}], metadata_edit_turn_prompts: [...]}``: one row per turn, the source
  of turn k being the image of turn k-1 (the original for turn 1).

Source images are Open Images photos the user downloads separately: the source of a record is
``cfg.image_root / <file name of the URL>`` (or ``local_input_image`` when the record carries the
path the official mapping script adds). Ingest does not check that the file is there: the probe
stage reports it missing. The URL stays in ``raw_record``. Edited images (``output_image``, turn
images) are relative to ``cfg.output_root`` (default: the dataset root).

The 35 edit types (8 groups) map to the normalised categories by keywords
(:func:`stages.ingest.image_edit_common.keyword_category`); ``edit_type`` is kept raw.
Natural keys: ``(split, output_image)``; for multi-turn ``(split, turn image, turn index)``.
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any, Iterator
from urllib.parse import unquote, urlparse

from stages.ingest.base import Adapter, PathEscapeError, Unit, resolve_under, to_json, unit_key
from stages.ingest.image_edit_common import (
    clean_text,
    iter_json_lines,
    keyword_category,
    label_text,
    numeric_scores,
    posix_rel,
    text_list,
)

# The file names a split is published under (the multi-turn file is spelled both ways).
SPLIT_FILES = {
    "sft": ("jsonl/sft.jsonl",),
    "preference": ("jsonl/preference.jsonl",),
    "multi-turn": ("jsonl/multi-turn.jsonl", "jsonl/multi_turn.jsonl"),
}
ORIGINAL_ID = "original_input_image"
FINAL_ID = "final_image"
TURN_ID = re.compile(r"edit_turn_?(\d+)$")


def url_file_name(url: str) -> str | None:
    """The file name a downloaded copy of ``url`` carries: the last path segment, unquoted."""
    name = PurePosixPath(unquote(urlparse(url).path)).name
    return name or None


def edit_category(edit_type: str | None) -> str:
    return keyword_category(edit_type)


class PicoBananaAdapter(Adapter):
    name = "pico_banana"
    modality = "image"
    task = "edit"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.image_root = Path(cfg.image_root).expanduser().resolve()
        self.output_root = Path(cfg.output_root).expanduser().resolve() if cfg.output_root else self.root

    def units(self) -> list[Unit]:
        units = []
        for split in dict.fromkeys(self.cfg.splits):  # de-duplicated, in the configured order
            candidates = [self.root / rel for rel in SPLIT_FILES[split]]
            path = next((p for p in candidates if p.is_file()), candidates[0])
            units.append(Unit(self.name, unit_key(self.root, path, split), str(path), {"split": split}))
        return units

    # ------------------------------------------------------------------ locations
    def _source(self, rec: dict[str, Any], url: Any) -> str:
        """Local path of an Open Images source: ``local_input_image`` if given, else the URL's
        file name under image_root. Raises ValueError when neither is usable."""
        local = clean_text(rec.get("local_input_image"))
        if local:
            # The user's own mapping: an absolute path is taken as is, a relative one is under
            # image_root (the probe stage still checks it lies under an allowed root).
            if Path(local).is_absolute():
                return str(Path(local).resolve())
            return str(resolve_under(self.image_root, local))
        url = clean_text(url)
        if url is None:
            raise ValueError("missing open_image_input_url")
        name = url_file_name(url)
        if name is None:
            raise ValueError(f"no file name in source URL {url!r}")
        return str(resolve_under(self.image_root, name))

    def _output(self, rel: Any) -> str:
        rel = clean_text(rel)
        if rel is None:
            raise ValueError("missing output image path")
        return str(resolve_under(self.output_root, rel))

    # ------------------------------------------------------------------ reading
    def read(self, unit: Unit) -> Iterator[dict[str, Any]]:
        split = unit.params["split"]
        path = Path(unit.path)
        rel = posix_rel(path, self.root)
        if not path.is_file():
            yield self.error_row((split, "missing-file"), f"missing {rel} (split {split!r})",
                                 record={"path": str(path), "split": split}, split=split)
            return
        for lineno, text, rec, err in iter_json_lines(path):
            if rec is None:
                yield self.error_row((split, "line", lineno), err, record={"line": lineno, "text": text}, split=split)
            elif split == "multi-turn":
                yield from self._multi_turn_rows(split, lineno, rec)
            else:
                yield self._single_turn_row(split, lineno, rec)

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
        )
        problems = []
        try:
            values["source_uri"] = self._source(rec, rec.get("open_image_input_url"))
        except (PathEscapeError, ValueError) as e:
            problems.append(f"source: {e}")
        try:
            values["target_uri"] = self._output(output)
        except (PathEscapeError, ValueError) as e:
            problems.append(f"output_image: {e}")
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
                    problems.append(f"source: {e}")
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
