"""MotionBench, caption split: ``MotionBenchCaption-train/train.jsonl`` lines of
``{video_path, motion_caption}``, videos in ``MotionBenchCaption-train/videos/``.

Only the caption split is training data; the QA split (``video_info.meta.jsonl``) is an
evaluation set and is deliberately not read. The natural key is ``video_path`` as published.

Confirmed on the Hub (zai-org/MotionBench): ``MotionBenchCaption-train/`` holds ``train.jsonl`` and
``videos/`` (18.6 GB). The record field names and how ``videos/`` is packed are not confirmed, so
the adapter is tolerant: a few field spellings (``video_path``/``video``/``path``,
``motion_caption``/``caption``), three path spellings, and videos either extracted or as members
of tar shards in the video folder (found by file name). A video found nowhere is an error row that
lists where it was looked for.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from stages.ingest.base import Adapter, SourceRange, resolve_under, to_json, unit_key
from stages.ingest.image_edit_common import iter_json_lines
from stages.ingest.video_pairs import NotFoundError, TarShards

CAPTION_FIELDS = ("motion_caption", "caption")  # the second only as a tolerated variant
VIDEO_FIELDS = ("video_path", "video", "path")  # likewise


class MotionBenchAdapter(Adapter):
    name = "motionbench"
    fields_used = (*VIDEO_FIELDS, *CAPTION_FIELDS)  # record fields read (curate inspect lists the others)
    modality = "video"
    task = "t2v"

    def units(self) -> list[SourceRange]:
        # Listed even when missing, so a wrong `jsonl` setting shows up as a unit error row
        # instead of silently ingesting nothing.
        path = self.root / self.cfg.jsonl
        return [SourceRange(self.name, unit_key(self.root, path), str(path))]

    def video_rel(self, video_path: str) -> str:
        """``video_path`` relative to the dataset root.

        The published form is unconfirmed, so the common spellings are accepted without touching
        the filesystem: relative to the root (``MotionBenchCaption-train/videos/x.mp4``), to the
        video folder's parent (``videos/x.mp4``) or to the video folder (``x.mp4``).
        """
        video_dir = PurePosixPath(self.cfg.video_dir)
        p = PurePosixPath(video_path.replace("\\", "/").removeprefix("./"))
        if p.is_absolute() or p.parts[: len(video_dir.parts)] == video_dir.parts:
            return str(p)
        if p.parts[:1] == video_dir.parts[-1:]:
            return str(video_dir.parent / p)
        return str(video_dir / p)

    def locate(self, video_path: str) -> str:
        """The extracted file, else a member of a tar shard in the video folder (by file name)."""
        path = resolve_under(self.root, self.video_rel(video_path))
        if path.is_file():
            return str(path)
        member = self._shards.find(os.path.basename(video_path))
        if member is not None:
            return member
        raise NotFoundError("video_path", video_path, [str(path), f"members of {self._shards.describe()}"])

    def read(self, unit: SourceRange) -> Iterator[dict[str, Any]]:
        self._shards = TarShards(self.root, [self.root / self.cfg.video_dir])
        path = Path(unit.path)
        # Blank lines are not records; a bad byte, a BOM or a too deeply nested line spoils one line.
        for lineno, text, rec, reason in iter_json_lines(path):
            yield self.guarded(("bad-line", path.name, lineno), {"line": lineno, "text": text},
                               self._line_row, path, lineno, text, rec, reason,
                               category="motion", subset="caption", split="train")

    def _line_row(self, path: Path, lineno: int, text: str, rec: Any, reason: str | None) -> dict[str, Any]:
        common = dict(category="motion", subset="caption", split="train")
        if reason:
            # MotionBench's own wording of the two common cases (kept: it is in existing manifests)
            reason = re.sub(r"^line (\d+): malformed JSON: ", r"malformed JSON line \1: ", reason)
            reason = re.sub(r"^line (\d+): expected a JSON object, got \w+$", r"line \1 is not a JSON object", reason)
            # No natural key can be read: key on the line's place and content (stable for a file).
            digest = hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()[:12]
            return self.error_row(("bad-line", path.name, lineno, digest), reason,
                                  record={"line": lineno, "text": text}, **common)

        video_path = next((rec[k] for k in VIDEO_FIELDS if isinstance(rec.get(k), str) and rec[k].strip()), None)
        if video_path is None:
            return self.error_row(("no-video_path", path.name, lineno), "missing video_path", rec, **common)
        caption = next((rec[k] for k in CAPTION_FIELDS if isinstance(rec.get(k), str) and rec[k].strip()), None)
        if caption is None:
            return self.error_row(video_path, "missing motion_caption", rec, **common)
        try:
            target = self.locate(video_path)
        except ValueError as e:  # escapes, not found, a path no file system can hold
            return self.error_row(video_path, str(e), rec, caption=caption, **common)
        return self.row(
            video_path,
            target_uri=str(target),
            instruction=caption,
            caption=caption,
            raw_record=to_json(rec),
            **common,
        )
