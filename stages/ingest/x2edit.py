"""X2Edit (Hugging Face OPPOer/X2Edit-Dataset): WebDataset tars
``X2Edit_data/<generator>/<shard>/<n>.tar``; one unit per tar, ``subset`` = the generator folder.

A sample is the group of members sharing a WebDataset key (the member path up to the first dot of
its file name): ``<key>.1.0.jpg`` (source; ``.1.jpg`` / ``.png`` variants accepted), ``<key>.2.jpg``
(edited), ``<key>.json`` (instruction, task, model, label, scores, width, height), ``<key>.txt``,
and for the textflux generator ``<key>.1.1.jpg``, a text-foreground mask (``extra.text_mask_uri``).
Only the tar headers and the small JSON members are read; images are addressed as
``tar://<abs tar>#<member>@<header offset>`` (see :mod:`stages.media.tar_members`) and measured by
the probe stage.

Concatenated tars: some published tars are several tars appended to each other (read with
``ignore_zeros=True``), and member names repeat *with different content* (one kontext_subject tar:
19,976 members, 10,516 unique names). A repeated member name starts a new sample: the n-th
occurrence of ``<key>.<suffix>`` belongs to the n-th sample of that key (natural key
``(tar, key)`` for the first, ``(tar, key, n)`` after), and every member is addressed by offset,
so a URI names exactly one of the members sharing a name.

``task`` (583 published values) maps to a category through :mod:`stages.ingest.x2edit_tasks`;
the raw task stays in ``category_raw``. The subject-driven generation tasks (``portrait``,
``portrait_editing``, ``personalized_generation``) are labelled ``subject_driven`` and, by
default (``exclude_tasks``), kept as rows whose ``error`` starts with ``excluded:``, so they are
counted and queryable but never probed or judged. Instructions "None" / "无" count as empty.
``instruction_zh`` / ``instruction_en`` are alternative instructions; ``instruction_ori`` (qwen
generators) describes the *source* image and is not. ``extra`` holds ``task`` (canonical),
``model``, ``label``, ``instruction_type``, ``width``, ``height``, ``text_mask_uri``. Numeric
``*score*`` fields (including the ``"[9, 8]"`` judge-score strings) go to ``native_scores``.
"""
from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from stages.ingest.base import Adapter, SourceRange, extra_json, metadata_files, to_json, unit_key
from stages.ingest.image_edit_common import (
    clean_text,
    instruction_text,
    int_or_none,
    label_text,
    numeric_scores,
    posix_rel,
    tar_uri,
)
from stages.ingest.x2edit_tasks import SUBJECT_DRIVEN, canonical_task, task_category, task_key
from stages.media.tar_members import member_ref

SOURCE_SUFFIXES = ("1.0.jpg", "1.jpg", "1.0.jpeg", "1.jpeg", "1.0.png", "1.png", "1.0.webp", "1.webp")
EDITED_SUFFIXES = ("2.jpg", "2.jpeg", "2.png", "2.webp")
MAX_JSON_BYTES = 16 << 20  # a metadata member larger than this is not metadata

DEFAULT_GLOB = "X2Edit_data/**/*.tar"
TEXT_MASK_SUFFIX = "1.1.jpg"  # textflux: the text-foreground mask
ALT_INSTRUCTION_KEYS = ("instruction_en", "instruction_zh")  # translations; not instruction_ori


def split_member(name: str) -> tuple[str, str] | None:
    """WebDataset key and suffix: ``a/b/000001.1.0.jpg`` -> (``a/b/000001``, ``1.0.jpg``)."""
    path = PurePosixPath(name)
    stem, dot, suffix = path.name.partition(".")
    if not dot or not stem or not suffix:
        return None
    return (str(path.parent / stem) if str(path.parent) != "." else stem), suffix


Sample = tuple[str, int, dict[str, tarfile.TarInfo]]  # key, occurrence, suffix -> member


