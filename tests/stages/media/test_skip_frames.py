"""A dataset's skip_frames (OpenVE-3M: 4, as SAMA's own loader drops them): recorded by ingest,
honoured by the probe (frames counted), the judge (frames sent), encode (frames encoded) and
therefore preview (which decodes encode's stored indices)."""
from __future__ import annotations

import pyarrow as pa
import pytest

from manifests.schema import SAMPLES, empty_sample
from pipeline.curate.config import EncodeConfig, JudgeConfig, PretextConfig
from pipeline.curate.demo.media import synthetic_video
from stages.encode.decode import decode_sample
from stages.judge.request_build import plan_video, read_video_frames
from stages.probe import probe_table
from stages.media.skip_frames import skipped_window

FPS = 8


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("skip")
    # 25 frames at 8 fps: frame k shows a square at a place that depends on k
    return (synthetic_video(d / "src.mp4", n=25, width=64, height=64, fps=FPS, seed=1),
            synthetic_video(d / "tgt.mp4", n=25, width=64, height=64, fps=FPS, seed=2))


def _sample(pair, skip):
    src, tgt = pair
    return empty_sample("openve", f"openve:{skip:016d}", modality="video", task="edit", source_uri=str(src),
                        target_uri=str(tgt), instruction="x", skip_frames=skip)


def test_window_arithmetic():
    assert skipped_window(None, None, 0, 30.0) == (None, None)
    assert skipped_window(None, None, 4, 8.0) == (0.5, None)
    assert skipped_window(1.0, 2.0, 4, 8.0) == (1.5, 2.0)
    assert skipped_window(None, None, 4, None) == (None, None)  # unknown rate: nothing to shift


def test_probe_counts_frames_after_the_skipped_ones(pair):
    t = pa.Table.from_pylist([_sample(pair, 0), _sample(pair, 4), _sample(pair, 30)], schema=SAMPLES)
    rows = probe_table(t, decode_check="pyav").to_pylist()
    assert [r["target_frames"] for r in rows] == [25, 25, 25]
    assert [r["window_frames"] for r in rows] == [25, 21, None]
    assert rows[2]["error_kind"] == "window_out_of_range" and "skipped" in rows[2]["error"]


def test_judge_sends_no_skipped_frame(pair):
    cfg = JudgeConfig(fps=FPS, min_frames=4, max_frames=64, video_reader="pyav")
    plain = plan_video(25, FPS, 64, 64, cfg)
    skipped = plan_video(25, FPS, 64, 64, cfg, skip_frames=4)
    assert plain.indices[0] == 0 and min(skipped.indices) == 4 and skipped.indices[-1] == 24
    frames, plan = read_video_frames(str(pair[1]), cfg, skip_frames=4)
    assert plan.indices == skipped.indices and len(frames) == len(plan.indices)
    # the frames sent are the file's frames 4.. (compared with a read that starts at frame 0)
    all_frames, all_plan = read_video_frames(str(pair[1]), cfg)
    assert (frames[0] == all_frames[all_plan.indices.index(4)]).all()


def test_encode_indices_start_after_the_skipped_frames(pair):
    cfg = EncodeConfig(num_frames=17, min_frames=5, fps=FPS, buckets=[[64, 64]])
    plain = decode_sample(_sample(pair, 0), cfg, PretextConfig(), 0, backend="pyav")
    skipped = decode_sample(_sample(pair, 4), cfg, PretextConfig(), 0, backend="pyav")
    (p,), (s,) = plain.keys, skipped.keys
    assert p.target_indices[:2] == [0, 1] and s.target_indices[:2] == [4, 5]
    assert s.source_indices == s.target_indices and len(s.target_indices) == 17
    assert (skipped.clips["target"][0] == plain.clips["target"][4]).all()
