"""The judge client against real HTTP servers on 127.0.0.1 (tests/fake_judge.py), including
one that misbehaves on purpose, and the shape of the requests built from real clips."""
from __future__ import annotations

import asyncio
import base64
import io
import socket
import tarfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from manifests.schema import SAMPLES, empty_sample
from pipeline.curate.config import JudgeConfig
from stages.judge.parse import EXPECTED_DECIMALS
from stages.judge.client import (merge_rescored, needs_rescore, retry_after_seconds, retry_delay, score_table,
                                 scoring_fingerprint)
from fake_judge import DEFAULT_FAULTS, FakeJudgeServer, expected_of
from stages.judge.schema import SCORES, STATUSES

REPO = Path(__file__).resolve().parents[3]
CLIPS = REPO / "demo" / "clips"
pytestmark = pytest.mark.timeout(120)

METRIC_COLUMNS = ["instruction_following", "visual_quality", "content_preservation",
                  "instruction_following_expected", "visual_quality_expected", "content_preservation_expected"]


def image_pairs(tmp_path: Path, n: int) -> pa.Table:
    """n image edit samples whose pixels (so requests, so fake scores) all differ."""
    rows = []
    for i in range(n):
        for role, shade in (("s", 200), ("t", 20)):
            Image.new("RGB", (40 + i % 7, 30), (i % 251, shade, (7 * i) % 253)).save(tmp_path / f"{i}{role}.png")
        rows.append(empty_sample("nhr_edit", f"nhr_edit:{i:05d}", modality="image", task="edit",
                                 source_uri=str(tmp_path / f"{i}s.png"), target_uri=str(tmp_path / f"{i}t.png"),
                                 instruction=f"make it look like picture {i}"))
    return pa.Table.from_pylist(rows, schema=SAMPLES)


def cfg_for(*servers, **kw) -> JudgeConfig:
    base = dict(urls=[s.url for s in servers], concurrency=8, request_timeout_s=5, max_attempts=4,
                backoff_base_s=0.01, backoff_max_s=0.05)
    base.update(kw)
    return JudgeConfig(**base)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ scores and faults
def test_fault_free_run_scores_every_row(tmp_path):
    samples = image_pairs(tmp_path, 12)
    with FakeJudgeServer(record=True) as server:
        out = score_table(samples, cfg_for(server))
    assert out.schema.equals(SCORES, check_metadata=False)
    assert out.column("sample_id").to_pylist() == samples.column("sample_id").to_pylist()
    assert set(out.column("status").to_pylist()) == {"ok"}
    assert out.column("attempts").to_pylist() == [1] * 12
    for row in out.to_pylist():
        for m in ("instruction_following", "visual_quality", "content_preservation"):
            assert 1 <= row[m] <= 10
            assert row[f"{m}_expected"] == round(expected_of(row[m]), EXPECTED_DECIMALS)
        assert row["motion_consistency"] is None and row["prompt_file"] == "image_edit_v1.txt"
        assert len(row["prompt_hash"]) == 16 and row["reason"] == "deterministic fake judge"
        assert row["prompt_tokens"] > 0 and row["output_tokens"] > 0 and row["latency_s"] > 0
    assert server.stats.requests == 12


def test_thirty_percent_faults_end_like_a_fault_free_run(tmp_path):
    samples = image_pairs(tmp_path, 80)
    with FakeJudgeServer() as clean:
        reference = score_table(samples, cfg_for(clean))
    with FakeJudgeServer(fault_rate=0.3, seed=3, retry_after="1", hang_s=1.5) as a, \
            FakeJudgeServer(fault_rate=0.3, seed=4, retry_after="1", hang_s=1.5) as b:
        out = score_table(samples, cfg_for(a, b, request_timeout_s=0.5, max_attempts=8))
        faults = {k: a.stats.faults[k] + b.stats.faults[k] for k in DEFAULT_FAULTS}
        requests = (a.stats.requests, b.stats.requests)
    # Every kind of fault happened, and both replicas were used.
    assert all(faults[k] > 0 for k in DEFAULT_FAULTS), faults
    assert min(requests) > 20, requests
    ids = out.column("sample_id").to_pylist()
    assert ids == samples.column("sample_id").to_pylist() and len(set(ids)) == len(ids)
    assert set(out.column("status").to_pylist()) <= set(STATUSES)
    assert set(out.column("status").to_pylist()) == {"ok"}, out.filter(
        pa.compute.not_equal(out["status"], "ok")).select(["status", "error"]).to_pylist()
    assert out.select(["sample_id", *METRIC_COLUMNS]).equals(reference.select(["sample_id", *METRIC_COLUMNS]))
    assert max(out.column("attempts").to_pylist()) > 1
    # Every request the servers saw was an attempt (an attempt timed out before connecting is not seen).
    assert sum(requests) <= sum(out.column("attempts").to_pylist())


