"""ReCo-Data adapter (Hugging Face HiDream-ai/ReCo-Data).

Published layout (see DATASETS.md): ``{add,remove,replace,style}/`` each with
``{task}_data_configs.json`` (records ``{src_video, tar_video, instruction_final_refine}``),
``src_videos/`` and ``tar_videos/``; the videos also ship as tar shards
``{task}_src_video_NN.tar`` in the task folder. One unit per task config; ``cfg.tasks`` says which
tasks are read. Category = the task folder. Natural key: the ``tar_video`` path.

Record paths are taken relative to the dataset root (``add/src_videos/x.mp4``); paths relative to
the task folder (``src_videos/x.mp4``) are accepted too. A video that is not extracted but lies in
one of the task folder's tar shards is pointed at as ``tar://<abs tar>#<member>``; the shards are
listed once per unit, and only if some video is not found extracted. A video found nowhere keeps
its extracted spelling, and the probe stage reports it missing.
"""
from __future__ import annotations

import json
import os
import tarfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

from stages.ingest.base import Adapter, PathEscapeError, Unit, to_json, unit_key
from stages.ingest.video_pairs import (
    LayoutProbe, candidate_paths, clean_text, first_present, json_records, norm_rel, numeric_scores,
)

SOURCE, TARGET, INSTRUCTION = "src_video", "tar_video", "instruction_final_refine"
# Task folder -> normalised category (the folder names are already in the vocabulary).
CATEGORY = {"add": "add", "remove": "remove", "replace": "replace", "style": "style"}


def canonical_path(path: str, task: str) -> str:
    """A record path relative to the root: ``tar_videos/x.mp4`` in task ``add`` is
    ``add/tar_videos/x.mp4``, so both spellings give the same sample id. Paths with ``..`` or an
    absolute path are kept as written, for ``resolve_under`` to judge."""
    rel = norm_rel(path)
    if rel.startswith(("/", f"{task}/")) or ".." in rel.split("/"):
        return rel
    return f"{task}/{rel}"


class TarShards:
    """Members of a task folder's tar shards, listed on first use.

    Lookup tries the path as written, then without the task prefix, then its last two parts
    (``src_videos/x.mp4``), then the bare file name when only one shard of the right kind
    (``_src_`` / ``_tar_`` in the shard name) has a member of that name.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self._by_name: dict[str, tuple[Path, str]] | None = None
        self._by_base: dict[str, list[tuple[Path, str]]] = defaultdict(list)

    def _list(self) -> None:
        self._by_name = {}
        for shard in sorted(self.folder.glob("*.tar")):
            with tarfile.open(shard) as tf:  # reads headers only, seeking over the data
                for member in tf:
                    if member.isfile():
                        where = (shard.resolve(), member.name)
                        self._by_name.setdefault(norm_rel(member.name), where)
                        self._by_base[Path(member.name).name].append(where)

    def find(self, rel: str, task: str, role: str) -> str | None:
        if self._by_name is None:
            self._list()
        parts = norm_rel(rel).split("/")
        tries = ["/".join(parts), "/".join(parts[1:]) if parts[0] == task else None, "/".join(parts[-2:])]
        hit = next((self._by_name[t] for t in tries if t and t in self._by_name), None)
        if hit is None:
            same_name = self._by_base.get(parts[-1], [])
            of_role = [w for w in same_name if f"_{role}_" in w[0].name] or same_name
            hit = of_role[0] if len(of_role) == 1 else None
        return f"tar://{hit[0]}#{hit[1]}" if hit else None


class ReCoAdapter(Adapter):
    name = "reco"

    def units(self) -> list[Unit]:
        units = []
        for task in self.cfg.tasks:
            folder = self.root / task
            expected = folder / f"{task}_data_configs.json"
            # The published name first; else any *_data_configs*.json (split or renamed files);
            # else the expected path, so a configured task that is missing becomes a unit error row.
            configs = [expected] if expected.is_file() else sorted(folder.glob("*data_configs*.json"))
            for path in configs or [expected]:
                units.append(Unit(self.name, unit_key(self.root, path, task), str(path), {"task": task}))
        return units

    def read(self, unit: Unit) -> Iterator[dict[str, Any]]:
        task = unit.params["task"]
        path = Path(unit.path)
        where = os.path.relpath(path, self.root)
        records = json_records(json.loads(path.read_bytes()))  # malformed: one unit error row
        shards = TarShards(self.root / task)
        probes = {SOURCE: LayoutProbe(), TARGET: LayoutProbe()}
        for i, rec in enumerate(records):
            yield self._row(rec, task, (where, i), shards, probes)

    def _row(self, rec: Any, task: str, where: tuple, shards: TarShards,
             probes: dict[str, LayoutProbe]) -> dict[str, Any]:
        common = dict(subset=task, split="train", category_raw=task,
                      category=CATEGORY.get(task, "other"), raw_record=to_json(rec))
        if not isinstance(rec, dict):
            return self.row(("record", *where), error="record is not a JSON object", **common)
        source, target, instruction = (clean_text(rec.get(f)) for f in (SOURCE, TARGET, INSTRUCTION))
        key = canonical_path(target, task) if target else ("record", *where)
        missing = [f for f, v in ((SOURCE, source), (TARGET, target), (INSTRUCTION, instruction)) if v is None]
        if missing:
            return self.row(key, error=f"missing or empty field: {', '.join(missing)}", **common)
        try:
            source_uri = self._locate(source, task, "src", shards, probes[SOURCE])
            target_uri = self._locate(target, task, "tar", shards, probes[TARGET])
        except (PathEscapeError, ValueError) as e:
            return self.row(key, error=str(e), **common)
        return self.row(
            key, source_uri=source_uri, target_uri=target_uri, instruction=instruction,
            alt_instructions=self._alt_instructions(rec, instruction),
            caption=clean_text(rec.get("caption")),
            native_scores=numeric_scores(rec), **common,
        )

    def _locate(self, rel: str, task: str, role: str, shards: TarShards, probe: LayoutProbe) -> str:
        rel = norm_rel(rel)
        candidates = candidate_paths(self.root, [rel, f"{task}/{rel}"], rel)
        hit = probe.pick(candidates)
        if hit is not None:
            return str(hit)
        return shards.find(rel, task, role) or str(first_present(candidates))

    @staticmethod
    def _alt_instructions(rec: dict, chosen: str) -> list[str] | None:
        """Earlier drafts of the instruction (``instruction``, ``instruction_refine`` ...), if any."""
        alts = []
        for name in sorted(rec):
            text = clean_text(rec[name]) if "instruction" in name and name != INSTRUCTION else None
            if text and text != chosen and text not in alts:
                alts.append(text)
        return alts or None
