"""Build the judge's OpenAI chat requests the way Qwen2.5-VL expects its inputs.

Frames are chosen and sized with qwen-vl-utils' rules (``smart_nframes``: ``fps`` frames per
second of video, clamped to [min_frames, max_frames] and to an even count; ``smart_resize``: sides
multiples of 28 with the pixel count in [min_pixels, max_pixels], where a video's per-frame
ceiling also shrinks with its frame count through ``total_pixels``). When ``qwen_vl_utils`` is
importable (it needs torch and torchvision) its own functions do the math; otherwise an
equivalent copy below does, and a test checks that the two agree.

Both videos of a pair go in one request, each as ``data:video/jpeg;base64,<f1>,<f2>,...`` (vLLM's
frame-list form: the server does not decode or re-sample a video file); images go as
``data:image/jpeg;base64,...``. Media are read through ``stages.media.locate``, so plain paths,
``tar://`` members and ``parquet://`` cells work as everywhere else in the pipeline, and a clip
window (Koala-36M) is honoured like qwen-vl-utils' ``video_start``/``video_end``.
"""
from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from stages.judge.prompts import MEDIA_SLOTS, Prompt
from stages.judge.schema import sample_kind
from stages.media.locate import MediaError, locate
from stages.media.open_videos import VIDEOS, OpenVideos
from stages.media.read import open_image
from stages.media.skip_frames import skipped_window

FRAME_FACTOR = 2  # qwen-vl-utils: frame counts are even (Qwen2.5-VL merges 2 frames per step)
SPATIAL_MERGE_SIZE = 2
MAX_RATIO = 200


class InputError(Exception):
    """The sample's media or text cannot make a request (becomes status input_error)."""


# ------------------------------------------------------------------ qwen-vl-utils' math
@lru_cache(maxsize=1)
def qwen_vision_process():
    """qwen_vl_utils.vision_process, or None when it (or torch/torchvision) is not installed."""
    try:
        from qwen_vl_utils import vision_process
    except Exception:  # ImportError, or a torch/torchvision that fails to load
        return None
    return vision_process