def test_retry_after_is_honoured(tmp_path):
    samples = image_pairs(tmp_path, 3)
    with FakeJudgeServer(faults=("http429",), fault_every_first=1, retry_after="1") as server:
        out = score_table(samples, cfg_for(server))
        arrivals = list(server.stats.arrivals)
    assert out.column("status").to_pylist() == ["ok"] * 3 and out.column("attempts").to_pylist() == [2] * 3
    by_request: dict[bytes, list[float]] = {}
    for t, digest in arrivals:
        by_request.setdefault(digest, []).append(t)
    assert len(by_request) == 3
    for times in by_request.values():
        assert times[1] - times[0] >= 0.95


def test_retry_after_beyond_its_cap_is_not_waited(tmp_path):
    """Retry-After: 30 with judge.retry_after_max_s 2: the client does not sleep 30 s (nor 2) but
    retries on the ordinary back-off (backoff_max_s 0.05); within the cap it waits as asked."""
    samples = image_pairs(tmp_path, 2)
    with FakeJudgeServer(faults=("http429",), fault_every_first=2, retry_after="30") as server:
        t0 = time.monotonic()
        out = score_table(samples, cfg_for(server, retry_after_max_s=2))
        took = time.monotonic() - t0
    assert out.column("status").to_pylist() == ["ok"] * 2 and out.column("attempts").to_pylist() == [3] * 2
    assert took < 2  # two back-offs of <= 0.05 s per row, not 2 x 30 s
    with FakeJudgeServer(faults=("http429",), fault_every_first=1, retry_after="1.5") as server:
        out = score_table(samples, cfg_for(server, retry_after_max_s=1.5))
        arrivals = list(server.stats.arrivals)
    assert out.column("status").to_pylist() == ["ok"] * 2
    first = {}
    for t, digest in arrivals:
        first.setdefault(digest, []).append(t)
    assert all(times[1] - times[0] >= 1.45 for times in first.values())  # at the cap: waited as asked


def test_retry_delay_rule():
    import random

    cfg = JudgeConfig(backoff_base_s=1.0, backoff_max_s=0.5, retry_after_max_s=10)
    rng = random.Random(0)
    assert retry_delay(10.0, 1, cfg, rng) == 10.0 and retry_delay(0.0, 1, cfg, rng) == 0.0
    assert all(0 <= retry_delay(after, n, cfg, rng) <= 0.5 for after in (10.01, 3600.0, None) for n in range(1, 9))


def test_retry_after_forms():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("0.25") == 0.25
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


@pytest.mark.parametrize("fault,status,attempts,error", [
    ("http500", "engine_error", 3, "HTTP 500"),
    ("http429", "engine_error", 3, "HTTP 429"),
    ("timeout", "timeout", 3, "no answer within"),
    ("drop", "engine_error", 3, "connection"),
    ("malformed", "malformed", 3, "missing"),
    ("out_of_range", "malformed", 3, "outside 1..10"),
    ("empty", "engine_error", 3, "no choices"),
    ("garbage", "engine_error", 3, "unusable response"),
    ("http400", "engine_error", 1, "HTTP 400"),  # the server refuses the request: not retried
])
def test_a_server_that_always_fails_leaves_a_status(tmp_path, fault, status, attempts, error):
    samples = image_pairs(tmp_path, 2)
    with FakeJudgeServer(fault_rate=1.0, faults=(fault,), retry_after="0", hang_s=1.0) as server:
        out = score_table(samples, cfg_for(server, max_attempts=3, request_timeout_s=0.3))
    for row in out.to_pylist():
        assert (row["status"], row["attempts"]) == (status, attempts), row
        assert error in row["error"]
        assert row["instruction_following"] is None and row["prompt_hash"]
    if fault == "malformed":
        assert out.column("raw_text")[0].as_py().startswith('{"instruction_following"')


