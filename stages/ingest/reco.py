"""ReCo-Data adapter (Hugging Face HiDream-ai/ReCo-Data).

Published layout (see DATASETS.md, Corrections): ``{add,remove,replace,style}/`` each with
``{task}_data_configs.json`` (records ``{src_video, tar_video, instruction_final_refine}``); the
official loader joins the record paths to the dataset root (``add/src_videos/x.mp4``). One unit per
task config; ``cfg.tasks`` says which tasks are read. Category = the task folder. Natural key: the
``tar_video`` path, relative to the root (a task-relative spelling gives the same id).

Videos come extracted (``{task}/src_videos/<name>.mp4``) or as the shipped tar shards, which lie
*inside* the video folders: ``{task}/src_videos/{task}_src_video_NN.tar`` and
``{task}/tar_videos/{task}_tar_video_NN.tar``, members named bare (``<name>.mp4``). A video that is
not extracted is pointed at as ``tar://<abs tar>#<member>``; a folder's shards are listed once,
and only if some video of that folder is not found extracted. A video found nowhere is an error
row listing where it was looked for.

Masks (``video_masks/{task}/<tar_video name>``, as the official loader's ``mask_video_folder``),
when present, extracted or in a tar shard of that folder or of ``video_masks/`` (a shard named for
its task wins a name found in several), go to ``extra.mask_uri``.

The official loader skips instructions containing "error" or "none": that is the filter stage's
``rejected_instruction`` rule (filter.reject_instruction_words), so those rows are kept here,
counted and queryable, not dropped.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from stages.ingest.base import Adapter, PathEscapeError, SourceRange, extra_json, to_json, unit_key
from stages.ingest.video_pairs import (
    LayoutProbe, NotFoundError, TarShards, candidate_paths, clean_text, json_records, missing_text_fields, norm_rel,
    numeric_scores,
)

SOURCE, TARGET, INSTRUCTION = "src_video", "tar_video", "instruction_final_refine"
# Task folder -> normalised category (the folder names are already in the vocabulary).
CATEGORY = {"add": "add", "remove": "remove", "replace": "replace", "style": "style"}
# The video folder of each role inside a task folder.
FOLDER = {SOURCE: "src_videos", TARGET: "tar_videos"}


def canonical_path(path: str, task: str) -> str:
    """A record path relative to the root: ``tar_videos/x.mp4`` in task ``add`` is
    ``add/tar_videos/x.mp4``, so both spellings give the same sample id. Paths with ``..`` or an
    absolute path are kept as written, for ``resolve_under`` to judge."""
    rel = norm_rel(path)
    if rel.startswith(("/", f"{task}/")) or ".." in rel.split("/"):
        return rel
    return f"{task}/{rel}"


class ReCoAdapter(Adapter):
    name = "reco"
    # record fields read (curate inspect lists the others): drafts of the instruction become
    # alt_instructions, *score* fields native_scores
    fields_used = (SOURCE, TARGET, "*instruction*", "caption", "*score*")

    def units(self) -> list[SourceRange]:
        units = []
        for task in self.cfg.tasks:
            folder = self.root / task
            expected = folder / f"{task}_data_configs.json"
            # The published name first; else any *_data_configs*.json (split or renamed files);
            # else the expected path, so a configured task that is missing becomes a unit error row.
            configs = [expected] if expected.is_file() else sorted(folder.glob("*data_configs*.json"))
            for path in configs or [expected]:
                units.append(SourceRange(self.name, unit_key(self.root, path, task), str(path), {"task": task}))
        return units

    def read(self, unit: SourceRange) -> Iterator[dict[str, Any]]:
        task = unit.params["task"]
        path = Path(unit.path)
        where = os.path.relpath(path, self.root)
        records = json_records(json.loads(path.read_bytes()))  # malformed: one unit error row
        task_dir, mask_dir = self.root / task, self.root / self.cfg.mask_dir / task
        # published: shards inside the video folders; older downloads had them in the task folder
        shards = {SOURCE: TarShards(self.root, [task_dir / FOLDER[SOURCE], task_dir], "src"),
                  TARGET: TarShards(self.root, [task_dir / FOLDER[TARGET], task_dir], "tar"),
                  "mask": TarShards(self.root, [mask_dir, mask_dir.parent], task)}
        probes = {SOURCE: LayoutProbe(), TARGET: LayoutProbe(), "mask": LayoutProbe()}
        for i, rec in enumerate(records):
            yield self.guarded(("record", where, i), rec, self._row, rec, task, (where, i), shards, probes,
                               subset=task, split="train")

    def _row(self, rec: Any, task: str, where: tuple, shards: dict, probes: dict) -> dict[str, Any]:
        common = dict(subset=task, split="train", category_raw=task,
                      category=CATEGORY.get(task, "other"), raw_record=to_json(rec))
        if not isinstance(rec, dict):
            return self.row(("record", *where), error="record is not a JSON object", **common)
        source, target, instruction = (clean_text(rec.get(f)) for f in (SOURCE, TARGET, INSTRUCTION))
        key = canonical_path(target, task) if target else ("record", *where)
        missing = missing_text_fields((f, rec.get(f)) for f in (SOURCE, TARGET, INSTRUCTION))
        if missing:
            return self.row(key, error=missing, **common)
        try:
            source_uri = self._locate(source, task, SOURCE, shards[SOURCE], probes[SOURCE])
            target_uri = self._locate(target, task, TARGET, shards[TARGET], probes[TARGET])
        except (PathEscapeError, ValueError) as e:
            return self.row(key, error=str(e), **common)
        mask = self._mask(target, task, shards["mask"], probes["mask"])
        return self.row(
            key, source_uri=source_uri, target_uri=target_uri, instruction=instruction,
            alt_instructions=self._alt_instructions(rec, instruction),
            caption=clean_text(rec.get("caption")),
            native_scores=numeric_scores(rec),
            extra=extra_json(mask_uri=mask), **common,
        )

    def _locate(self, rel: str, task: str, role: str, shards: TarShards, probe: LayoutProbe) -> str:
        """The extracted file (as written, or relative to the task folder), else the tar member."""
        rel = norm_rel(rel)
        variants = [rel, f"{task}/{rel}"]
        candidates = candidate_paths(self.root, variants, rel)
        hit = probe.pick(candidates)
        if hit is not None:
            return str(hit)
        member = shards.find(rel)
        if member is not None:
            return member
        tried = [str(c) for c in dict.fromkeys(candidates) if c is not None] + [f"members of {shards.describe()}"]
        raise NotFoundError(role, rel, tried)

    def _mask(self, target: str, task: str, shards: TarShards, probe: LayoutProbe) -> str | None:
        name = Path(norm_rel(target)).name
        try:
            candidates = candidate_paths(self.root, [f"{self.cfg.mask_dir}/{task}/{name}"], name)
        except PathEscapeError:
            return None
        hit = probe.pick(candidates)
        return str(hit) if hit is not None else shards.find(name)

    @staticmethod
    def _alt_instructions(rec: dict, chosen: str) -> list[str] | None:
        """Earlier drafts of the instruction (``instruction``, ``instruction_refine`` ...), if any."""
        alts = []
        for name in sorted(rec):
            text = clean_text(rec[name]) if "instruction" in name and name != INSTRUCTION else None
            if text and text != chosen and text not in alts:
                alts.append(text)
        return alts or None
