"""The real judge path in tests: a tiny random Qwen2.5-VL served by a real `vllm serve` (CPU).

The checkpoint is built offline (pipeline.curate.demo.tiny_judge); the server runs from the judge environment
(.venv-judge, scripts/build_judge_env.sh) on 127.0.0.1. With random weights the answers are
meaningless: what is proven is the request shape (two videos as JPEG frame lists, images, a local
mp4), the JSON-schema constraint, logprobs, and that the project venv's transformers loads the same
checkpoint (the `hf` backend).
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages.judge.server import (
    JudgeServerError,
    VllmServer,
    judge_env_missing_reason,
    judge_venv,
    live_group_members,
    running_server,
)

REPO = Path(__file__).resolve().parents[3]
MODEL_NAME = "tiny-qwen2.5-vl"
METRICS = ("instruction_following", "visual_quality", "content_preservation", "motion_consistency")

# 4 frames of 112x84: both sides are multiples of 28 and the area lies within the processor's pixel
# bounds, so each pair of frames is exactly (84/28) * (112/28) = 12 tokens: 24 per video.
FRAME_W, FRAME_H, FRAMES = 112, 84, 4
TOKENS_PER_VIDEO = (FRAMES // 2) * (FRAME_H // 28) * (FRAME_W // 28)
# An image is one temporal patch (the frame doubled): 12 tokens.
TOKENS_PER_IMAGE = (FRAME_H // 28) * (FRAME_W // 28)


def _jpeg_b64(color: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (FRAME_W, FRAME_H), color).save(buf, "JPEG", quality=90)
    return base64.b64encode(buf.getvalue()).decode()


def video_as_jpeg_frames(seed: int) -> str:
    """A `data:video/jpeg;base64,<f1>,<f2>,...` URL: how the judge sends frames it sampled itself."""
    rng = np.random.default_rng(seed)
    frames = [_jpeg_b64(tuple(int(c) for c in rng.integers(0, 256, 3))) for _ in range(FRAMES)]
    return "data:video/jpeg;base64," + ",".join(frames)


def image_as_png(seed: int) -> str:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (FRAME_H, FRAME_W, 3), dtype=np.uint8)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def score_schema() -> dict:
    """What the judge asks for: an integer 1-10 per metric, nothing else."""
    return {
        "type": "object",
        "properties": {m: {"type": "integer", "minimum": 1, "maximum": 10} for m in METRICS},
        "required": list(METRICS),
        "additionalProperties": False,
    }


def post_chat(base_url: str, body: dict, timeout_s: float = 60.0) -> tuple[dict, float]:
    body = {"model": MODEL_NAME, **body}
    req = urllib.request.Request(
        f"{base_url}/chat/completions", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )
    t0 = time.monotonic()
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        assert resp.status == 200
        payload = json.loads(resp.read())
    return payload, time.monotonic() - t0


def user_turn(*media: dict, text: str = "Score the edit.") -> list[dict]:
    return [{"role": "user", "content": [*media, {"type": "text", "text": text}]}]


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny checkpoint, built once per session with the project venv's transformers (or, when
    that venv has none, with the judge venv's, in a subprocess)."""
    out = tmp_path_factory.mktemp("tiny-qwen25vl")
    try:
        import transformers  # noqa: F401
    except ImportError:
        reason = judge_env_missing_reason()
        if reason:
            pytest.skip(f"no transformers in this venv, and {reason}")
        import subprocess

        python = str(judge_venv() / "bin" / "python")
        subprocess.run([python, "-m", "pipeline.curate.demo.tiny_judge", str(out)], cwd=REPO, check=True,
                       timeout=120)
        return out
    from pipeline.curate.demo.tiny_judge import build_tiny_qwen25vl

    return build_tiny_qwen25vl(out)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    """The only directory the server may read local files from (--allowed-local-media-path)."""
    root = tmp_path_factory.mktemp("judge-media")
    shutil.copy(REPO / "demo" / "clips" / "hl07_source.mp4", root / "source.mp4")
    return root


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir, media_dir, tmp_path_factory):
    reason = judge_env_missing_reason()
    if reason:
        pytest.skip(reason)
    log = tmp_path_factory.mktemp("vllm-log") / "vllm.log"
    with running_server(
        tiny_model_dir, served_model_name=MODEL_NAME, allowed_local_media_path=media_dir,
        max_model_len=4096, max_num_seqs=4, log_path=log, startup_timeout_s=240,
        # A local mp4 is sampled to 8 frames by the server (our own requests send sampled frames).
        extra_args=["--media-io-kwargs", json.dumps({"video": {"num_frames": 8}})],
    ) as server:
        print(f"\nvllm serve ready in {server.startup_s:.1f} s at {server.base_url} (log {log})")
        group = server.process.pid
        yield server
    # Stopped: nothing of its process group (API server, engine core, workers) still runs.
    assert live_group_members(group) == []