def test_malformed_is_not_retried_when_asked(tmp_path):
    samples = image_pairs(tmp_path, 1)
    with FakeJudgeServer(fault_rate=1.0, faults=("malformed",)) as server:
        out = score_table(samples, cfg_for(server, retry_malformed=False))
    assert out.column("status").to_pylist() == ["malformed"] and out.column("attempts").to_pylist() == [1]


def test_unreachable_replica_is_skipped_by_retries(tmp_path):
    samples = image_pairs(tmp_path, 6)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with FakeJudgeServer() as server:
        cfg = JudgeConfig(urls=[dead, server.url], concurrency=2, max_attempts=3, backoff_base_s=0.01)
        out = score_table(samples, cfg)
    assert set(out.column("status").to_pylist()) == {"ok"}
    assert all(e.endswith("/chat/completions") and str(server.port) in e for e in out.column("endpoint").to_pylist())


def test_overall_deadline_bounds_the_call(tmp_path):
    from stages.judge.request_build import qwen_vision_process

    qwen_vision_process()  # the one-time torch import is setup, outside the deadline
    samples = image_pairs(tmp_path, 6)
    with FakeJudgeServer(fault_rate=1.0, faults=("timeout",), hang_s=5) as server:
        t0 = time.monotonic()
        out = score_table(samples, cfg_for(server, concurrency=2, request_timeout_s=30, deadline_s=1.0))
        took = time.monotonic() - t0
    assert took < 3.0
    assert set(out.column("status").to_pylist()) == {"timeout"}
    errors = out.column("error").to_pylist()
    assert any("before a request was sent" in e for e in errors)  # rows still queued at the deadline
    assert out.num_rows == 6


def test_concurrency_is_bounded(tmp_path):
    samples = image_pairs(tmp_path, 12)
    with FakeJudgeServer(latency_s=0.2) as server:
        score_table(samples, cfg_for(server, concurrency=3))
        assert server.stats.max_in_flight == 3


def test_input_errors_become_rows_without_requests(tmp_path):
    good = image_pairs(tmp_path, 1).to_pylist()
    rows = good + [
        empty_sample("nhr_edit", "nhr_edit:missing", modality="image", task="edit",
                     source_uri=str(tmp_path / "nope.png"), target_uri=str(tmp_path / "0t.png"), instruction="x"),
        empty_sample("nhr_edit", "nhr_edit:ingest", modality="image", task="edit", error="malformed record"),
        empty_sample("nhr_edit", "nhr_edit:noinstr", modality="image", task="edit",
                     source_uri=str(tmp_path / "0s.png"), target_uri=str(tmp_path / "0t.png")),
        empty_sample("openve", "openve:notarget", modality="video", task="edit",
                     source_uri=str(CLIPS / "hl01_source.mp4"), instruction="x"),
        good[0],  # a repeated sample id is scored once
    ]
    (tmp_path / "zero.mp4").write_bytes(b"")
    rows.append(empty_sample("koala", "koala:zero", modality="video", task="t2v",
                             target_uri=str(tmp_path / "zero.mp4"), caption="a dog"))
    with FakeJudgeServer() as server:
        out = score_table(pa.Table.from_pylist(rows, schema=SAMPLES), cfg_for(server))
        assert server.stats.requests == 1
    got = {r["sample_id"]: r for r in out.to_pylist()}
    assert out.num_rows == 6 and got[good[0]["sample_id"]]["status"] == "ok"
    for sid, why in [("nhr_edit:missing", "missing"), ("nhr_edit:ingest", "ingest"),
                     ("nhr_edit:noinstr", "instruction"), ("koala:zero", "zero_byte")]:
        assert got[sid]["status"] == "input_error" and why in got[sid]["error"], got[sid]
        assert got[sid]["attempts"] == 0
    assert got["openve:notarget"]["kind"] == "video_edit" and "edited video" in got["openve:notarget"]["error"]


def test_rescore_only_the_failed_rows(tmp_path):
    samples = image_pairs(tmp_path, 6)
    with FakeJudgeServer(fault_rate=0.5, seed=7, faults=("http500",)) as flaky:
        first = score_table(samples, cfg_for(flaky, max_attempts=1))
    failed = needs_rescore(first)
    assert 0 < failed.num_rows < 6 and set(failed.column("status").to_pylist()) == {"engine_error"}
    retry_ids = set(failed.column("sample_id").to_pylist())
    with FakeJudgeServer() as clean:
        again = score_table(samples.filter(pa.compute.is_in(samples["sample_id"], value_set=pa.array(sorted(retry_ids)))),
                            cfg_for(clean))
        assert clean.stats.requests == len(retry_ids)
        reference = score_table(samples, cfg_for(clean))
    merged = merge_rescored(first, again)
    assert merged.column("sample_id").to_pylist() == first.column("sample_id").to_pylist()
    assert set(merged.column("status").to_pylist()) == {"ok"} and needs_rescore(merged).num_rows == 0
    assert merged.select(METRIC_COLUMNS).equals(reference.select(METRIC_COLUMNS))


