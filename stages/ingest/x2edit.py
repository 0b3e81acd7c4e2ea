"""X2Edit (Hugging Face OPPOer/X2Edit-Dataset): WebDataset tars
``X2Edit_data/<generator>/<shard>/<n>.tar``; one unit per tar, ``subset`` = the generator folder.

A sample is the group of members sharing a WebDataset key (the member path up to the first dot of
its file name): ``<key>.1.0.jpg`` (source; ``.1.jpg`` / ``.png`` variants accepted), ``<key>.2.jpg``
(edited), ``<key>.json`` (instruction, task, model, scores, width, height) and ``<key>.txt``.
Only the tar headers and the small JSON members are read; images are addressed as
``tar://<abs tar>#<member>`` and measured by the probe stage.

Concatenated tars: some published tars are several tars appended to each other, so they are read
with ``ignore_zeros=True`` (past each end-of-archive marker), and member names can repeat. The
LAST occurrence of a name wins, for images and JSON alike: that is the member
``tarfile.TarFile.getmember(name)`` returns (and the one GNU tar leaves on disk when extracting),
so a ``tar://`` URI names the bytes a by-name reader gets. A reader must open these tars with
``ignore_zeros=True`` too, or it stops at the first part and misses the later members.

``task`` has hundreds of values (English, and Chinese in some generators); the main ones map to
the normalised vocabulary, everything else to ``other``; the raw task is kept. Numeric ``*score*``
fields (including the ``"[9, 8]"`` judge-score strings) go to ``native_scores``.
"""
from __future__ import annotations

import json
import re
import tarfile
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from stages.ingest.base import Adapter, Unit, to_json, unit_key
from stages.ingest.image_edit_common import clean_text, label_text, numeric_scores, posix_rel, tar_uri

SOURCE_SUFFIXES = ("1.0.jpg", "1.jpg", "1.0.jpeg", "1.jpeg", "1.0.png", "1.png", "1.0.webp", "1.webp")
EDITED_SUFFIXES = ("2.jpg", "2.jpeg", "2.png", "2.webp")
MAX_JSON_BYTES = 16 << 20  # a metadata member larger than this is not metadata

TASK_CATEGORIES = {
    "action_change": "action",
    "background_change": "background",
    "color_change": "color",
    "style_change": "style",
    "subject_addition": "add",
    "subject_deletion": "remove",
    "subject_replacement": "replace",
    "text_change": "text",
    "tone_transform": "tone",
    # The same tasks under the Chinese labels X2Edit's generation scripts write.
    "动作更改": "action",
    "背景更改": "background",
    "颜色更改": "color",
    "风格更改": "style",
    "添加主体": "add",
    "删除主体": "remove",
    "替换主体": "replace",
    "文字更改": "text",
    "色调变换": "tone",
    "色调迁移": "tone",
}


def task_category(task: str | None) -> str:
    if not task:
        return "other"
    key = re.sub(r"[\s\-]+", "_", task.strip().lower())
    return TASK_CATEGORIES.get(task.strip(), TASK_CATEGORIES.get(key, "other"))


def split_member(name: str) -> tuple[str, str] | None:
    """WebDataset key and suffix: ``a/b/000001.1.0.jpg`` -> (``a/b/000001``, ``1.0.jpg``)."""
    path = PurePosixPath(name)
    stem, dot, suffix = path.name.partition(".")
    if not dot or not stem or not suffix:
        return None
    return (str(path.parent / stem) if str(path.parent) != "." else stem), suffix


def list_samples(tf: tarfile.TarFile) -> tuple[dict[str, dict[str, tarfile.TarInfo]], Counter, str | None]:
    """Members grouped by sample key, in first-seen key order; a repeated name replaces the
    earlier member (last occurrence wins). Also: duplicates per key, and why listing stopped
    early (a truncated or corrupt tail), if it did."""
    samples: dict[str, dict[str, tarfile.TarInfo]] = {}
    duplicates: Counter = Counter()
    stopped = None
    while True:
        try:
            member = tf.next()
        except (tarfile.ReadError, EOFError) as e:
            stopped = f"{type(e).__name__}: {e}"
            break
        if member is None:
            break
        if not member.isfile():
            continue
        parts = split_member(member.name)
        if parts is None:
            continue
        key, suffix = parts
        group = samples.setdefault(key, {})
        if suffix in group:
            duplicates[key] += 1
        group[suffix] = member
    # tarfile stops silently at a header cut short; a complete tar is read to its last byte
    # (ignore_zeros walks over the end-of-archive blocks), so non-zero bytes left unread mean a
    # truncated or corrupt tail. A cut inside the trailing zero padding loses nothing.
    if stopped is None:
        tail = _unread_tail(tf)
        if tail is not None and tail.strip(b"\0"):
            stopped = f"a partial header at byte {tf.offset}"
    return samples, duplicates, stopped


