"""GPT-Image-Edit-1.5M (Hugging Face UCSC-VLAA/GPT-Image-Edit-1.5M): ``training_json/*.json``.

Each file is a JSON list of LLaVA-style records::

    {"image": [<input>, <output>],
     "conversations": [{"from": "human", "value": "<image>\\n<instruction>"}, {"from": "gpt", ...}]}

Image paths are relative to ``cfg.image_dir`` (``gpt-edit/``, unpacked from the published
tar.gz parts); a path already starting with that folder's name is accepted too. The first folder
is the source dataset (``hqedit``, ``omniedit``, ``ultraedit``): it becomes ``subset``. The edit
category is not published: it is derived by keywords from the input's folders below the subset
(OmniEdit and UltraEdit group images by task, e.g. ``omniedit/addition``), then from the JSON
file name, else ``other``. ``category_raw`` keeps the input's folder the guess came from.

One unit per JSON file. The list is decoded one record at a time (the OmniEdit files are large),
so memory stays bounded; a JSON Lines file is read line by line. A file that stops being valid
JSON keeps the rows decoded before the break, and the break becomes the unit's error row.
"""
from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from stages.ingest.base import Adapter, PathEscapeError, Unit, resolve_under, to_json, unit_key
from stages.ingest.image_edit_common import clean_text, iter_json_array, iter_json_lines, keyword_category

IMAGE_TOKEN = "<image>"
HUMAN_ROLES = ("human", "user")


def first_human_turn(conversations: Any) -> str | None:
    """The instruction: the first human turn without ``<image>`` placeholders, stripped."""
    if not isinstance(conversations, list):
        return None
    for turn in conversations:
        if isinstance(turn, dict) and str(turn.get("from", turn.get("role", ""))).lower() in HUMAN_ROLES:
            value = turn.get("value", turn.get("content"))
            return clean_text(value.replace(IMAGE_TOKEN, "")) if isinstance(value, str) else None
    return None


def _first_char(path: Path) -> str:
    with open(path, "rb") as f:
        while block := f.read(4096):
            stripped = block.lstrip()
            if stripped:
                return chr(stripped[0])
    return ""


def json_file_records(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """``(index, record, error)`` for each record of an annotation file: a JSON list (streamed
    element by element), a JSON Lines file (line by line), or a dict wrapping one list."""
    first = _first_char(path)
    if first == "[":
        for i, rec in enumerate(iter_json_array(path)):
            yield i, rec, None
        return
    if first != "{":
        raise ValueError("expected a JSON list of records" + ("" if first else " (empty file)"))
    try:
        doc = json.loads(path.read_bytes())
    except json.JSONDecodeError as e:
        if e.msg != "Extra data":  # a complete first object, then more: JSON Lines
            raise ValueError(f"malformed JSON: {e.msg} at line {e.lineno}") from None
        for lineno, text, rec, err in iter_json_lines(path):
            yield lineno, rec if rec is not None else text, err
        return
    if "image" in doc or "conversations" in doc:
        records = [doc]
    else:
        lists = [v for v in doc.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise ValueError("expected a JSON list of records")
        records = lists[0]
    for i, rec in enumerate(records):
        yield i, rec, None


class GPTImageEditAdapter(Adapter):
    name = "gpt_image_edit"
    modality = "image"
    task = "edit"

    def units(self) -> list[Unit]:
        files = sorted(p for p in self.root.glob(self.cfg.json_glob) if p.is_file())
        if not files:
            return [Unit(self.name, unit_key(self.root, self.root, "no-json"), str(self.root), {"missing": True})]
        return [Unit(self.name, unit_key(self.root, p), str(p)) for p in files]

    def read(self, unit: Unit) -> Iterator[dict[str, Any]]:
        if unit.params.get("missing"):
            yield self.error_row(("no-json", self.cfg.json_glob),
                                 f"no annotation files match {self.cfg.json_glob!r} under the root",
                                 record={"root": str(self.root), "json_glob": self.cfg.json_glob}, split="train")
            return
        path = Path(unit.path)
        for index, rec, err in json_file_records(path):
            yield self._record_row(path.name, path.stem, index, rec, err)

    # ------------------------------------------------------------------ one record
    def _rel_image(self, value: Any) -> str:
        """An image path relative to image_dir (a leading ``gpt-edit/`` is dropped)."""
        name = clean_text(value)
        if name is None:
            raise ValueError("empty image path")
        parts = PurePosixPath(name.replace("\\", "/")).parts
        image_dir = PurePosixPath(self.cfg.image_dir).name
        if len(parts) > 1 and parts[0] == image_dir:
            parts = parts[1:]
        return PurePosixPath(*parts).as_posix()

    def _record_row(self, file_name: str, file_stem: str, index: int, rec: Any,
                    err: str | None) -> dict[str, Any]:
        position = (file_name, "record", index)
        if err is not None or not isinstance(rec, dict):
            reason = err or f"record {index}: expected a JSON object, got {type(rec).__name__}"
            return self.error_row(position, reason, record=rec, split="train")
        images = rec.get("image", rec.get("images"))
        if not (isinstance(images, list) and len(images) == 2 and all(isinstance(i, str) for i in images)):
            return self.error_row(position, "expected image: [input, output] (two paths)", record=rec,
                                  split="train", instruction=first_human_turn(rec.get("conversations")),
                                  category=keyword_category(file_stem))
        key = (file_name, images[0], images[1])
        values: dict[str, Any] = dict(split="train", instruction=first_human_turn(rec.get("conversations")))
        problem = None
        uris = []
        rels = []
        for role, value in zip(("input", "output"), images):
            try:
                rel = self._rel_image(value)
                uris.append(str(resolve_under(self.root, f"{self.cfg.image_dir}/{rel}")))
                rels.append(rel)
            except (PathEscapeError, ValueError) as e:
                uris.append(None)
                rels.append(None)
                problem = problem or f"{role} image: {e}"
        values.update(source_uri=uris[0], target_uri=uris[1])
        if rels[0]:
            parts = PurePosixPath(rels[0]).parts
            values["subset"] = parts[0] if len(parts) > 1 else None
            folder = PurePosixPath(rels[0]).parent.as_posix()
            values["category_raw"] = folder if folder != "." else None
            task_folders = "/".join(parts[1:-1]) if len(parts) > 2 else None
            values["category"] = keyword_category(task_folders, file_stem)
        else:
            values["category"] = keyword_category(file_stem)
        if problem is None and values["instruction"] is None:
            problem = "no instruction: no human turn with text in conversations"
        if problem is not None:
            return self.error_row(key, problem, record=rec, **values)
        return self.row(key, raw_record=to_json(rec), **values)