def test_scoring_fingerprint_ignores_transport_settings(tmp_path):
    from stages.judge.prompts import load_prompts

    base = JudgeConfig()
    prompts = load_prompts(base)
    fp = scoring_fingerprint(base, prompts)
    same = JudgeConfig(urls=["http://a:1/v1", "http://b:2/v1"], concurrency=3, max_attempts=9, deadline_s=5)
    assert scoring_fingerprint(same, prompts) == fp
    assert scoring_fingerprint(JudgeConfig(fps=1.0), prompts) != fp
    (tmp_path / "clip_v2.txt").write_text((REPO / "configs/judge_prompts/clip_v1.txt").read_text() + " ")
    other = load_prompts(JudgeConfig(prompts={**base.prompts, "clip": tmp_path / "clip_v2.txt"}))
    assert scoring_fingerprint(base, other) != fp


def test_score_table_inside_a_running_event_loop(tmp_path):
    samples = image_pairs(tmp_path, 2)
    with FakeJudgeServer() as server:
        async def caller():
            return score_table(samples, cfg_for(server))
        out = asyncio.run(caller())
    assert out.column("status").to_pylist() == ["ok", "ok"]


# ------------------------------------------------------------------ request shape
def frames_of(url: str, mime: str) -> list[Image.Image]:
    prefix = f"data:{mime};base64,"
    assert url.startswith(prefix)
    return [Image.open(io.BytesIO(base64.b64decode(b))) for b in url[len(prefix):].split(",")]


def test_video_pair_request_shape_from_real_clips():
    row = empty_sample("ditto", "ditto:hl01", modality="video", task="edit",
                       source_uri=str(CLIPS / "hl01_source.mp4"), target_uri=str(CLIPS / "hl01_edited.mp4"),
                       instruction='Turn the "car" red')
    samples = pa.Table.from_pylist([row], schema=SAMPLES)
    with FakeJudgeServer(record=True) as server:
        cfg = cfg_for(server, fps=8.0, min_frames=4, max_frames=6, video_max_pixels=200_000)
        out = score_table(samples, cfg)
        body = server.stats.bodies[0]
    assert out.column("status").to_pylist() == ["ok"] and out.column("kind").to_pylist() == ["video_edit"]
    assert out.column("motion_consistency")[0].as_py() is not None
    system, user = body["messages"]
    assert system["role"] == "system" and "judge" in system["content"]
    parts = user["content"]
    assert [p["type"] for p in parts] == ["text", "video_url", "text", "video_url", "text"]
    assert parts[0]["text"] == "Source video:" and parts[2]["text"] == "Edited video:"
    assert "Turn the 'car' red" in parts[4]["text"] and "motion_consistency" in parts[4]["text"]
    for p in (parts[1], parts[3]):
        frames = frames_of(p["video_url"]["url"], "video/jpeg")
        # 49 frames at 29.97 fps sampled at 8 fps would be 13: clamped to max_frames, even.
        assert cfg.min_frames <= len(frames) <= cfg.max_frames and len(frames) % 2 == 0
        assert len(frames) == 6
        for f in frames:
            assert f.format == "JPEG" and f.width % 28 == 0 and f.height % 28 == 0
            assert cfg.video_min_pixels <= f.width * f.height <= cfg.video_max_pixels
    rf = body["response_format"]
    assert rf["type"] == "json_schema"
    schema = rf["json_schema"]["schema"]
    assert schema["required"] == cfg.video_metrics and schema["additionalProperties"] is False
    assert all(schema["properties"][m] == {"type": "integer", "minimum": 1, "maximum": 10} for m in cfg.video_metrics)
    assert schema["properties"]["reason"] == {"type": "string", "pattern": "^[A-Za-z0-9 ,.;:'()/%+-]{0,120}$"}
    assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["temperature"] == 0.0
    assert body["model"] == cfg.model


