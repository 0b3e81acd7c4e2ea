"""The ``hf`` judge backend: a tiny random Qwen2.5-VL (built offline) run by transformers in this
process, behind the same client as the openai backend.

With random weights the answers are noise, so most rows end ``malformed``: what is proven is the
path (OpenAI body -> processor inputs with both videos in one prompt -> generate -> OpenAI
completion with logprobs -> parse -> scores row) and that nothing crashes or is dropped.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from manifests.schema import SAMPLES, empty_sample  # noqa: E402
from pipeline.curate.config import JudgeConfig  # noqa: E402
from stages.judge.parse import EXPECTED_DECIMALS
from stages.judge.client import Scorer, score_table  # noqa: E402
from stages.judge.hf_backend import (GenerationTimeout, HFModelError, HFTransport, load_judge_model,  # noqa: E402
                                     logprob_entries, read_messages, token_pieces, unload_judge_models)
from stages.judge.parse import Completion, parse_completion  # noqa: E402
from stages.judge.prompts import load_prompts  # noqa: E402
from stages.judge.schema import SCORES  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
CLIPS = REPO / "demo" / "clips"
MODEL_NAME = "tiny-qwen2.5-vl"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from pipeline.curate.demo.tiny_judge import build_tiny_qwen25vl

    out = build_tiny_qwen25vl(tmp_path_factory.mktemp("tiny-qwen25vl-hf"))
    yield out
    unload_judge_models()


def hf_cfg(model_dir: Path, **kw) -> JudgeConfig:
    # Few, small frames and short answers: the tiny model on two shared CPU cores.
    base = dict(backend="hf", hf_model_path=model_dir, model=MODEL_NAME, max_tokens=24, min_frames=4,
                max_frames=4, video_min_pixels=3136, video_max_pixels=6272, image_min_pixels=3136,
                image_max_pixels=6272, request_timeout_s=60)
    base.update(kw)
    return JudgeConfig(**base)


def three_kinds(tmp_path: Path) -> pa.Table:
    """A real video pair, an image pair (two small JPEGs) and a raw clip with its caption."""
    Image.new("RGB", (120, 90), (200, 40, 40)).save(tmp_path / "src.jpg", quality=90)
    Image.new("RGB", (120, 90), (40, 40, 200)).save(tmp_path / "edited.jpg", quality=90)
    rows = [
        empty_sample("ditto", "ditto:hl07", modality="video", task="edit",
                     source_uri=str(CLIPS / "hl07_source.mp4"), target_uri=str(CLIPS / "hl07_edited.mp4"),
                     instruction="make it snow"),
        empty_sample("nhr_edit", "nhr_edit:red-to-blue", modality="image", task="edit",
                     source_uri=str(tmp_path / "src.jpg"), target_uri=str(tmp_path / "edited.jpg"),
                     instruction="make the picture blue"),
        empty_sample("motionbench", "motionbench:hl07", modality="video", task="t2v", source_uri=None,
                     target_uri=str(CLIPS / "hl07_source.mp4"), caption="a street scene"),
    ]
    return pa.Table.from_pylist(rows, schema=SAMPLES)


def _jpeg_uri(color, size=(56, 56), mime="image/jpeg") -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode()


def _post(transport: HFTransport, body: dict, timeout_s: float = 60.0):
    return asyncio.run(transport.post(transport.endpoints[0], json.dumps(body).encode(), timeout_s))


# ------------------------------------------------------------------ the logprob conversion (no model)
def test_logprob_entries_on_a_known_distribution():
    """Five-token vocabulary, one step whose distribution is known: logprobs, order, and the
    expected score parse.py computes from them."""
    torch = pytest.importorskip("torch")
    vocab = ['{"visual_quality": ', "7", "8", "9", "}"]
    text = dict(enumerate(vocab))
    # step 0 writes the key, step 1 the digit (P(7)=.1, P(8)=.6, P(9)=.3), step 2 the brace.
    probs = torch.tensor([[0.97, 0.01, 0.01, 0.005, 0.005],
                          [0.0, 0.1, 0.6, 0.3, 0.0],
                          [0.01, 0.0, 0.0, 0.0, 0.99]])
    logits = torch.log(probs) + 3.0  # any shift: logits are unnormalised
    ids = [0, 2, 4]
    entries = logprob_entries(ids, logits, [text[i] for i in ids], text.__getitem__, top_n=3)
    assert [e["token"] for e in entries] == ['{"visual_quality": ', "8", "}"]
    digit = entries[1]
    assert digit["logprob"] == pytest.approx(math.log(0.6), abs=1e-6)
    assert [c["token"] for c in digit["top_logprobs"]] == ["8", "9", "7"]  # most likely first
    assert [math.exp(c["logprob"]) for c in digit["top_logprobs"]] == pytest.approx([0.6, 0.3, 0.1], abs=1e-6)
    assert digit["bytes"] == [ord("8")]
    # P = 0 is reported as OpenAI does (-9999), never -inf (not JSON).
    assert entries[2]["top_logprobs"][-1]["logprob"] == -9999.0
    json.dumps(entries, allow_nan=False)
    # What the client makes of it: the integer written, and the probability-weighted mean.
    parsed = parse_completion(Completion('{"visual_quality": 8}', entries), ["visual_quality"])
    assert parsed.status == "ok" and parsed.scores == {"visual_quality": 8}
    assert parsed.expected["visual_quality"] == round(0.1 * 7 + 0.6 * 8 + 0.3 * 9, EXPECTED_DECIMALS)
    # top_logprobs 0: entries without alternatives.
    assert all(e["top_logprobs"] == [] for e in logprob_entries(ids, logits, vocab, text.__getitem__, 0))


def test_token_pieces_spell_the_answer():
    """A character cut between two tokens is written by the second; the stop token keeps its text."""
    byte_of = {1: b"s", 2: b"\xc3", 3: b"\xa9", 4: b"!", 9: b""}  # 9: the stop token (special)

    def decode(ids):
        return b"".join(byte_of[i] for i in ids).decode("utf-8", errors="replace")

    def token_text(i):
        return "<|im_end|>" if i == 9 else decode([i])

    pieces, content = token_pieces([1, 2, 3, 4, 9], decode, {9}, token_text)
    assert content == "s\u00e9!"
    assert pieces == ["s", "", "\u00e9", "!", "<|im_end|>"]
    # Cut off by max_tokens inside a character: the answer ends with U+FFFD, and so do the pieces.
    pieces, content = token_pieces([1, 2], decode, {9}, token_text)
    assert "".join(pieces) == content == "s\ufffd"


# ------------------------------------------------------------------ the judge stage with backend hf
def test_score_table_hf_scores_every_kind(tiny_model, tmp_path):
    samples = three_kinds(tmp_path)
    cfg = hf_cfg(tiny_model)
    t0 = time.monotonic()
    out = score_table(samples, cfg)
    wall = time.monotonic() - t0
    assert out.schema.equals(SCORES, check_metadata=False)
    assert out.column("sample_id").to_pylist() == samples.column("sample_id").to_pylist()
    rows = out.to_pylist()
    assert [r["kind"] for r in rows] == ["video_edit", "image_edit", "clip"]
    for r in rows:
        # Random weights: the answer is noise, so mostly malformed, but always a row with a status.
        assert r["status"] in ("ok", "repaired", "malformed"), (r["sample_id"], r["status"], r["error"])
        assert r["prompt_tokens"] > 0 and 0 < r["output_tokens"] <= cfg.max_tokens
        assert r["finish_reason"] in ("stop", "length") and r["raw_text"] is not None
        assert r["latency_s"] > 0 and r["elapsed_s"] >= r["latency_s"]
        assert r["model"] == MODEL_NAME and r["backend"] == "hf"
        assert r["endpoint"] == f"hf:{tiny_model.resolve()}@cpu"
        assert len(r["prompt_hash"]) == 16
        # Greedy decoding would write the same malformed answer again: asked once.
        assert r["attempts"] == 1
    print("\nhf backend, tiny Qwen2.5-VL on CPU, max_tokens 24: "
          + ", ".join(f"{r['kind']} {r['latency_s']:.2f} s ({r['prompt_tokens']}+{r['output_tokens']} tok, "
                      f"{r['status']})" for r in rows) + f"; score_table {wall:.2f} s with model load")


def test_a_video_pair_is_one_prompt_with_both_videos(tiny_model, tmp_path):
    """The request the client builds for a video pair becomes one prompt holding both videos."""
    cfg = hf_cfg(tiny_model)
    row = three_kinds(tmp_path).to_pylist()[0]
    kind, body = Scorer(cfg, load_prompts(cfg), None)._build(row)
    request = json.loads(body)
    chat = read_messages(request)
    assert kind == "video_edit" and len(chat.videos) == 2 and not chat.images
    assert chat.videos[0].shape[0] == 4  # min_frames = max_frames = 4, sampled by the client
    model = load_judge_model(cfg)
    inputs = model._inputs(request, cfg.fps)
    grid = inputs["video_grid_thw"]
    assert grid.shape[0] == 2
    merge = model.processor.video_processor.merge_size ** 2
    video_tokens = int((inputs["input_ids"] == model.model.config.video_token_id).sum())
    assert video_tokens == int(grid.prod(dim=1).sum()) // merge


def test_transport_logprobs_match_the_answer(tiny_model):
    """An OpenAI completion from the model: logprobs spell the answer, greedy picks the top token."""
    transport = HFTransport(hf_cfg(tiny_model))
    body = {"model": MODEL_NAME, "max_tokens": 12, "temperature": 0, "logprobs": True, "top_logprobs": 5,
            "messages": [{"role": "user", "content": [
                {"type": "video_url", "video_url": {"url": "data:video/jpeg;base64," + ",".join(
                    _jpeg_uri(c).split(",", 1)[1] for c in ((250, 0, 0), (0, 250, 0)))}},
                {"type": "image_url", "image_url": {"url": _jpeg_uri((0, 0, 250))}},
                {"type": "text", "text": "Score it."}]}]}
    reply = _post(transport, body)
    assert reply.status == 200, reply.body[:300]
    answer = json.loads(reply.body)
    choice = answer["choices"][0]
    tokens = choice["logprobs"]["content"]
    assert len(tokens) == answer["usage"]["completion_tokens"] and answer["usage"]["prompt_tokens"] > 0
    assert "".join(t["token"] for t in tokens).removesuffix("<|im_end|>") == choice["message"]["content"]
    for t in tokens:
        assert len(t["top_logprobs"]) == 5 and t["logprob"] <= 0.0
        # No response_format: nothing is suppressed, so greedy took the most likely token.
        assert t["logprob"] == pytest.approx(t["top_logprobs"][0]["logprob"], abs=1e-5)
    assert answer["model"] == MODEL_NAME
    # Sampling with a seed repeats itself, and leaves no trace in the global RNG.
    sampled = dict(body, temperature=1.0, seed=7, logprobs=False)
    first, second = (json.loads(_post(transport, sampled).body) for _ in range(2))
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]
    assert first["choices"][0]["logprobs"] is None


def test_unreadable_requests_are_400s(tiny_model):
    transport = HFTransport(hf_cfg(tiny_model))
    cases = {
        "file url": {"type": "video_url", "video_url": {"url": "file:///tmp/x.mp4"}},
        "an mp4 data uri": {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}},
        "bad base64": {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,@@@"}},
        "not an image": {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
        "an audio part": {"type": "input_audio", "input_audio": {"data": "AAAA"}},
    }
    for name, part in cases.items():
        reply = _post(transport, {"messages": [{"role": "user", "content": [part]}], "max_tokens": 4})
        assert reply.status == 400, name
        assert json.loads(reply.body)["error"]["message"], name
    too_long = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6}
    reply = _post(transport, too_long)
    assert reply.status == 400 and b"context" in reply.body


def test_a_generation_past_its_timeout_is_a_timeout_row(tiny_model, tmp_path):
    samples = three_kinds(tmp_path).slice(1, 1)  # the image pair
    cfg = hf_cfg(tiny_model, max_tokens=4000, request_timeout_s=0.3, max_attempts=2, backoff_base_s=0.01,
                 backoff_max_s=0.02)
    t0 = time.monotonic()
    row = score_table(samples, cfg).to_pylist()[0]
    assert row["status"] == "timeout" and row["attempts"] == 2, row
    assert time.monotonic() - t0 < 20  # stopped at the deadline, not after 4000 tokens
    # The model thread is free again: the next request runs at once.
    assert score_table(samples, hf_cfg(tiny_model, max_tokens=16)).column("status")[0].as_py() != "timeout"


def test_a_caller_that_left_stops_the_generation(tiny_model):
    """When post() stops waiting it sets the request's flag: the model thread does no more for it."""
    model = load_judge_model(hf_cfg(tiny_model))
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(GenerationTimeout):
        model.complete(json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(),
                       time.monotonic() + 60, cancelled, 2.0)


def test_a_checkpoint_that_cannot_load_says_why(tmp_path):
    with pytest.raises(HFModelError, match="not a directory"):
        score_table(three_kinds(tmp_path), hf_cfg(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(HFModelError, match="local files"):
        score_table(three_kinds(tmp_path), hf_cfg(tmp_path / "empty"))
