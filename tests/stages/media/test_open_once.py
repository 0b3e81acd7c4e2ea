"""A video read through the forward reader is opened once: its frame count and rate come from
the container, as decord reports them, and decord is opened only when a read falls back to it.
The frames the judge and the encode stage take stay decord's, pixel for pixel, on real clips."""
from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import decord
import numpy as np
import pytest

from stages.encode.config import EncodeConfig
from stages.encode.decode import decode_sample
from stages.judge.config import JudgeConfig
from stages.judge.request_build import _plan_indices, read_video_frames
from stages.media.buckets import fit_to_bucket
from stages.media.frames import frame_count, frames_that_fit, plan_indices
from stages.media.open_videos import OpenVideos
from stages.media.read import Video
from stages.pretext.config import PretextConfig

DEMO = sorted((Path(__file__).resolve().parents[3] / "demo" / "clips").glob("*.mp4"))


# Every shape, rate and length the real clips have: 1280x720 and 832x464 at 29.97 fps, portrait,
# 81 frames at 24 fps, 21 frames at 20 fps, 896x448.
REAL = ("hl01_source", "hl01_edited", "hl02_edited", "hl09_source", "hl10_edited", "hl11_source")


def _clips(realclips: Path) -> list[Path]:
    return [realclips / "videos" / f"{name}.mp4" for name in REAL] + DEMO[:2]


def _decord(path: Path) -> decord.VideoReader:
    return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)


def test_metadata_is_decords_and_decord_is_not_opened(realclips):
    for path in _clips(realclips):
        reference = _decord(path)
        for src in (str(path), io.BytesIO(path.read_bytes())):
            video = Video(src)
            assert (video.frames, video.fps) == (len(reference), reference.get_avg_fps()), path.name
            assert video._reader is None and video._forward, path.name  # one opener: PyAV's
            pyav = Video(src, "pyav")
            assert (pyav.frames, pyav.fps) == (video.frames, video.fps)
            every = list(range(video.frames))
            assert np.array_equal(video.read(every), reference.get_batch(every).asnumpy()), path.name
            assert video._reader is None  # the reads never needed decord


def test_judge_and_encode_frames_are_decords(realclips):
    jcfg, ecfg, pcfg = JudgeConfig(), EncodeConfig(), PretextConfig()
    for path in _clips(realclips):
        reference = _decord(path)
        n, fps = len(reference), reference.get_avg_fps()
        # the judge: qwen-vl-utils' indices over decord's count and rate, read through a fresh cache
        frames, _ = read_video_frames(str(path), jcfg, videos=OpenVideos())
        want = _plan_indices(n, fps, jcfg, None, None, 0).indices
        assert np.array_equal(np.stack(frames), reference.get_batch(want).asnumpy()), path.name
        # the encode stage: the 16 fps plan of a pair whose source and target are this clip
        row = {"sample_id": f"t:{path.name}", "dataset": "t", "modality": "video", "task": "edit",
               "source_uri": str(path), "target_uri": str(path), "instruction": "x",
               "source_frames": n, "target_frames": n, "source_fps": fps, "target_fps": fps}
        decoded = decode_sample(row, ecfg, pcfg, seed=0)
        fit = frames_that_fit(n, fps, ecfg.fps)
        m = frame_count(fit, ecfg.num_frames, ecfg.frame_policy)
        if m < ecfg.min_frames:
            assert decoded.keys[0].error.startswith("too_short"), path.name
            continue
        idx = plan_indices(n, fps, ecfg.fps, m, count=m)
        expect = fit_to_bucket(reference.get_batch(idx).asnumpy(), decoded.bucket)
        assert decoded.keys[0].target_indices == idx
        assert np.array_equal(decoded.clips["target"], expect), path.name
        assert np.array_equal(decoded.clips["source"], expect), path.name


def _mkv(path: Path, frames: int = 12) -> Path:
    """A real H.264 clip in Matroska, which declares no frame count."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            img = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20, np.uint8), format="rgb24")
            img.pts, img.time_base = i, Fraction(1, 24)
            out.mux(stream.encode(img))
        out.mux(stream.encode(None))
    return path


def test_a_container_without_a_frame_count_still_asks_decord(tmp_path):
    path = _mkv(tmp_path / "clip.mkv")
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 0  # nothing declared: decord estimates from the duration
    reference = _decord(path)
    video = Video(str(path))
    assert video._reader is not None
    assert (video.frames, video.fps) == (len(reference), reference.get_avg_fps())
    every = list(range(video.frames))
    assert np.array_equal(video.read(every), reference.get_batch(every).asnumpy())


def test_a_refused_read_opens_decord_then(realclips):
    path = _clips(realclips)[0]
    video = Video(str(path))
    assert video._reader is None
    # frames past the end: the forward reader refuses, the general path (decord) decides as before
    with pytest.raises(Exception):
        video.read([video.frames + 5])
    assert video._forward is False and video._reader is not None
    reference = _decord(path)
    assert np.array_equal(video.read([0, 3]), reference.get_batch([0, 3]).asnumpy())
