"""Probe stage core: measure every sample's media with a real decoder (plain Python, no Ray).

For each `samples` row that ingest resolved (``error`` is null) we open the source (if any) and the
target and write one `probes` row: codec, size, fps, frame count, duration, the frames inside the
clip window, and, when something is wrong, an ``error_kind`` plus a short ``error``.

Video is measured the cheap way, because this runs over tens of millions of clips: PyAV reads the
stream header and counts frames by demuxing packets (no decode), which also finds files cut short.
Decodability is then checked by decoding only the first frame with the decoder the encode stage
uses (decord by default), so e.g. AV1, which decord cannot read, is flagged here and not later.
Files that the judge and the encode read with PyAV alone (``stages.media.forward_read``: H.264/HEVC
4:2:0, exactly indexed) are checked with PyAV during the demux instead: decord's open and its
look-ahead decode cost ~3x the demux, for a decoder that never reads them.
Images are measured with PIL (header, then ``load()`` to verify the pixels). The bytes are found
by ``stages.media.locate`` (paths, tar members, parquet cells; escapes refused).
"""
from __future__ import annotations

import io
import os
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from manifests.schema import PROBES, SCHEMA_VERSION
from stages.media.forward_read import packet_index_problem, reads_exactly
from stages.media.iso_index import cut_iso_file, video_index_problem
from stages.media.locate import MediaError, binary, locate
from stages.media.locate import short_error as _short
from stages.media.read import decord_first_frame, open_image
from stages.media.skip_frames import skipped_window

# A media problem (kind: one of stages.media.locate.ERROR_KINDS; info: the MediaInfo measured before it).
ProbeError = MediaError

DECODE_CHECKS = ("decord", "pyav", "none")

# A window may end a little after the measured duration: published timestamps are rounded and
# re-downloaded videos differ by a frame or two.
WINDOW_TOLERANCE_S = 0.25


@dataclass
class MediaInfo:
    codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    frames: int | None = None
    duration_s: float | None = None
    # Presentation time (s, from the first frame) of every frame, to count frames in a window.
    frame_times: np.ndarray | None = field(default=None, repr=False)


# ------------------------------------------------------------------ video
def probe_video(src: str | io.BytesIO, decode_check: str = "decord") -> MediaInfo:
    import av

    info = MediaInfo()
    try:
        container = av.open(src, metadata_errors="replace")
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        with binary(src) as f:
            cut = cut_iso_file(f)
        if cut:
            raise ProbeError("truncated", cut) from None
        raise ProbeError("corrupt", f"cannot open: {_short(e)}") from None

    with container:
        video = container.streams.video
        if not video or video[0].codec_context is None or video[0].codec_context.codec is None:
            _raise_missing_video(src, container)
        stream = container.streams.video[0]
        ctx = stream.codec_context
        info.codec = getattr(ctx.codec, "canonical_name", None) or ctx.name
        info.width, info.height = (ctx.width or None), (ctx.height or None)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        info.fps = float(rate) if rate else None
        # Read while the container is open: PyAV 18 refuses a closed container's streams.
        declared_rate = bool(stream.average_rate)
        declared = stream.frames or 0  # 0 when the container does not say (mkv, webm)

        # Count frames by demuxing; the PyAV decode check rides along and stops at frame one.
        decoder = ctx if decode_check == "pyav" else None
        decoded = False
        count, pts = 0, []  # pts of the packets that carry one (nearly all)
        last_duration = 0
        # decode_check "decord" on a file the judge and encode read with PyAV alone (the forward
        # reader: H.264/HEVC 4:2:0, every packet with its own pts, a keyframe first, a declared
        # frame count and rate): PyAV decodes frame 0 here instead, decord is not what reads it.
        exact = decode_check == "decord" and reads_exactly(ctx.name, ctx.pix_fmt)
        exact_pts, key_pts, first_pts, frame0 = [], [], None, False
        try:
            for packet in container.demux(stream):
                if not packet.size:  # the empty packet that flushes the demuxer
                    continue
                count += 1
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is not None:
                    pts.append(ts)
                last_duration = packet.duration or last_duration
                if exact:
                    if packet.pts is None:
                        exact = False
                    else:
                        exact_pts.append(packet.pts)
                        if packet.is_keyframe:
                            key_pts.append(packet.pts)
                        if count == 1:
                            first_pts, frame0 = packet.pts, _first_frame(ctx, packet)
                if decoder is not None and not decoded:
                    try:
                        decoded = bool(decoder.decode(packet))
                    except av.error.FFmpegError as e:
                        raise ProbeError("undecodable", f"pyav: {_short(e)}", info) from None
        except av.error.FFmpegError as e:
            raise ProbeError("corrupt", f"demux failed after {count} packets: {_short(e)}",
                             info) from None
        if count == 0:
            raise ProbeError("truncated" if declared else "corrupt", "no video packets", info)
        if declared and count < declared:
            raise ProbeError("truncated", f"{count} of {declared} declared frames present", info)
        info.frames = count
        tb = float(stream.time_base) if stream.time_base else None
        if tb and len(pts) == count:
            times = np.sort((np.asarray(pts, dtype=np.int64) - min(pts)).astype(np.float64) * tb)
            step = last_duration * tb if last_duration else (1 / info.fps if info.fps else 0.0)
            info.frame_times, info.duration_s = times, float(times[-1] + step)
        elif info.fps:
            info.frame_times = np.arange(count) / info.fps
            info.duration_s = count / info.fps
        if decoder is not None and not decoded:
            try:
                decoded = bool(decoder.decode(None))  # drain: short clips may be all in flight
            except av.error.FFmpegError as e:
                raise ProbeError("undecodable", f"pyav: {_short(e)}", info) from None
            if not decoded:
                raise ProbeError("undecodable", "pyav decoded no frame", info)

    exact = exact and frame0 and bool(declared) and declared_rate \
        and first_pts == min(exact_pts) and packet_index_problem(exact_pts, key_pts) is None
    if decode_check == "decord" and not exact:
        # Anything else (and a file whose frame 0 PyAV did not give) keeps decord's check and its
        # error text: decord reads it, or the forward reader may fall back to it.
        try:
            decord_first_frame(src)
        except Exception as e:  # decord raises RuntimeError, DECORDError, AssertionError
            raise ProbeError("undecodable", f"decord: {_short(e)}", info) from None
    return info


