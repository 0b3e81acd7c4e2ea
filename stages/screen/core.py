"""Screen one slice of samples, without Ray: fingerprints, copy score and motion per sample.

Every sample of the slice gets one ``screens`` row: the probe's failures are carried as an error
row (``error_kind`` = probe) and a media problem met here becomes an error row too, so nothing is
lost. The grouping over the whole corpus is stages/screen/groups.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from manifests.schema import SCHEMA_VERSION
from stages.judge.schema import sample_kind
from stages.media.locate import MediaError
from stages.media.locate import short_error as _short
from stages.screen.frames import Frames, read_media
from stages.screen.motion import clip_motion
from stages.screen.phash import ONE_FRAME_WEAK_PER_HALF, WEAK_PER_HALF, WINDOWS, frame_fingerprint, window_hashes
from stages.screen.schema import SCREENS


@dataclass(frozen=True)
class Settings:
    step_s: float = 0.25
    max_frames: int = 16

    @classmethod
    def of(cls, screen_cfg) -> "Settings":
        return cls(screen_cfg.frame_step_s, screen_cfg.max_frames)


# Frames per side hashed on the windows too: enough that a crop's candidate pair is found and
# verified on two frames, few enough that the windows cost 4 x 15 hashes a side, not 16 x 15.
WINDOW_FRAMES = 4
# What a screens part's hash columns hold (the stage's fingerprint: parts of another layout are redone).
FINGERPRINT_LAYOUT = f"phash64+weak{WEAK_PER_HALF}/{ONE_FRAME_WEAK_PER_HALF}+{WINDOW_FRAMES}x{len(WINDOWS)}windows"


def window_frames(informative: list[bool], n: int = WINDOW_FRAMES) -> list[int]:
    """Indices of up to n informative frames spread evenly over the clip."""
    idx = [k for k, i in enumerate(informative) if i]
    if len(idx) <= n:
        return idx
    return sorted({idx[int((j + 0.5) * len(idx) / n)] for j in range(n)})


def side_fingerprint(frames: Frames, side: str) -> dict:
    """The ``screens`` columns of one side: hashes, weak bits, informative, times and windows."""
    per_half = ONE_FRAME_WEAK_PER_HALF if len(frames.gray) == 1 else WEAK_PER_HALF
    prints = [frame_fingerprint(g, per_half) for g in frames.gray]
    informative = [i for _, _, i in prints]
    chosen = window_frames(informative)
    return {f"{side}_hashes": [h for h, _, _ in prints], f"{side}_weak": [w for _, w, _ in prints],
            f"{side}_informative": informative, f"{side}_times": frames.times.tolist(),
            f"{side}_windows": [h for k in chosen for h in window_hashes(frames.gray[k])],
            f"{side}_window_frames": chosen}


COPY_BLOCK = 8  # pixels of the SIDE x SIDE grey frames per block of the copy score


def copy_score(source: Frames, target: Frames) -> float:
    """How much the most changed place of the frame changed: per pair of frames at the same time,
    the largest mean absolute grey difference (/255) over COPY_BLOCK-pixel blocks, averaged over the
    pairs. A local edit (a subtitle, an added object) changes one place a lot, which a whole-frame
    mean would dilute; a re-encode changes every place a little."""
    n = min(len(source.gray), len(target.gray))
    diff = np.abs(source.gray[:n] - target.gray[:n])
    side = diff.shape[1] // COPY_BLOCK
    blocks = diff[:, :side * COPY_BLOCK, :side * COPY_BLOCK].reshape(n, side, COPY_BLOCK, side, COPY_BLOCK)
    return float(blocks.mean(axis=(2, 4)).reshape(n, -1).max(axis=1).mean() / 255.0)


def screen_row(row: dict, settings: Settings, roots: list[str] | None = None) -> dict:
    """One ``screens`` row of a probed samples row (a dict of the samples columns)."""
    kind = sample_kind(row.get("modality"), row.get("task"), row.get("source_uri"))
    out: dict = {"sample_id": row["sample_id"], "dataset": row["dataset"], "kind": kind,
                 "schema_version": SCHEMA_VERSION}
    modality = row.get("modality") or "video"
    try:
        window = (row.get("clip_start_s"), row.get("clip_end_s"))
        target = None
        if row.get("target_uri") or not row.get("source_uri"):  # a sample may publish its source only
            target = read_media(row["target_uri"], modality, roots, settings.step_s, settings.max_frames, *window)
            out.update(side_fingerprint(target, "target"))
        if row.get("source_uri"):
            source = read_media(row["source_uri"], modality, roots, settings.step_s, settings.max_frames, *window)
            out.update(side_fingerprint(source, "source"))
            if target is not None:
                out["copy_score"] = copy_score(source, target)
        elif kind == "clip":
            m = clip_motion(target.gray, target.times)
            out.update(motion_score=m.motion, content_motion=m.content_motion, camera_share=m.camera_share)
    except MediaError as e:
        out.update(error_kind=e.kind, error=str(e)[:300])
    except Exception as e:  # a decoder's own failure: the sample becomes an error row, the unit goes on
        out.update(error_kind="undecodable", error=f"screen: {_short(e)}")
    return out


def screen_table(samples: pa.Table, probe_errors: dict[str, str], settings: Settings,
                 roots: list[str] | None = None) -> pa.Table:
    """``screens`` rows of a slice of samples; ``probe_errors``: sample_id -> the probe's error."""
    rows = []
    for row in samples.to_pylist():
        if row["sample_id"] in probe_errors:
            rows.append({"sample_id": row["sample_id"], "dataset": row["dataset"], "error_kind": "probe",
                         "error": f"not screened: the probe failed ({probe_errors[row['sample_id']]})"[:300],
                         "schema_version": SCHEMA_VERSION,
                         "kind": sample_kind(row.get("modality"), row.get("task"), row.get("source_uri"))})
        else:
            rows.append(screen_row(row, settings, roots))
    return pa.Table.from_pylist(rows, schema=SCREENS)