# ------------------------------------------------------------------ the server
def test_server_command_has_the_judge_flags(tmp_path):
    server = VllmServer(model_dir=tmp_path, port=1234, allowed_local_media_path=tmp_path)
    cmd = server.command()
    flag = {cmd[i]: cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i].startswith("--")}
    assert json.loads(flag["--structured-outputs-config"]) == {
        "backend": "xgrammar", "disable_any_whitespace": True}
    assert flag["--allowed-local-media-path"] == str(tmp_path)
    assert flag["--host"] == "127.0.0.1" and flag["--port"] == "1234"
    assert server.base_url == "http://127.0.0.1:1234/v1"
    assert server.environment()["VLLM_TARGET_DEVICE"] == "cpu"


@pytest.mark.timeout(120)
def test_a_server_that_cannot_start_says_why(tmp_path):
    reason = judge_env_missing_reason()
    if reason:
        pytest.skip(reason)
    server = VllmServer(model_dir=tmp_path / "no-such-model", log_path=tmp_path / "vllm.log",
                        startup_timeout_s=100)
    with pytest.raises(JudgeServerError, match="exited with code") as failure:
        server.start()
    assert "no-such-model" in str(failure.value)  # the log tail names the problem
    assert server.process is None  # stopped and forgotten


@pytest.mark.timeout(300)  # includes the session fixture's server start-up (~40 s)
def test_two_videos_as_jpeg_frames_answer(vllm_server):
    messages = user_turn(
        {"type": "video_url", "video_url": {"url": video_as_jpeg_frames(1)}},
        {"type": "video_url", "video_url": {"url": video_as_jpeg_frames(2)}},
    )
    reply, latency = post_chat(vllm_server.base_url, {"messages": messages, "max_tokens": 8,
                                                      "temperature": 0})
    choice = reply["choices"][0]
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    # Both videos reached the model: their placeholder tokens are in the prompt.
    assert reply["usage"]["prompt_tokens"] >= 2 * TOKENS_PER_VIDEO
    assert reply["model"] == MODEL_NAME
    print(f"two videos: {latency:.3f} s, {reply['usage']}")


@pytest.mark.timeout(120)
def test_images_answer(vllm_server):
    messages = user_turn(
        {"type": "image_url", "image_url": {"url": image_as_png(1)}},
        {"type": "image_url", "image_url": {"url": image_as_png(2)}},
    )
    reply, latency = post_chat(vllm_server.base_url, {"messages": messages, "max_tokens": 8,
                                                      "temperature": 0})
    assert reply["choices"][0]["message"]["content"]
    assert reply["usage"]["prompt_tokens"] >= 2 * TOKENS_PER_IMAGE
    print(f"two images: {latency:.3f} s, {reply['usage']}")


@pytest.mark.timeout(120)
def test_local_mp4_within_allowed_media_path(vllm_server, media_dir):
    messages = user_turn({"type": "video_url", "video_url": {"url": f"file://{media_dir / 'source.mp4'}"}})
    reply, latency = post_chat(vllm_server.base_url, {"messages": messages, "max_tokens": 4,
                                                      "temperature": 0})
    assert reply["choices"][0]["message"]["content"]
    assert reply["usage"]["prompt_tokens"] > 20
    print(f"local mp4: {latency:.3f} s, {reply['usage']}")