def _smart_resize_copy(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """qwen_vl_utils.smart_resize, for machines without torch (same arithmetic)."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(f"absolute aspect ratio must be smaller than {MAX_RATIO}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _smart_nframes_copy(ele: dict, total_frames: int, video_fps: float) -> int:
    """qwen_vl_utils.smart_nframes (fps form), for machines without torch."""
    fps = ele["fps"]
    min_frames = math.ceil(ele["min_frames"] / FRAME_FACTOR) * FRAME_FACTOR
    max_frames = math.floor(ele["max_frames"] / FRAME_FACTOR) * FRAME_FACTOR
    nframes = total_frames / video_fps * fps
    nframes = min(min(max(nframes, min_frames), max_frames), total_frames)
    nframes = math.floor(nframes / FRAME_FACTOR) * FRAME_FACTOR
    if not FRAME_FACTOR <= nframes <= total_frames:
        raise ValueError(f"nframes should in interval [{FRAME_FACTOR}, {total_frames}], but got {nframes}.")
    return nframes


def _frame_range_copy(ele: dict, total_frames: int, video_fps: float) -> tuple[int, int, int]:
    """qwen_vl_utils.calculate_video_frame_range, for machines without torch."""
    start, end = ele.get("video_start"), ele.get("video_end")
    if start is None and end is None:
        return 0, total_frames - 1, total_frames
    max_duration = total_frames / video_fps
    first = math.ceil(max(0.0, min(start, max_duration)) * video_fps) if start is not None else 0
    last = total_frames - 1
    if end is not None:
        last = min(math.floor(max(0.0, min(end, max_duration)) * video_fps), total_frames - 1)
    if first >= last:
        raise ValueError(f"Invalid time range: start frame {first} is not before end frame {last}")
    return first, last, last - first + 1


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    vp = qwen_vision_process()
    if vp is not None:
        return vp.smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    return _smart_resize_copy(height, width, factor, min_pixels, max_pixels)


def smart_nframes(ele: dict, total_frames: int, video_fps: float) -> int:
    vp = qwen_vision_process()
    if vp is not None:
        return vp.smart_nframes(ele, total_frames=total_frames, video_fps=video_fps)
    return _smart_nframes_copy(ele, total_frames, video_fps)


def frame_range(ele: dict, total_frames: int, video_fps: float) -> tuple[int, int, int]:
    vp = qwen_vision_process()
    if vp is not None:
        return vp.calculate_video_frame_range(ele, total_frames, video_fps)
    return _frame_range_copy(ele, total_frames, video_fps)


@dataclass(frozen=True)
class FramePlan:
    indices: list[int]  # frames of the file to send
    height: int  # every frame is resized to this
    width: int
    sample_fps: float  # frames per second of video time in what is sent


def video_ele(cfg, start_s: float | None = None, end_s: float | None = None) -> dict[str, Any]:
    """The qwen-vl-utils video element our config stands for."""
    ele: dict[str, Any] = dict(fps=cfg.fps, min_frames=cfg.min_frames, max_frames=cfg.max_frames,
                               min_pixels=cfg.video_min_pixels, max_pixels=cfg.video_max_pixels,
                               total_pixels=cfg.video_total_pixels)
    if start_s is not None:
        ele["video_start"] = float(start_s)
    if end_s is not None:
        ele["video_end"] = float(end_s)
    return ele


def plan_video(total_frames: int, video_fps: float, height: int, width: int, cfg,
               start_s: float | None = None, end_s: float | None = None, skip_frames: int = 0) -> FramePlan:
    """Which frames, at which size: qwen-vl-utils' fetch_video arithmetic, over the video after its
    first ``skip_frames`` frames (a dataset setting: OpenVE-3M's first 4 are not training data)."""
    return _plan_indices(total_frames, video_fps, cfg, start_s, end_s, skip_frames).sized(height, width, cfg)


@dataclass(frozen=True)
class _Indices:
    """The frames fetch_video takes; the size comes after, from the decoded frames."""
    indices: list[int]
    nframes: int
    n_in_range: int
    video_fps: float
    ele: dict

    def sized(self, height: int, width: int, cfg) -> FramePlan:
        factor = cfg.image_patch_size * SPATIAL_MERGE_SIZE
        min_pixels = self.ele["min_pixels"]
        # fetch_video's per-frame ceiling: the long-video budget total_pixels shared by the frames.
        ceiling = max(min(768 * factor * factor, self.ele["total_pixels"] / self.nframes * FRAME_FACTOR),
                      int(min_pixels * 1.05))
        max_pixels = min(self.ele["max_pixels"], ceiling)
        h, w = smart_resize(height, width, factor, min_pixels, max_pixels)
        return FramePlan(self.indices, h, w, self.nframes / max(self.n_in_range, 1e-6) * self.video_fps)


def _plan_indices(total_frames: int, video_fps: float, cfg, start_s: float | None, end_s: float | None,
                  skip_frames: int) -> _Indices:
    start_s, end_s = skipped_window(start_s, end_s, skip_frames, video_fps)
    ele = video_ele(cfg, start_s, end_s)
    first, last, n_in_range = frame_range(ele, total_frames, video_fps)
    nframes = smart_nframes(ele, n_in_range, video_fps)
    # np.round and torch.round both round half to even: the same indices as qwen-vl-utils.
    indices = np.round(np.linspace(first, last, nframes)).astype(np.int64).tolist()
    return _Indices(indices, nframes, n_in_range, video_fps, ele)


def image_size(height: int, width: int, cfg) -> tuple[int, int]:
    factor = cfg.image_patch_size * SPATIAL_MERGE_SIZE
    return smart_resize(height, width, factor, cfg.image_min_pixels, cfg.image_max_pixels)


# ------------------------------------------------------------------ decoding
def _open(uri: str, roots: list[str] | None):
    try:
        return locate(uri, roots)
    except MediaError as e:
        raise InputError(f"{e.kind}: {e.message}") from None


def read_video_frames(uri: str, cfg, start_s: float | None = None, end_s: float | None = None,
                      roots: list[str] | None = None, skip_frames: int | None = 0,
                      videos: OpenVideos = VIDEOS) -> tuple[list[np.ndarray], FramePlan]:
    """The frames to send (RGB arrays at file resolution) and the plan that chose them, read by
    ``stages.media.read.Video`` (judge.video_reader; decord falls back to PyAV). The video stays
    open in ``videos`` for the unit's next window of it; only the planned frames are decoded (the
    size is taken from them, not from a separate decode of frame 0)."""
    src = _open(uri, roots)
    try:
        with videos.use(uri, src, cfg.video_reader) as video:
            chosen = _plan_indices(video.frames, video.fps, cfg, start_s, end_s, skip_frames or 0)
            frames = video.read(chosen.indices)
        return list(frames), chosen.sized(frames.shape[1], frames.shape[2], cfg)
    except Exception as e:  # MediaError; decord raises RuntimeError/DECORDError; PyAV FFmpegError
        raise InputError(f"cannot decode video: {type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200] if str(e) else ''}") from None


def _jpeg_b64(image, quality: int) -> str:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def video_data_uri(frames: list[np.ndarray], plan: FramePlan, quality: int) -> str:
    """``data:video/jpeg;base64,<f1>,<f2>,...``: every frame resized to the plan's size."""
    from PIL import Image

    encoded = []
    for frame in frames:
        im = Image.fromarray(frame)
        if im.size != (plan.width, plan.height):
            im = im.resize((plan.width, plan.height), Image.Resampling.BICUBIC)
        encoded.append(_jpeg_b64(im, quality))
    return "data:video/jpeg;base64," + ",".join(encoded)


def image_data_uri(uri: str, cfg, roots: list[str] | None = None) -> str:
    from PIL import Image, ImageOps

    src = _open(uri, roots)
    try:
        with open_image(src) as im:
            # Upright by its EXIF orientation, as the encoder sees it (stages.media.read.read_image):
            # the judge must score the picture that is trained on, not a sideways phone photo.
            im = ImageOps.exif_transpose(im)
            im = im.convert("RGB") if im.mode != "RGBA" else _flatten_alpha(im)
            h, w = image_size(im.height, im.width, cfg)
            if im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BICUBIC)
            return "data:image/jpeg;base64," + _jpeg_b64(im, cfg.jpeg_quality)
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"cannot decode image: {type(e).__name__}: {e}") from None


