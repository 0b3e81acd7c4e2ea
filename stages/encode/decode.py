"""CPU side of the encode stage: decode a sample's media, cut it to its frame plan and fit it to
its bucket (plain Python over NumPy; no Ray, no models).

What one sample becomes (``DecodedSample``): a few named clips of uint8 frames [T, H, W, 3], all in
one bucket, and one ``KeySpec`` per shard key saying which clip is the target, which is the
source, and whether the source is still to be perturbed (cube / tube: done by the caller, from the
seeded generator, so the decoded payload stays one copy of the pixels).

- Edit pairs (image or video): variant ``edit``; target and source on the same time grid. With the
  same frame rate (the usual case) both take the same native indices; otherwise each side maps the
  grid's times onto its own frames. The frame count is what both sides hold.
- Raw clips (``task`` t2v: Koala windows, MotionBench): the variants ``draw_variants`` gives. The
  target is the clip itself; ``none`` has no source; ``cube``/``tube`` perturb the target's frames;
  ``speed`` reads the source ``pretext.speed_factor`` times faster from the same start
  (``speed_plan``), so its target may be a shorter prefix of the clip.
- Images are 1-frame videos. The bucket follows the target's aspect ratio.

Failures never raise: a sample that cannot be read is a ``DecodedSample`` whose keys carry an
``error`` ("<kind>: <message>", kinds: missing ..., undecodable, too_short, no_target, pretext).
"""
from __future__ import annotations

import io
import json
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field

import numpy as np

from stages.media.buckets import fit_to_bucket, nearest_bucket
from stages.media.frames import frame_count, frames_that_fit, largest_4n1, plan_indices
from stages.media.locate import MediaError, locate
from stages.media.locate import short_error as _short
from stages.media.open_videos import VIDEOS
from stages.media.read import Video, read_image
from stages.media.skip_frames import skipped_window


# A media problem of one sample; ``kind`` goes into the error row.
DecodeError = MediaError


@dataclass
class KeySpec:
    """One shard key of a sample: which clips make it and what was done to them."""

    variant: str  # edit | none | cube | speed | tube
    target: str | None = None  # clip name in DecodedSample.clips
    source: str | None = None  # clip name, None when the key has no source
    perturb: bool = False  # source = perturb_source(variant, clips[source]) (cube, tube)
    target_indices: list[int] | None = None
    source_indices: list[int] | None = None
    pretext: dict = field(default_factory=dict)
    error: str | None = None


@dataclass
class DecodedSample:
    sample: dict  # sample_id, dataset, modality, task, instruction, caption
    bucket: tuple[int, int] | None = None
    fps: float | None = None  # output frame rate (None for images)
    clips: dict[str, np.ndarray] = field(default_factory=dict)
    keys: list[KeySpec] = field(default_factory=list)


def pack_decoded(samples: list[DecodedSample]) -> tuple[str, bytes]:
    """A unit's decoded samples as (JSON, safetensors) for the hand-off from a decode task to an
    encoder actor: plain data and one flat buffer of frames, no pickle."""
    from safetensors.numpy import save

    meta = [{"sample": s.sample, "bucket": s.bucket, "fps": s.fps, "clips": sorted(s.clips),
             "keys": [asdict(k) for k in s.keys]} for s in samples]
    frames = {f"{i}/{name}": np.ascontiguousarray(clip) for i, s in enumerate(samples)
              for name, clip in s.clips.items()}
    return json.dumps(meta, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)), save(frames)


def unpack_decoded(meta: str, blob: bytes) -> list[DecodedSample]:
    from safetensors.numpy import load

    frames = load(bytes(blob))
    return [DecodedSample(sample=m["sample"], bucket=tuple(m["bucket"]) if m["bucket"] else None, fps=m["fps"],
                          clips={name: frames[f"{i}/{name}"] for name in m["clips"]},
                          keys=[KeySpec(**k) for k in m["keys"]])
            for i, m in enumerate(json.loads(meta))]


# ------------------------------------------------------------------ reading media
def _open(uri: str | None, role: str, roots: list[str] | None) -> str | io.BytesIO:
    if uri is None:
        raise DecodeError("no_" + role, f"the sample has no {role}")
    try:
        return locate(uri, roots)
    except MediaError as e:
        raise DecodeError(e.kind, f"{role}: {e.message}") from None