def _first_frame(ctx, packet) -> bool:
    """Decode the first packet (a keyframe) alone: drained at once, so the decoder's reorder
    delay costs no further frames. False when no frame comes or FFmpeg objects."""
    import av

    if not packet.is_keyframe:
        return False
    try:
        return bool(ctx.decode(packet) or ctx.decode(None))
    except av.error.FFmpegError:
        return False


def _raise_missing_video(src: str | io.BytesIO, container) -> None:
    """No usable video stream: ``corrupt`` when the file's index is damaged (FFmpeg skips a garbled
    ``moov`` and shows no streams), ``no_video_stream`` only for a file that really has none,
    ``undecodable`` for a video track in a codec FFmpeg does not know."""
    streams = [s.type for s in container.streams]
    exposed = bool(container.streams.video)
    with binary(src) as f:
        problem = video_index_problem(f, exposed)
    if problem:
        raise ProbeError("corrupt", problem)
    if exposed:
        raise ProbeError("undecodable", "the video stream's codec is unknown to FFmpeg")
    if not streams:
        raise ProbeError("corrupt", "the container holds no streams at all")
    raise ProbeError("no_video_stream", f"streams: {streams}")


# ------------------------------------------------------------------ images
def probe_image(src: str | io.BytesIO, decode_check: str = "decord") -> MediaInfo:
    from PIL import Image, UnidentifiedImageError

    info = MediaInfo(frames=1)
    try:
        with open_image(src) as im:
            info.codec = (im.format or "").lower() or None
            info.width, info.height = im.size
            if im.getexif().get(0x0112) in (5, 6, 7, 8):
                # EXIF says "turn by 90 degrees": the size of the upright picture, which is what
                # the judge and the encoder read (stages.media.read.read_image)
                info.width, info.height = info.height, info.width
            info.frames = int(getattr(im, "n_frames", 1) or 1)
            if decode_check != "none":
                im.load()  # decodes the pixels: finds cut and broken files
    except UnidentifiedImageError as e:
        raise ProbeError("corrupt", f"not an image: {_short(e)}", info) from None
    except Image.DecompressionBombError as e:
        raise ProbeError("too_large", _short(e), info) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        kind = "truncated" if "truncated" in str(e).lower() else "corrupt"
        raise ProbeError(kind, _short(e), info) from None
    return info


def probe_media(uri: str, modality: str, decode_check: str = "decord",
                roots: list[str] | None = None) -> MediaInfo:
    """Measure one media file. ``roots``: the dataset's allowed roots (None: no containment check).
    Raises ProbeError for any media problem."""
    if decode_check not in DECODE_CHECKS:
        raise ValueError(f"decode_check must be one of {DECODE_CHECKS}, got {decode_check!r}")
    src = locate(uri, roots)
    if modality == "image":
        return probe_image(src, decode_check)
    return probe_video(src, decode_check)


# ------------------------------------------------------------------ the table
def _backend(modality: str, decode_check: str) -> str:
    if modality == "image":
        return "pil" if decode_check != "none" else "pil-header"
    return {"decord": "pyav+decord", "pyav": "pyav", "none": "pyav-demux"}[decode_check]


def _window_frames(info: MediaInfo, start: float | None, end: float | None,
                   tolerance_s: float) -> int:
    if start is None and end is None:
        return info.frames
    start = 0.0 if start is None else start
    end = info.duration_s if end is None else end
    if info.duration_s is None or info.frame_times is None:
        raise ProbeError("window_out_of_range", "a window is set but the clip has no duration")
    if start < 0 or end is None or start >= end:
        raise ProbeError("window_out_of_range", f"empty or negative window [{start}, {end}) s")
    if end > info.duration_s + tolerance_s:
        raise ProbeError("window_out_of_range",
                         f"window [{start:.3f}, {end:.3f}) s ends after the clip ({info.duration_s:.3f} s)")
    times = info.frame_times
    return int(np.count_nonzero((times >= start - 1e-6) & (times < end - 1e-6)))