@pytest.mark.timeout(120)
@pytest.mark.timeout(420)  # includes the session fixture's server start-up (~40 s idle, minutes on a busy machine)
def test_preflight_against_real_vllm(vllm_server):
    """The judge pre-flight on the real server: judge.model as served passes; another name, or
    the URL without /v1, stops with what the server serves / the URL that works."""
    from pipeline.config_base import ConfigError
    from pipeline.curate.config import JudgeConfig
    from stages.judge.preflight import check_servers

    check_servers(JudgeConfig(urls=[vllm_server.base_url], model=MODEL_NAME))
    check_servers(JudgeConfig(urls=[vllm_server.base_url + "/chat/completions"], model=MODEL_NAME))
    with pytest.raises(ConfigError) as err:
        check_servers(JudgeConfig(urls=[vllm_server.base_url], model="Qwen/Qwen2.5-VL-72B-Instruct"))
    assert str(err.value) == (f"judge.model: 'Qwen/Qwen2.5-VL-72B-Instruct' is not served by "
                              f"{vllm_server.base_url}; it serves ['{MODEL_NAME}']")
    bare = vllm_server.base_url.removesuffix("/v1")
    with pytest.raises(ConfigError) as err:
        check_servers(JudgeConfig(urls=[bare], model=MODEL_NAME))
    assert str(err.value) == (f"judge.urls: {bare} does not answer the OpenAI routes (GET {bare}/models: "
                              f"HTTP 404); it does at {bare}/v1: use that")


def test_json_schema_is_enforced(vllm_server):
    """Even sampled at temperature 1 from random weights, every answer is valid JSON of the schema."""
    schema = score_schema()
    messages = user_turn(
        {"type": "video_url", "video_url": {"url": video_as_jpeg_frames(3)}},
        {"type": "video_url", "video_url": {"url": video_as_jpeg_frames(4)}},
    )
    latencies = []
    for seed in range(3):
        reply, latency = post_chat(vllm_server.base_url, {
            "messages": messages, "max_tokens": 80, "temperature": 1.0, "seed": seed,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "scores", "schema": schema, "strict": True}},
        })
        latencies.append(latency)
        choice = reply["choices"][0]
        assert choice["finish_reason"] == "stop", choice
        scores = json.loads(choice["message"]["content"])
        assert set(scores) == set(METRICS)
        for metric, value in scores.items():
            assert type(value) is int and 1 <= value <= 10, (metric, value)
    print(f"json_schema: latencies {[round(x, 3) for x in latencies]} s")


@pytest.mark.timeout(120)
def test_logprobs_come_back(vllm_server):
    reply, _ = post_chat(vllm_server.base_url, {
        "messages": user_turn({"type": "video_url", "video_url": {"url": video_as_jpeg_frames(5)}}),
        "max_tokens": 40, "temperature": 0, "logprobs": True, "top_logprobs": 5,
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "scores", "schema": score_schema()}},
    })
    choice = reply["choices"][0]
    content = choice["logprobs"]["content"]
    assert len(content) == reply["usage"]["completion_tokens"]
    # The per-token entries spell the answer (then the end-of-turn token, which the content omits),
    # and each carries its 5 alternatives.
    spelled = "".join(entry["token"] for entry in content)
    assert spelled.removesuffix("<|im_end|>") == choice["message"]["content"]
    for entry in content:
        assert len(entry["top_logprobs"]) == 5
        assert entry["logprob"] <= 0.0
    # Where the score digits were generated, the alternatives include other digits: what the
    # expected score (a probability-weighted mean over 1..10) is computed from.
    digit_positions = [e for e in content if e["token"].strip().isdigit()]
    assert digit_positions
    assert any(alt["token"].strip().isdigit() for alt in digit_positions[0]["top_logprobs"])