def test_min_frames_for_a_short_clip():
    # 49 frames at 2 fps is ~3 frames: raised to min_frames.
    row = empty_sample("ditto", "ditto:hl07", modality="video", task="edit",
                       source_uri=str(CLIPS / "hl07_source.mp4"), target_uri=str(CLIPS / "hl07_edited.mp4"),
                       instruction="x")
    with FakeJudgeServer(record=True) as server:
        score_table(pa.Table.from_pylist([row], schema=SAMPLES), cfg_for(server, min_frames=4))
        parts = server.stats.bodies[0]["messages"][1]["content"]
    assert [len(frames_of(p["video_url"]["url"], "video/jpeg")) for p in parts if p["type"] == "video_url"] == [4, 4]


def test_tar_parquet_and_clip_requests(tmp_path):
    tar_path = tmp_path / "shard.tar"
    with tarfile.open(tar_path, "w") as tf:
        tf.add(CLIPS / "zs02_source.mp4", arcname="clips/zs02.mp4")
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 120, 30)).save(buf, format="PNG")
    pq.write_table(pa.table({"src": [buf.getvalue()], "dst": [{"bytes": buf.getvalue(), "path": "x.png"}]}),
                   tmp_path / "imgs.parquet")
    rows = [
        empty_sample("koala", "koala:w", modality="video", task="t2v", target_uri=f"tar://{tar_path}#clips/zs02.mp4",
                     caption="A man rides a bike.", clip_start_s=0.2, clip_end_s=1.2),
        empty_sample("nhr_edit", "nhr_edit:pq", modality="image", task="edit", instruction="add a hat",
                     source_uri=f"parquet://{tmp_path / 'imgs.parquet'}#0/src",
                     target_uri=f"parquet://{tmp_path / 'imgs.parquet'}#0/dst"),
    ]
    with FakeJudgeServer(record=True) as server:
        cfg = cfg_for(server, concurrency=1, image_min_pixels=100_000)
        out = score_table(pa.Table.from_pylist(rows, schema=SAMPLES), cfg)
        bodies = {tuple(p["type"] for p in b["messages"][1]["content"]): b for b in server.stats.bodies}
    assert out.column("status").to_pylist() == ["ok", "ok"]
    assert out.column("kind").to_pylist() == ["clip", "image_edit"]
    clip = out.to_pylist()[0]
    assert clip["caption_alignment"] is not None and clip["content_preservation"] is None
    clip_body = bodies[("text", "video_url", "text")]
    assert "A man rides a bike." in clip_body["messages"][1]["content"][2]["text"]
    assert clip_body["response_format"]["json_schema"]["schema"]["required"] == cfg.clip_metrics
    frames = frames_of(clip_body["messages"][1]["content"][1]["video_url"]["url"], "video/jpeg")
    assert cfg.min_frames <= len(frames) and len(frames) % 2 == 0
    image_body = bodies[("text", "image_url", "text", "image_url", "text")]
    for p in image_body["messages"][1]["content"]:
        if p["type"] == "image_url":
            (im,) = frames_of(p["image_url"]["url"], "image/jpeg")
            # 300x200 = 60,000 pixels is below image_min_pixels: scaled up to multiples of 28.
            assert im.width % 28 == 0 and im.height % 28 == 0 and im.width * im.height >= 100_000


def test_sampling_math_matches_qwen_vl_utils():
    from stages.judge import request_build as rq

    vp = rq.qwen_vision_process()
    if vp is None:
        pytest.skip("qwen-vl-utils (with torch, torchvision) is not installed")
    cfg = JudgeConfig()
    for total, fps in [(49, 29.97), (101, 24.0), (3, 30.0), (2000, 25.0), (250, 60.0), (16, 8.0)]:
        for f, lo, hi in [(2.0, 4, 768), (1.0, 4, 16), (8.0, 6, 10)]:
            ele = dict(fps=f, min_frames=lo, max_frames=hi)
            assert rq._smart_nframes_copy(ele, total, fps) == vp.smart_nframes(ele, total_frames=total, video_fps=fps)
        for window in [{}, {"video_start": 0.5, "video_end": 1.5}, {"video_start": 0.1}]:
            if total / fps > 1.6:
                assert rq._frame_range_copy(window, total, fps) == vp.calculate_video_frame_range(window, total, fps)
    for h, w in [(480, 832), (720, 1280), (30, 40), (1080, 1920), (4000, 3000), (28, 5000)]:
        for lo, hi in [(cfg.video_min_pixels, cfg.video_max_pixels), (cfg.image_min_pixels, cfg.image_max_pixels)]:
            assert rq._smart_resize_copy(h, w, 28, lo, hi) == vp.smart_resize(h, w, factor=28, min_pixels=lo, max_pixels=hi)


