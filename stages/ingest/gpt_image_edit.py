"""GPT-Image-Edit-1.5M (Hugging Face UCSC-VLAA/GPT-Image-Edit-1.5M): images in ``gpt-edit/``,
annotations from two places, both read:

* ``training_json/*.json``: published in the *model* repository UCSC-VLAA/gpt-image-edit-training
  (official README), so it may sit outside the dataset root: ``annotations_root``. LLaVA-style
  records ``{"image": [<input>, <output>], "conversations": [{"from": "human", "value":
  "<image>\\n<instruction>"}, ...]}``. Each file has its own image root (official ``data.txt``,
  read by the official loader as ``os.path.join(image_root, path)``): ``image_roots`` maps the
  file stem to a folder under ``image_dir`` (default: the six published lines). Paths inside are
  ``input/<id>.png``. For a file not in the map, paths are taken relative to ``image_dir``.
* ``gpt-edit/<task>/metadata/*.json`` in the dataset repository (dataset card): records ``{id,
  dataset_source, task, input, output, instruction, instruction_type, input_description}``, paths
  relative to the task folder (``metadata``'s parent) or, failing that, ``image_dir`` or the root.

Image paths are tolerated in several spellings: each candidate place is tried in order (the one
that worked last first) and the first existing file wins; when none exists the row's error is
``not found: input '<path>'; looked in <every place tried>``. ``subset`` is the task folder's first part (``hqedit``,
``omniedit``, ``ultraedit``); ``category_raw`` is the input's folder under ``image_dir``;
``category`` comes from the metadata ``task``, else the task folders, else the file name, by
keywords (``complex-edit`` is ``freeform``). ``extra`` keeps ``task``, ``task_folder``,
``instruction_type``, ``input_description``, ``dataset_source``, ``id`` and the annotation file.

The natural key is (input, output, instruction), paths relative to ``image_dir``: the same edit
read from both annotation sources gets one id (the `samples` view keeps one row), while
``omniedit_gpt_rewrite.json`` (same images, rewritten instructions) gets its own rows. Lists are
decoded one record at a time (bounded memory); a file that stops being valid JSON keeps the rows
before the break, and the break becomes the unit's error row.
"""
from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from stages.ingest.base import (
    Adapter, PathEscapeError, SourceRange, extra_json, metadata_files, resolve_under, to_json, unit_key,
)
from stages.ingest.record_guard import open_regular
from stages.ingest.image_edit_common import (
    clean_text,
    iter_json_array,
    UTF8_BOM,
    iter_json_lines,
    keyword_category,
    label_text,
)

IMAGE_TOKEN = "<image>"
HUMAN_ROLES = ("human", "user")
# Task folders whose name says nothing to the keyword rules.
FOLDER_CATEGORIES = {"complex-edit": "freeform", "complex_edit": "freeform"}
SUBSETS = ("hqedit", "omniedit", "ultraedit")  # gpt-edit/'s source-dataset folders


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
    with open_regular(path, "rb") as f:
        first = True
        while block := f.read(4096):
            stripped = (block.removeprefix(UTF8_BOM) if first else block).lstrip()
            first = False
            if stripped:
                return chr(stripped[0])
    return ""