# ------------------------------------------------------------------ the project venv (hf backend)
@pytest.mark.timeout(120)
def test_transformers_generates_from_video(tiny_model_dir):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.eval()
    messages = user_turn({"type": "video"}, {"type": "video"})
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 256, (FRAMES, FRAME_H, FRAME_W, 3), dtype=np.uint8) for _ in range(2)]
    # fps is a number: the list qwen-vl-utils returns (one per video) is not accepted here.
    inputs = processor(text=[prompt], videos=videos, fps=2.0, return_tensors="pt")
    video_id = model.config.video_token_id
    assert int((inputs["input_ids"] == video_id).sum()) == 2 * TOKENS_PER_VIDEO
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    new_tokens = out[0, inputs["input_ids"].shape[1]:]
    assert 1 <= len(new_tokens) <= 4
    assert all(0 <= int(t) < model.config.text_config.vocab_size for t in new_tokens)
    print(f"transformers {transformers.__version__}: {processor.batch_decode([new_tokens])!r}")


def test_tiny_model_is_deterministic_and_consistent(tiny_model_dir, tmp_path):
    pytest.importorskip("transformers")
    from pipeline.curate.demo.tiny_judge import SPECIAL_TOKENS, build_tiny_qwen25vl

    again = build_tiny_qwen25vl(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        a, b = (hashlib.sha256((d / name).read_bytes()).hexdigest() for d in (tiny_model_dir, again))
        assert a == b, f"{name} differs between two builds"
    config = json.loads((again / "config.json").read_text())
    vocab = json.loads((again / "tokenizer.json").read_text())
    added = {t["content"]: t["id"] for t in vocab["added_tokens"]}
    assert set(SPECIAL_TOKENS) <= set(added)
    assert config["video_token_id"] == added["<|video_pad|>"]
    assert config["image_token_id"] == added["<|image_pad|>"]
    assert config["vision_start_token_id"] == added["<|vision_start|>"]
    assert config["text_config"]["vocab_size"] == max(added.values()) + 1
    text = config["text_config"]
    assert text["hidden_size"] // text["num_attention_heads"] >= 64


# ---------------------------------------------------------------- the judge stage end to end
@pytest.mark.ray
def test_vlm_filter_stage_against_real_vllm(vllm_server, ray_session, demo_corpus, tmp_path):
    """`curate run` ingest -> probe -> vlm-filter -> filter on part of the demo corpus, judged by the
    real vLLM server: request shape, JSON-schema constraint, logprobs, parsing and storage."""
    from conftest import demo_config_file
    from manifests import catalog
    from pipeline.curate import runner
    from pipeline.curate.config import load_config

    keep = {"ditto", "x2edit", "motionbench"}
    off = [f"datasets.{d}.enabled=false" for d in ("openve", "reco", "koala", "nhr_edit", "gpt_image_edit",
                                                    "pico_banana") if d not in keep]
    cfg = load_config(demo_config_file(demo_corpus, tmp_path), [
        f"judge.urls=[{vllm_server.base_url}]", f"judge.model={MODEL_NAME}", "judge.min_frames=4",
        "judge.max_frames=4", "judge.video_min_pixels=3136", "judge.video_max_pixels=6272",
        "judge.image_min_pixels=3136", "judge.image_max_pixels=6272", "judge.concurrency=4",
        "judge.request_timeout_s=120", *off])
    work = tmp_path / "work"
    runner.run(cfg, "ingest,probe,vlm-filter,filter", work)
    con = catalog.connect(work)
    rows = con.execute(
        "SELECT judge_kind, judge_status, instruction_following, visual_quality, visual_quality_expected, "
        "model, prompt_hash, prompt_tokens FROM samples_full WHERE probe_error IS NULL AND error IS NULL").fetchall()
    kinds = {r[0] for r in rows}
    assert kinds == {"video_edit", "image_edit", "clip"}
    for kind, status, inf, vq, vq_exp, model, phash, ptok in rows:
        assert status == "ok", (kind, status)
        assert 1 <= vq <= 10 and 1.0 <= vq_exp <= 10.0  # constrained integer + expected score from logprobs
        assert kind == "clip" or 1 <= inf <= 10
        assert model == MODEL_NAME and len(phash) == 16 and ptok > 0
    assert con.execute("SELECT count(*) FROM selected").fetchone()[0] == con.execute("SELECT count(*) FROM samples").fetchone()[0]