def _unread_tail(tf: tarfile.TarFile, limit: int = 1 << 20) -> bytes | None:
    try:
        size = Path(tf.name).stat().st_size if tf.name else None
        if size is None or tf.offset >= size:
            return None
        tf.fileobj.seek(tf.offset)
        return tf.fileobj.read(min(size - tf.offset, limit))
    except OSError:
        return None


class X2EditAdapter(Adapter):
    name = "x2edit"
    modality = "image"
    task = "edit"

    def units(self) -> list[Unit]:
        tars = sorted(p for p in self.root.glob(self.cfg.tar_glob) if p.is_file())
        if not tars:
            return [Unit(self.name, unit_key(self.root, self.root, "no-tars"), str(self.root), {"missing": True})]
        return [Unit(self.name, unit_key(self.root, p), str(p)) for p in tars]

    def _subset(self, rel: str) -> str | None:
        parts = PurePosixPath(rel).parts
        if len(parts) > 2 and parts[0] == "X2Edit_data":
            return parts[1]
        return parts[0] if len(parts) > 1 else None

    def read(self, unit: Unit) -> Iterator[dict[str, Any]]:
        if unit.params.get("missing"):
            yield self.error_row(("no-tars", self.cfg.tar_glob),
                                 f"no tars match {self.cfg.tar_glob!r} under the root",
                                 record={"root": str(self.root), "tar_glob": self.cfg.tar_glob}, split="train")
            return
        path = Path(unit.path)
        rel = posix_rel(path, self.root)
        subset = self._subset(rel)
        try:
            tf = tarfile.open(path, "r:", ignore_zeros=True)
        except (tarfile.TarError, OSError) as e:
            yield self.error_row((rel, "<tar>"), f"unreadable tar: {type(e).__name__}: {e}",
                                 record={"tar": rel}, subset=subset, split="train")
            return
        with tf:
            samples, duplicates, stopped = list_samples(tf)
            for key, members in samples.items():
                yield self._sample_row(tf, path.resolve(), rel, subset, key, members, duplicates[key])
        if not samples:
            # ignore_zeros also skips blocks that are not tar headers, so a file that is not a
            # tar at all "opens" and lists nothing: say so instead of yielding no row.
            why = f": {stopped}" if stopped else ""
            yield self.error_row((rel, "<tar>"), f"unreadable tar: no samples found{why}",
                                 record={"tar": rel}, subset=subset, split="train")
        elif stopped is not None:
            yield self.error_row((rel, "<tar-tail>"),
                                 f"tar ends early or is corrupt after {len(samples)} samples: {stopped}",
                                 record={"tar": rel, "samples_listed": len(samples)}, subset=subset, split="train")

    def _read_json(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> tuple[dict[str, Any] | None, str | None]:
        if member.size > MAX_JSON_BYTES:
            return None, f"json member {member.name} too large ({member.size} bytes)"
        try:
            f = tf.extractfile(member)
            data = f.read() if f is not None else None
        except (tarfile.TarError, OSError, EOFError) as e:
            return None, f"unreadable json member {member.name}: {e}"
        if data is None or len(data) < member.size:
            return None, f"json member {member.name} is truncated"
        try:
            rec = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return None, f"corrupt json member {member.name}: {e}"
        if not isinstance(rec, dict):
            return None, f"json member {member.name} is a {type(rec).__name__}, not an object"
        return rec, None

    def _sample_row(self, tf: tarfile.TarFile, tar_path: Path, rel: str, subset: str | None, key: str,
                    members: dict[str, tarfile.TarInfo], duplicates: int) -> dict[str, Any]:
        source = next((members[s] for s in SOURCE_SUFFIXES if s in members), None)
        edited = next((members[s] for s in EDITED_SUFFIXES if s in members), None)
        audit: dict[str, Any] = {"tar": rel, "key": key, "members": sorted(members)}
        if duplicates:
            audit["duplicate_members"] = duplicates
        problems = []
        rec: dict[str, Any] | None = None
        if "json" in members:
            rec, err = self._read_json(tf, members["json"])
            if err:
                problems.append(err)
        else:
            problems.append("missing .json member")
        if source is None:
            problems.append("missing source member (.1.0.jpg)")
        if edited is None:
            problems.append("missing edited member (.2.jpg)")
        rec = rec or {}
        audit["json"] = rec
        task = label_text(rec.get("task"))
        instruction = clean_text(rec.get("instruction"))
        if rec and instruction is None:
            problems.append("empty instruction")
        alts = [t for k, v in sorted(rec.items())
                if k != "instruction" and str(k).startswith("instruction") and (t := clean_text(v))]
        values = dict(
            subset=subset,
            split="train",
            source_uri=tar_uri(tar_path, source.name) if source else None,
            target_uri=tar_uri(tar_path, edited.name) if edited else None,
            instruction=instruction,
            alt_instructions=alts or None,
            category_raw=task,
            category=task_category(task),
            native_scores=numeric_scores(rec),
        )
        if problems:
            return self.error_row((rel, key), "; ".join(problems), record=audit, **values)
        return self.row((rel, key), raw_record=to_json(audit), **values)