# ------------------------------------------------------------------ frame plans
def anchor_indices(num_frames: int, n: int, mode: str = "uniform") -> list[int]:
    """``n`` anchor frames. uniform: the centres of ``n`` equal segments of the clip (the middle
    frame for n = 1; frame 0 of an image). middle: the middle frame (n = 1). first: frame 0 and,
    for n > 1, evenly spaced frames up to the last (the official SAMA code's first frame)."""
    if mode == "first":
        return [0] if n == 1 else [round(i * (num_frames - 1) / (n - 1)) for i in range(n)]
    if mode == "middle":
        return [num_frames // 2]
    return [min(num_frames - 1, (2 * i + 1) * num_frames // (2 * n)) for i in range(n)]


def _count(fit: int, cfg) -> int:
    """Output frames for a clip with room for ``fit``: num_frames, the longest 4n+1, or 0."""
    n = frame_count(fit, cfg.num_frames, cfg.frame_policy)
    return n if n >= cfg.min_frames else 0


def _too_short(fit: int, cfg, what: str = "clip") -> DecodeError:
    need = cfg.num_frames if cfg.frame_policy == "exact" else cfg.min_frames
    return DecodeError("too_short", f"the {what} holds {fit} frames at {cfg.fps:g} fps, "
                                    f"{need} needed (encode.frame_policy {cfg.frame_policy})")


# ------------------------------------------------------------------ one sample
def decode_sample(row: dict, cfg, pretext_cfg, seed: int, backend: str = "decord",
                  roots: list[str] | None = None) -> DecodedSample:
    """Decode one plan row (samples columns plus probe facts) into its keys' clips.

    ``cfg``: EncodeConfig; ``pretext_cfg``: PretextConfig; ``seed``: run.seed. Never raises for
    bad media: the keys carry the error.
    """
    from stages.pretext import draw_variants

    sample = {k: row.get(k) for k in ("sample_id", "dataset", "modality", "task", "instruction", "caption")}
    raw = row.get("task") == "t2v"
    variants = draw_variants(row["sample_id"], seed, pretext_cfg) if raw else ["edit"]
    out = DecodedSample(sample, fps=None if row.get("modality") == "image" else float(cfg.fps))
    try:
        with ExitStack() as held:
            if row.get("modality") == "image":
                _decode_image_pair(row, cfg, out, roots)
            elif raw:
                from stages.pretext import speed_factor_for

                _decode_raw_clip(row, cfg, pretext_cfg, variants, out, backend, roots,
                                 speed_factor_for(pretext_cfg, seed, row["sample_id"]), held)
            else:
                _decode_video_pair(row, cfg, out, backend, roots, held)
    except DecodeError as e:
        out.clips = {}
        out.keys = [KeySpec(v, error=str(e)) for v in variants]
    except Exception as e:  # a decoder bug must not stop the run: the sample is an error row
        out.clips = {}
        out.keys = [KeySpec(v, error=f"undecodable: {type(e).__name__}: {_short(e)}") for v in variants]
    return out


def _bucket_for(frames: np.ndarray, cfg) -> tuple[int, int]:
    return nearest_bucket(frames.shape[2], frames.shape[1], cfg.bucket_list())


def _decode_image_pair(row: dict, cfg, out: DecodedSample, roots) -> None:
    target = read_image(_open(row.get("target_uri"), "target", roots))
    out.bucket = _bucket_for(target, cfg)
    out.clips["target"] = fit_to_bucket(target, out.bucket)
    spec = KeySpec("edit", target="target", target_indices=[0])
    if row.get("source_uri") is not None:
        out.clips["source"] = fit_to_bucket(read_image(_open(row["source_uri"], "source", roots)), out.bucket)
        spec.source, spec.source_indices = "source", [0]
    out.keys = [spec]


def _window(row: dict, video: "Video | None" = None) -> dict:
    """The part of ``video`` used: the clip window, after the dataset's skip_frames leading frames
    (stages/media/skip_frames.py; the fps is the video's own, source and target may differ)."""
    start, end = row.get("clip_start_s"), row.get("clip_end_s")
    if video is not None:
        start, end = skipped_window(start, end, row.get("skip_frames"), video.fps)
    return {"start_s": start, "end_s": end}


def _video(row: dict, role: str, backend: str, roots, held: ExitStack) -> Video:
    """The role's video, open until ``held`` closes, then kept for the unit's next sample of it
    (stages/media/open_videos.py: one open per source video and unit)."""
    uri = row.get(f"{role}_uri")
    src = _open(uri, role, roots)
    try:
        return held.enter_context(VIDEOS.use(uri, src, backend, row.get(f"{role}_frames"), row.get(f"{role}_fps")))
    except DecodeError:
        raise
    except Exception as e:
        raise DecodeError("undecodable", f"{role}: {type(e).__name__}: {_short(e)}") from None


def _decode_video_pair(row: dict, cfg, out: DecodedSample, backend: str, roots, held: ExitStack) -> None:
    target = _video(row, "target", backend, roots, held)
    source = _video(row, "source", backend, roots, held) if row.get("source_uri") is not None else None
    win = _window(row, target)
    fit = frames_that_fit(target.frames, target.fps, cfg.fps, **win)
    if source is not None:
        fit = min(fit, frames_that_fit(source.frames, source.fps, cfg.fps, **_window(row, source)))
    n = _count(fit, cfg)
    if n == 0:
        raise _too_short(fit, cfg)
    t_idx = plan_indices(target.frames, target.fps, cfg.fps, n, count=n, **win)
    frames = target.read(t_idx)
    out.bucket = _bucket_for(frames, cfg)
    out.clips["target"] = fit_to_bucket(frames, out.bucket)
    spec = KeySpec("edit", target="target", target_indices=t_idx)
    if source is not None:
        s_idx = plan_indices(source.frames, source.fps, cfg.fps, n, count=n, **_window(row, source))
        out.clips["source"] = fit_to_bucket(source.read(s_idx), out.bucket)
        spec.source, spec.source_indices = "source", s_idx
    out.keys = [spec]


def _decode_raw_clip(row: dict, cfg, pretext_cfg, variants: list[str], out: DecodedSample,
                     backend: str, roots, factor: float, held: ExitStack) -> None:
    from stages.pretext import speed_plan, speed_record

    video = _video(row, "target", backend, roots, held)
    win = _window(row, video)
    fit = frames_that_fit(video.frames, video.fps, cfg.fps, **win)
    n = _count(fit, cfg)
    if n == 0:
        raise _too_short(fit, cfg)
    t_idx = plan_indices(video.frames, video.fps, cfg.fps, n, count=n, **win)
    wanted = list(t_idx)
    speed = None
    if "speed" in variants:
        st, ss = speed_plan(video.frames, video.fps, cfg.fps, cfg.num_frames, factor,
                            policy=cfg.frame_policy, **win)
        if len(st) >= cfg.min_frames:
            speed = (st, ss)
            wanted += st + ss
    # One decode of every frame any clip of the sample needs.
    got = video.read(sorted(set(wanted)))
    pos = {i: k for k, i in enumerate(sorted(set(wanted)))}
    take = lambda idx: got[[pos[i] for i in idx]]  # noqa: E731
    out.bucket = _bucket_for(got[:1], cfg)
    out.clips["target"] = fit_to_bucket(take(t_idx), out.bucket)
    for v in variants:
        spec = KeySpec(v, target="target", target_indices=t_idx)
        if v in ("cube", "tube"):
            spec.source, spec.source_indices, spec.perturb = "target", t_idx, True
        elif v == "speed":
            if speed is None:
                fit_s = frames_that_fit(video.frames, video.fps, cfg.fps, factor, **win)
                spec.error = str(_too_short(fit_s, cfg, f"clip played {factor:g}x faster"))
            else:
                st, ss = speed
                if st != t_idx:  # a shorter target (the clip is too short for a full fast source)
                    out.clips["speed_target"] = fit_to_bucket(take(st), out.bucket)
                    spec.target = "speed_target"
                out.clips["speed_source"] = fit_to_bucket(take(ss), out.bucket)
                spec.target_indices, spec.source, spec.source_indices = st, "speed_source", ss
                spec.pretext = speed_record(factor, st, ss)
        out.keys.append(spec)