def test_prompt_hash_changes_with_the_file(tmp_path):
    from stages.judge.prompts import PromptError, load_prompts

    src = (REPO / "configs" / "judge_prompts" / "image_edit_v1.txt").read_text()
    (tmp_path / "image_edit_v2.txt").write_text(src + "\n")
    base = load_prompts(JudgeConfig())
    changed = load_prompts(JudgeConfig(prompts={**JudgeConfig().prompts, "image_edit": tmp_path / "image_edit_v2.txt"}))
    assert changed["image_edit"].hash != base["image_edit"].hash and changed["image_edit"].file == "image_edit_v2.txt"
    assert changed["video_edit"].hash == base["video_edit"].hash
    (tmp_path / "bad.txt").write_text(src.replace("<<edited_image>>", ""))
    with pytest.raises(PromptError, match="media marks"):
        load_prompts(JudgeConfig(prompts={"image_edit": tmp_path / "bad.txt"}))
    with pytest.raises(PromptError, match="never names the metrics"):
        load_prompts(JudgeConfig(prompts={"image_edit": tmp_path / "image_edit_v2.txt"},
                                 image_metrics=["instruction_following", "sharpness"]))


def test_plan_video_honours_a_window_and_the_pixel_budget():
    from stages.judge.request_build import plan_video

    cfg = JudgeConfig(fps=2.0, min_frames=4, max_frames=768)
    plan = plan_video(300, 30.0, 480, 832, cfg, start_s=2.0, end_s=6.0)
    assert len(plan.indices) == 8 and plan.indices[0] == 60 and plan.indices[-1] == 180
    assert plan.height % 28 == 0 and plan.width % 28 == 0
    assert plan.height * plan.width <= cfg.video_max_pixels and plan.sample_fps == pytest.approx(2.0, rel=0.02)
    # A long clip at many frames shares video_total_pixels: each frame gets smaller.
    small = plan_video(30000, 30.0, 480, 832, JudgeConfig(video_total_pixels=2_000_000))
    assert len(small.indices) == 768 and small.height * small.width < plan.height * plan.width


def test_pyav_reader_matches_decord():
    from stages.judge.request_build import read_video_frames

    clip = str(CLIPS / "hl10_source.mp4")
    frames_d, plan_d = read_video_frames(clip, JudgeConfig(video_reader="decord", fps=4.0))
    frames_p, plan_p = read_video_frames(clip, JudgeConfig(video_reader="pyav", fps=4.0))
    assert plan_d == plan_p and len(frames_d) == len(frames_p) == len(plan_d.indices)
    assert all(a.shape == b.shape for a, b in zip(frames_d, frames_p))
    # The same frames (decoders may differ by rounding in colour conversion).
    assert all(abs(a.astype(int) - b.astype(int)).mean() < 3 for a, b in zip(frames_d, frames_p))


def test_an_exif_rotated_photo_is_judged_upright_as_it_is_encoded(tmp_path):
    """A phone photo stored sideways with EXIF orientation 6: the judge's image is the upright one
    the encoder reads (stages.media.read.read_image), not the raw sideways pixels."""
    import numpy as np
    from PIL import Image

    from pipeline.curate.config import JudgeConfig
    from stages.judge.request_build import image_data_uri
    from stages.media.read import read_image

    raw = np.zeros((64, 128, 3), dtype=np.uint8)  # stored 128 wide, 64 high
    raw[:, :64] = (255, 0, 0)  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    path = tmp_path / "phone.jpg"
    Image.fromarray(raw).save(path, quality=95, exif=exif)
    upright = read_image(str(path))[0]
    assert upright.shape[:2] == (128, 64)  # the encoder's view: 64 wide, 128 high

    cfg = JudgeConfig(image_min_pixels=28 * 28, image_max_pixels=64 * 128)
    uri = image_data_uri(str(path), cfg, [str(tmp_path)])
    judged = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))
    assert judged.shape[0] > judged.shape[1]  # upright: taller than wide, like the encoder's
    top, bottom = judged[: judged.shape[0] // 4].mean((0, 1)), judged[-judged.shape[0] // 4:].mean((0, 1))
    assert top[0] > 200 and bottom[0] < 60  # the red half is on top after the 90-degree turn