def list_samples(tf: tarfile.TarFile) -> tuple[list[Sample], str | None]:
    """Members grouped into samples in first-seen order: the n-th occurrence of a member name
    joins the n-th sample of its key (concatenated tars repeat names with new content). Also: why
    listing stopped early (a truncated or corrupt tail), if it did."""
    samples: list[Sample] = []
    by_key: dict[str, list[int]] = {}  # key -> indexes into samples, by occurrence
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
        slots = by_key.setdefault(key, [])
        n = next((i for i, idx in enumerate(slots) if suffix not in samples[idx][2]), None)
        if n is None:
            n = len(slots)
            slots.append(len(samples))
            samples.append((key, n, {}))
        samples[slots[n]][2][suffix] = member
    # tarfile stops silently at a header cut short; a complete tar is read to its last byte
    # (ignore_zeros walks over the end-of-archive blocks), so non-zero bytes left unread mean a
    # truncated or corrupt tail. A cut inside the trailing zero padding loses nothing.
    if stopped is None:
        tail = _unread_tail(tf)
        if tail is not None and tail.strip(b"\0"):
            stopped = f"a partial header at byte {tf.offset}"
    return samples, stopped


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
    # JSON fields read (curate inspect lists the others, e.g. caption_*, instruction_ori)
    fields_used = ("instruction", *ALT_INSTRUCTION_KEYS, "task", "model", "label", "instruction_type",
                   "width", "height", "*score*")

    def __init__(self, cfg):
        super().__init__(cfg)
        self.excluded = {task_key(t) for t in cfg.exclude_tasks}  # normalised once, not per sample

    def units(self) -> list[SourceRange]:
        tars = metadata_files(self.root, self.cfg.tar_glob)
        if not tars and self.cfg.tar_glob == DEFAULT_GLOB:
            # the root is X2Edit_data/ itself (or a generator folder): its tars, wherever they are
            tars = sorted(p for p in self.root.glob("**/*.tar") if p.is_file()
                          and not any(part.startswith(".") for part in p.relative_to(self.root).parts))
        if not tars:
            return [SourceRange(self.name, unit_key(self.root, self.root, "no-tars"), str(self.root), {"missing": True})]
        return [SourceRange(self.name, unit_key(self.root, p), str(p)) for p in tars]

    def _subset(self, rel: str) -> str | None:
        parts = PurePosixPath(rel).parts
        if len(parts) > 2 and parts[0] == "X2Edit_data":
            return parts[1]
        return parts[0] if len(parts) > 1 else None

    def read(self, unit: SourceRange) -> Iterator[dict[str, Any]]:
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
            samples, stopped = list_samples(tf)
            for key, occurrence, members in samples:
                yield self.guarded((rel, key, occurrence), {"tar": rel, "key": key}, self._sample_row, tf,
                                   path.resolve(), rel, subset, key, occurrence, members, subset=subset, split="train")
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
        except RecursionError:
            return None, f"json member {member.name} is nested too deeply to read"
        if not isinstance(rec, dict):
            return None, f"json member {member.name} is a {type(rec).__name__}, not an object"
        return rec, None

    def _sample_row(self, tf: tarfile.TarFile, tar_path: Path, rel: str, subset: str | None, key: str,
                    occurrence: int, members: dict[str, tarfile.TarInfo]) -> dict[str, Any]:
        source = next((members[s] for s in SOURCE_SUFFIXES if s in members), None)
        edited = next((members[s] for s in EDITED_SUFFIXES if s in members), None)
        mask = members.get(TEXT_MASK_SUFFIX)
        natural = (rel, key) if occurrence == 0 else (rel, key, occurrence)
        # The JSON's own fields at the top (what `curate inspect` compares with fields_used), ours
        # under "_" names: where the sample is, and its members' header offsets.
        where: dict[str, Any] = {"_tar": rel, "_key": key,
                                 "_members": {s: m.offset for s, m in sorted(members.items())}}
        if occurrence:
            where["_occurrence"] = occurrence  # the n-th repeat of this key in a concatenated tar
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
        audit = {**rec, **where}
        task = label_text(rec.get("task"))
        canonical = canonical_task(task)
        given = rec.get("instruction")
        if isinstance(given, list):  # a few generators wrote a one-element list
            given = next((x for x in given if clean_text(x)), None)
        instruction = instruction_text(given)
        if rec and instruction is None:
            placeholder = clean_text(given)
            problems.append("empty instruction" + (f": {placeholder!r} is a placeholder" if placeholder else ""))
        alts = list(dict.fromkeys(t for k in ALT_INSTRUCTION_KEYS
                                  if (t := instruction_text(rec.get(k))) and t != instruction))
        uri = lambda m: tar_uri(tar_path, member_ref(m.name, m.offset)) if m is not None else None  # noqa: E731
        values = dict(
            subset=subset,
            split="train",
            source_uri=uri(source),
            target_uri=uri(edited),
            instruction=instruction,
            alt_instructions=alts or None,
            category_raw=task,
            category=task_category(task),
            native_scores=numeric_scores(rec),
            extra=extra_json(task=canonical, model=label_text(rec.get("model")), label=label_text(rec.get("label")),
                             instruction_type=label_text(rec.get("instruction_type")),
                             width=int_or_none(rec.get("width")), height=int_or_none(rec.get("height")),
                             text_mask_uri=uri(mask)),
        )
        if task and (task_key(task) in self.excluded or canonical in self.excluded):
            what = " is subject-driven generation, not an edit" if canonical in SUBJECT_DRIVEN else ""
            problems.insert(0, f"excluded: task {task!r}{what} (datasets.x2edit.exclude_tasks)")
        if problems:
            return self.error_row(natural, "; ".join(problems), record=audit, **values)
        return self.row(natural, raw_record=to_json(audit), **values)