def json_file_records(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """``(index, record, error)`` for each record of an annotation file: a JSON list (streamed
    element by element), a JSON Lines file (line by line), a dict wrapping one list, or a dict of
    records keyed by id."""
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
    if any(k in doc for k in ("image", "images", "conversations", "input", "output")):
        records = [doc]
    else:
        lists = [v for v in doc.values() if isinstance(v, list)]
        if len(lists) == 1:
            records = lists[0]
        elif doc and all(isinstance(v, dict) for v in doc.values()):
            records = list(doc.values())  # {<id>: record, ...}
        else:
            raise ValueError("expected a JSON list of records")
    for i, rec in enumerate(records):
        yield i, rec, None


def folder_category(*labels: str | None) -> str:
    for label in labels:
        if label:
            for part in PurePosixPath(label).parts:
                if part in FOLDER_CATEGORIES:
                    return FOLDER_CATEGORIES[part]
    return keyword_category(*labels)


class GPTImageEditAdapter(Adapter):
    name = "gpt_image_edit"
    modality = "image"
    task = "edit"
    # record fields read, both sources (curate inspect lists the others)
    fields_used = ("image", "images", "conversations", "input", "output", "instruction", "task",
                   "instruction_type", "input_description", "dataset_source", "id")

    def __init__(self, cfg):
        super().__init__(cfg)
        self.ann_root = Path(cfg.annotations_root).expanduser().resolve() if cfg.annotations_root else self.root
        image_dir = self.root / cfg.image_dir
        if not image_dir.is_dir() and any((self.root / s).is_dir() for s in SUBSETS):
            image_dir = self.root  # the root is gpt-edit/ itself: the source folders directly
        self.image_dir = image_dir
        self._last_hit: dict[str, int] = {}  # candidate index that resolved last, per unit kind

    def units(self) -> list[SourceRange]:
        units = [SourceRange(self.name, unit_key(self.ann_root, p, "training"), str(p), {"kind": "training"})
                 for p in metadata_files(self.ann_root, self.cfg.json_glob)]
        if self.cfg.metadata_glob:
            glob = self.cfg.metadata_glob if self.image_dir != self.root else "**/metadata/*.json"
            units += [SourceRange(self.name, unit_key(self.root, p, "metadata"), str(p), {"kind": "metadata"})
                      for p in metadata_files(self.root, glob)]
        if not units:
            return [SourceRange(self.name, unit_key(self.root, self.root, "no-json"), str(self.root), {"missing": True})]
        return units

    def read(self, unit: SourceRange) -> Iterator[dict[str, Any]]:
        if unit.params.get("missing"):
            yield self.error_row(
                ("no-json", self.cfg.json_glob),
                f"no annotation files match {self.cfg.json_glob!r} under {self.ann_root} (annotations_root) "
                f"nor {self.cfg.metadata_glob!r} under the root",
                record={"root": str(self.root), "annotations_root": str(self.ann_root),
                        "json_glob": self.cfg.json_glob, "metadata_glob": self.cfg.metadata_glob},
                split="train")
            return
        path = Path(unit.path)
        if unit.params["kind"] == "metadata":
            task_dir = path.parent.parent
            where = self._rel(task_dir)
            bases = [task_dir, self.image_dir, self.root]
            label = f"{where}/metadata/{path.name}"
        else:
            where = self.cfg.image_roots.get(path.stem)
            bases = ([self.image_dir / where] if where else []) + [self.image_dir, self.root]
            label = f"training_json/{path.name}"
        for index, rec, err in json_file_records(path):
            yield self.guarded((label, "record", index), rec, self._record_row, unit.params["kind"], label, where,
                               bases, index, rec, err, split="train")

    # ------------------------------------------------------------------ locations
    def _rel(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.image_dir.resolve()).as_posix()
        except ValueError:
            return path.resolve().relative_to(self.root).as_posix()

    def _locate(self, kind: str, bases: list[Path], value: Any) -> tuple[Path | None, list[str]]:
        """The first existing file among ``base / value`` (a leading image_dir name dropped for
        bases inside it); (None, places tried) when none exists. Raises ValueError/PathEscapeError."""
        name = clean_text(value)
        if name is None:
            raise ValueError("empty image path")
        parts = PurePosixPath(name.replace("\\", "/")).parts
        stripped = PurePosixPath(*parts[1:]).as_posix() if len(parts) > 1 and parts[0] == self.image_dir.name else None
        candidates: list[Path] = []
        for base in bases:
            for rel in ((name, stripped) if base != self.root else (name,)):
                if rel is not None:
                    rel_to_root = (base / rel).relative_to(self.root) if base != self.root else Path(rel)
                    p = resolve_under(self.root, rel_to_root.as_posix())
                    if p not in candidates:
                        candidates.append(p)
        first = self._last_hit.get(kind, 0)
        order = ([candidates[first]] if first < len(candidates) else []) + candidates
        for p in order:
            if p.is_file():
                self._last_hit[kind] = candidates.index(p)
                return p, []
        return None, [str(p) for p in candidates]

    # ------------------------------------------------------------------ one record
    def _record_row(self, kind: str, label: str, where: str | None, bases: list[Path], index: int,
                    rec: Any, err: str | None) -> dict[str, Any]:
        position = (label, "record", index)
        if err is not None or not isinstance(rec, dict):
            reason = err or f"record {index}: expected a JSON object, got {type(rec).__name__}"
            return self.error_row(position, reason, record=rec, split="train")
        stem = PurePosixPath(label).stem
        if kind == "metadata":
            images = [rec.get("input"), rec.get("output")]
            instruction = clean_text(rec.get("instruction"))
        else:
            images = rec.get("image", rec.get("images"))
            images = [images] if isinstance(images, str) else images
            instruction = first_human_turn(rec.get("conversations"))
        meta_task = label_text(rec.get("task"))
        extra = dict(task=meta_task or where, task_folder=where, annotation=label,
                     instruction_type=label_text(rec.get("instruction_type")),
                     input_description=clean_text(rec.get("input_description")),
                     dataset_source=label_text(rec.get("dataset_source")), id=label_text(rec.get("id")))
        if not (isinstance(images, list) and len(images) == 2 and all(isinstance(i, str) for i in images)):
            what = "input and output paths" if kind == "metadata" else "image: [input, output] (two paths)"
            return self.error_row(position, f"expected {what}", record=rec, split="train",
                                  instruction=instruction, extra=extra_json(**extra),
                                  category=folder_category(meta_task, where, stem))
        values: dict[str, Any] = dict(split="train", instruction=instruction)
        problems, rels = [], []
        for role, value in zip(("input", "output"), images):
            try:
                found, tried = self._locate(kind, bases, value)
            except (PathEscapeError, ValueError) as e:
                found, tried = None, []
                problems.append(f"{role} image: {e}")
            if found is None and tried:
                problems.append(f"not found: {role} {value!r}; looked in {', '.join(tried)}")
            values["source_uri" if role == "input" else "target_uri"] = str(found) if found else None
            rels.append(self._rel(found) if found else None)
        task_path = rels[0] or (where or "")
        parts = PurePosixPath(task_path).parts
        values["subset"] = (PurePosixPath(where).parts[0] if where else parts[0] if len(parts) > 1 else None)
        if rels[0]:
            folder = PurePosixPath(rels[0]).parent.as_posix()
            values["category_raw"] = folder if folder != "." else None
        below = "/".join(p for p in parts[1:-1] if p not in ("input", "output")) if len(parts) > 2 else None
        values["category"] = folder_category(meta_task, below, where, stem)
        values["extra"] = extra_json(**extra)
        if not problems and instruction is None:
            problems.append("no instruction" + ("" if kind == "metadata" else
                                                ": no human turn with text in conversations"))
        if problems:
            return self.error_row(position if None in rels else (rels[0], rels[1], instruction or ""),
                                  "; ".join(problems), record=rec, **values)
        return self.row((rels[0], rels[1], instruction), raw_record=to_json(rec), **values)