def _flatten_alpha(im):
    # qwen-vl-utils' to_rgb: transparent pixels become white, not black.
    from PIL import Image

    out = Image.new("RGB", im.size, (255, 255, 255))
    out.paste(im, mask=im.split()[3])
    return out


# ------------------------------------------------------------------ the answer's schema
def reason_pattern(max_chars: int) -> str:
    # Plain characters only: no quotes, backslashes or newlines to escape, and a hard length cap,
    # so a constrained decoder cannot run away inside the string.
    return "^[A-Za-z0-9 ,.;:'()/%+-]{0," + str(int(max_chars)) + "}$"


def answer_schema(metrics: list[str], cfg) -> dict[str, Any]:
    """JSON schema of the answer: one integer in [score_min, score_max] per metric, in order,
    then an optional short reason."""
    props: dict[str, Any] = {m: {"type": "integer", "minimum": cfg.score_min, "maximum": cfg.score_max}
                             for m in metrics}
    if cfg.reason:
        # The pattern bounds the length itself: xgrammar (vLLM) refuses pattern + maxLength together.
        props["reason"] = {"type": "string", "pattern": reason_pattern(cfg.reason_max_chars)}
    return {"type": "object", "properties": props, "required": list(metrics), "additionalProperties": False}


def response_format(kind: str, metrics: list[str], cfg) -> dict[str, Any]:
    return {"type": "json_schema",
            "json_schema": {"name": f"judge_{kind}", "strict": True, "schema": answer_schema(metrics, cfg)}}


# ------------------------------------------------------------------ the request
def _text_of(row: dict, kind: str) -> dict[str, str]:
    if kind == "clip":
        caption = row.get("caption") or row.get("instruction")
        if not caption:
            raise InputError("a raw clip needs a caption to be judged, and this one has none")
        return {"caption": caption, "instruction": row.get("instruction") or caption}
    if not row.get("instruction"):
        raise InputError("an edit pair needs its instruction to be judged, and this one has none")
    return {"instruction": row["instruction"], "caption": row.get("caption") or ""}


def media_parts(row: dict, kind: str, cfg, roots: list[str] | None = None) -> dict[str, dict]:
    """Slot -> OpenAI content part, for every medium the kind needs."""
    uris = {"source_video": row.get("source_uri"), "edited_video": row.get("target_uri"),
            "source_image": row.get("source_uri"), "edited_image": row.get("target_uri"),
            "video": row.get("target_uri") or row.get("source_uri")}
    parts = {}
    for slot in MEDIA_SLOTS[kind]:
        uri = uris[slot]
        if not uri:
            raise InputError(f"no {slot.replace('_', ' ')} uri")
        try:
            if slot.endswith("image"):
                parts[slot] = {"type": "image_url", "image_url": {"url": image_data_uri(uri, cfg, roots)}}
            else:
                # A window (Koala-36M) applies to the clip it was cut from: the target of a t2v row.
                window = (row.get("clip_start_s"), row.get("clip_end_s")) if slot != "source_video" else (None, None)
                frames, plan = read_video_frames(uri, cfg, *window, roots=roots,
                                                 skip_frames=row.get("skip_frames") or 0)
                parts[slot] = {"type": "video_url",
                               "video_url": {"url": video_data_uri(frames, plan, cfg.jpeg_quality)}}
        except InputError as e:
            raise InputError(f"{slot}: {e}") from None
    return parts


def build_request(row: dict, prompt: Prompt, cfg, roots: list[str] | None = None) -> dict[str, Any]:
    """The chat-completions body for one samples row (raises InputError)."""
    kind = prompt.kind
    if row.get("error"):
        raise InputError(f"ingest could not resolve the sample: {row['error']}")
    texts = _text_of(row, kind)
    media = media_parts(row, kind, cfg, roots)
    content: list[dict[str, Any]] = []
    for piece_kind, value in prompt.render(texts):
        content.append({"type": "text", "text": value} if piece_kind == "text" else media[value])
    messages: list[dict[str, Any]] = []
    if prompt.system:
        messages.append({"role": "system", "content": prompt.system})
    messages.append({"role": "user", "content": content})
    body: dict[str, Any] = {"model": cfg.model, "messages": messages, "temperature": cfg.temperature,
                            "max_tokens": cfg.max_tokens}
    metrics = cfg.metrics_for(kind)
    if cfg.structured_output == "json_schema":
        body["response_format"] = response_format(kind, metrics, cfg)
    if cfg.logprobs:
        body["logprobs"] = True
        if cfg.top_logprobs:
            body["top_logprobs"] = cfg.top_logprobs
    body.update(cfg.extra_body)
    return body


def row_kind(row: dict) -> str:
    return sample_kind(row.get("modality"), row.get("task"), row.get("source_uri"))