def _used_frames(info: MediaInfo, row: dict, tolerance_s: float) -> int:
    """Frames the later stages use: inside the clip window, after the dataset's skip_frames."""
    skip = row.get("skip_frames") or 0
    if skip and info.frames is not None and info.frames <= skip:
        raise ProbeError("window_out_of_range", f"{info.frames} frames, all inside the {skip} skipped "
                                                f"leading frames (the dataset's skip_frames)")
    start, end = skipped_window(row.get("clip_start_s"), row.get("clip_end_s"), skip, info.fps)
    if skip and row.get("clip_start_s") is None and row.get("clip_end_s") is None:
        return info.frames - skip  # no window: every frame after the skipped ones
    return _window_frames(info, start, end, tolerance_s)


class _ProbeCache:
    """Last few results by (uri, modality, roots): Koala clips are windows of one long video,
    listed one after another, so its file is opened once per batch, not once per clip. The roots
    are part of the key: the same file may be allowed for one dataset and not for another."""

    def __init__(self, size: int = 64):
        self.size, self.items = size, OrderedDict()

    def probe(self, uri: str, modality: str, decode_check: str, roots) -> MediaInfo:
        key = (uri, modality, None if roots is None else tuple(roots))
        if key not in self.items:
            try:
                self.items[key] = probe_media(uri, modality, decode_check, roots)
            except ProbeError as e:
                self.items[key] = e
            except Exception as e:  # a decoder bug must not stop a 40M-clip run
                self.items[key] = ProbeError("probe_failed", f"{type(e).__name__}: {_short(e)}")
            if len(self.items) > self.size:
                self.items.popitem(last=False)
        self.items.move_to_end(key)
        result = self.items[key]
        if isinstance(result, ProbeError):
            raise result
        return result


def _probe_row(row: dict, decode_check: str, roots: list[str] | None, cache: _ProbeCache,
               tolerance_s: float) -> dict:
    modality = row.get("modality") or "video"
    out = {f.name: None for f in PROBES}
    out.update(sample_id=row["sample_id"], dataset=row["dataset"], schema_version=SCHEMA_VERSION,
               probe_backend=_backend(modality, decode_check))
    errors: list[tuple[str, str]] = []  # (kind, "role: kind: message"), in probing order
    target = None
    for role in ("source", "target"):
        uri = row.get(f"{role}_uri")
        if uri is None:
            # No source: a raw clip (t2v). No target: an evaluation input (e.g. OpenVE-Bench) whose
            # edit does not exist yet; only a row with neither has nothing to measure.
            if role == "target" and row.get("source_uri") is None:
                errors.append(("missing", "target: missing: no source or target uri"))
            continue
        try:
            info = cache.probe(uri, modality, decode_check, roots)
            if role == "target":
                target = info
        except ProbeError as e:
            errors.append((e.kind, f"{role}: {e.kind}: {e.message}"))
            info = e.info  # what was measured before the failure stays
        if info is not None:
            for name in ("codec", "width", "height", "fps", "frames", "duration_s"):
                out[f"{role}_{name}"] = getattr(info, name)
    if target is not None:
        try:
            out["window_frames"] = target.frames if modality == "image" else _used_frames(
                target, row, tolerance_s)
        except ProbeError as e:
            errors.append((e.kind, f"target: {e.kind}: {e.message}"))
    if errors:
        out["error_kind"] = errors[0][0]
        out["error"] = "; ".join(message for _, message in errors)
    return out


def probe_table(samples: pa.Table, decode_check: str = "decord",
                allowed_roots: dict[str, list[str]] | None = None, *,
                window_tolerance_s: float = WINDOW_TOLERANCE_S) -> pa.Table:
    """One `probes` row per resolved `samples` row (``error`` null), in input order.

    ``allowed_roots``: dataset -> directories its media must (after following symlinks) lie in;
    a dataset missing from a given mapping has no allowed root, so all its rows are path_escape.
    Never raises for bad media; raises ValueError for a bad ``decode_check``."""
    if decode_check not in DECODE_CHECKS:
        raise ValueError(f"decode_check must be one of {DECODE_CHECKS}, got {decode_check!r}")
    real_roots = None if allowed_roots is None else {
        ds: [os.path.realpath(r) for r in roots] for ds, roots in allowed_roots.items()}
    cache = _ProbeCache()
    names = ["sample_id", "dataset", "modality", "source_uri", "target_uri",
             "clip_start_s", "clip_end_s", "error"]
    names += [c for c in ("skip_frames",) if c in samples.column_names]  # older samples parts lack it
    rows = []
    for row in samples.select(names).to_pylist():
        if row["error"] is not None:
            continue  # ingest could not resolve it; its reason is in `samples`
        roots = None if real_roots is None else real_roots.get(row["dataset"], [])
        rows.append(_probe_row(row, decode_check, roots, cache, window_tolerance_s))
    return pa.Table.from_pylist(rows, schema=PROBES)
