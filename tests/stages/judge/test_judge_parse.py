"""Judge answer parsing: strict JSON, the tolerant fallback, and expected scores from logprobs."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fake_judge import answer_tokens, expected_of
from stages.judge.parse import (EXPECTED_DECIMALS, Completion, EngineError, expected_score, parse_answer,
                                parse_completion, read_completion)

M3 = ["instruction_following", "visual_quality", "content_preservation"]


def lp(p: float) -> float:
    return math.log(p)


def tok(token: str, cands: dict[str, float]) -> dict:
    """One logprobs position: the generated token and its top alternatives."""
    return {"token": token, "logprob": lp(cands[token]),
            "top_logprobs": [{"token": t, "logprob": lp(p)} for t, p in cands.items()]}


# ------------------------------------------------------------------ strict and fallback
def test_strict_json_is_ok():
    parsed, pos = parse_answer('{"instruction_following":8,"visual_quality":10,"content_preservation":1,'
                               '"reason":"fine"}', M3)
    assert parsed.status == "ok" and parsed.error is None
    assert parsed.scores == {"instruction_following": 8, "visual_quality": 10, "content_preservation": 1}
    assert parsed.reason == "fine"
    assert pos == {"instruction_following": 25, "visual_quality": 44, "content_preservation": 70}


def test_whitespace_around_json_keeps_positions():
    text = '\n { "instruction_following": 8, "visual_quality": 9, "content_preservation": 7 }\n'
    parsed, pos = parse_answer(text, M3)
    assert parsed.status == "ok"
    assert {m: text[p] for m, p in pos.items()} == {"instruction_following": "8", "visual_quality": "9",
                                                      "content_preservation": "7"}


@pytest.mark.parametrize("text", [
    'Sure! Here is my rating:\n```json\n{"instruction_following": 8, "visual_quality": 9, "content_preservation": 7}\n```',
    'Instruction Following: 8/10\nVisual Quality: 9/10\nContent Preservation: 7/10\nReason: ok',
    '**Instruction following**: 8\n**Visual quality** = 9\n- content-preservation: 7',
    '{"instruction_following": "8", "visual_quality": 9, "content_preservation": 7}',
    '{"instruction_following": 8.0, "visual_quality": 9, "content_preservation": 7}',
    '{"instruction_following": 8, "visual_quality": 9, "content_preservation": 7, "overall": 8}',
])
def test_fallback_repairs(text):
    parsed, _ = parse_answer(text, M3)
    assert parsed.status == "repaired", parsed.error
    assert parsed.scores == {"instruction_following": 8, "visual_quality": 9, "content_preservation": 7}


def test_half_points_round_half_up():
    parsed, _ = parse_answer('Instruction Following: 8.5\nVisual Quality: 9\nContent Preservation: 7.4', M3)
    assert parsed.status == "repaired"
    assert parsed.scores == {"instruction_following": 9, "visual_quality": 9, "content_preservation": 7}


@pytest.mark.parametrize("text,why", [
    ("", "empty"),
    ('{"instruction_following": 8, "visual_quality": 9}', "content_preservation: missing"),
    ('{"instruction_following": 8, "visual_qua', "missing"),
    ('{"instruction_following": true, "visual_quality": 9, "content_preservation": 7}', "not a number"),
    ("I cannot rate this video.", "missing"),
])
def test_malformed(text, why):
    parsed, _ = parse_answer(text, M3)
    assert parsed.status == "malformed"
    assert why in parsed.error
    assert parsed.scores == {m: None for m in M3}


@pytest.mark.parametrize("value", [0, 11, 85, -3])
def test_out_of_range_reject_or_clamp(value):
    text = '{"instruction_following": %d, "visual_quality": 9, "content_preservation": 7}' % value
    rejected, _ = parse_answer(text, M3, out_of_range="reject")
    assert rejected.status == "malformed" and "outside 1..10" in rejected.error
    clamped, _ = parse_answer(text, M3, out_of_range="clamp")
    assert clamped.status == "repaired"
    assert clamped.scores["instruction_following"] == min(max(value, 1), 10)


def test_read_completion_rejects_unusable_bodies():
    with pytest.raises(EngineError, match="no choices"):
        read_completion({"choices": []})
    with pytest.raises(EngineError, match="no message"):
        read_completion({"choices": [{"index": 0}]})
    with pytest.raises(EngineError):
        read_completion(["not", "an", "object"])
    c = read_completion({"choices": [{"message": {"content": "{}"}, "finish_reason": "length"}],
                         "usage": {"prompt_tokens": 5, "completion_tokens": 2}, "model": "m"})
    assert (c.content, c.finish_reason, c.prompt_tokens, c.output_tokens, c.model) == ("{}", "length", 5, 2, "m")


# ------------------------------------------------------------------ expected scores
def _one_metric(tokens: list[dict], chosen: int, metric="visual_quality") -> float | None:
    content = "".join(t["token"] for t in tokens)
    parsed = parse_completion(Completion(content, tokens), [metric])
    assert parsed.scores[metric] == chosen
    return parsed.expected[metric]


def test_expected_digit_by_digit_ten_observed():
    # Qwen2-style digits: "10" is "1" then "0". P("1") = 0.6 covers 1 and 10; after the generated
    # "1", P("0") = 0.75 => P(10) = 0.45, P(1) = 0.15.
    tokens = [tok('{"visual_quality":', {'{"visual_quality":': 1.0}),
              tok("1", {"1": 0.6, "9": 0.3, "8": 0.1}),
              tok("0", {"0": 0.75, "}": 0.25}),
              tok("}", {"}": 1.0})]
    assert _one_metric(tokens, 10) == round(10 * 0.45 + 1 * 0.15 + 9 * 0.3 + 8 * 0.1, EXPECTED_DECIMALS)


def test_expected_scores_do_not_carry_batching_noise():
    # A server's logprobs for one request move in the 7th decimal with how it was batched: the
    # expected score must come out the same, so a re-run writes the same bytes.
    def tokens(jitter: float) -> list[dict]:
        out = [tok('{"visual_quality":', {'{"visual_quality":': 1.0}),
               tok("8", {"8": 0.55, "9": 0.3, "7": 0.15}),
               tok("}", {"}": 1.0})]
        for entry in out[1:2]:
            entry["logprob"] += jitter
            for alt in entry["top_logprobs"]:
                alt["logprob"] += jitter * (1 if alt["token"] == "9" else -1)
        return out
    values = {_one_metric(tokens(j), 8) for j in (0.0, 1e-7, -1e-7, 3e-8)}
    assert values == {round(8 * 0.55 + 9 * 0.3 + 7 * 0.15, EXPECTED_DECIMALS)}


def test_expected_digit_by_digit_one_observed():
    tokens = [tok('{"visual_quality":', {'{"visual_quality":': 1.0}),
              tok("1", {"1": 0.8, "2": 0.2}),
              tok("}", {"}": 0.9, "0": 0.1}),
              ]
    assert _one_metric(tokens, 1) == round((1 * 0.72 + 10 * 0.08 + 2 * 0.2), EXPECTED_DECIMALS)


@pytest.mark.parametrize("chosen,one_goes_to", [(9, 10), (6, 10), (5, 1), (2, 1)])
def test_expected_unobserved_one_goes_to_nearest(chosen, one_goes_to):
    tokens = [tok('{"visual_quality":', {'{"visual_quality":': 1.0}),
              tok(str(chosen), {str(chosen): 0.7, "1": 0.2, "7": 0.1}),
              tok("}", {"}": 1.0})]
    assert _one_metric(tokens, chosen) == round(chosen * 0.7 + one_goes_to * 0.2 + 7 * 0.1, EXPECTED_DECIMALS)


def test_expected_with_a_single_token_ten():
    # A tokenizer with "10" in its vocabulary: the candidate "1" can only mean 1.
    tokens = [tok('{"visual_quality":', {'{"visual_quality":': 1.0}),
              tok("10", {"10": 0.5, "9": 0.3, "1": 0.2}),
              tok("}", {"}": 1.0})]
    assert _one_metric(tokens, 10) == round(10 * 0.5 + 9 * 0.3 + 1 * 0.2, EXPECTED_DECIMALS)


def test_expected_with_digit_merged_into_punctuation():
    # Some tokenizers merge the separator with the digit (":8"): candidates share that prefix.
    tokens = [tok('{"visual_quality"', {'{"visual_quality"': 1.0}),
              tok(":8", {":8": 0.5, ":9": 0.25, ":x": 0.05, " 8": 0.2}),
              tok("}", {"}": 1.0})]
    assert _one_metric(tokens, 8) == round((8 * 0.5 + 9 * 0.25) / 0.75, EXPECTED_DECIMALS)


def test_expected_ignores_non_score_candidates_and_renormalises():
    tokens = [tok('{"visual_quality":', {'{"visual_quality":': 1.0}),
              tok("7", {"7": 0.4, " ": 0.3, "0": 0.1, "6": 0.2}),
              tok("}", {"}": 1.0})]
    assert _one_metric(tokens, 7) == round((7 * 0.4 + 6 * 0.2) / 0.6, EXPECTED_DECIMALS)


def test_expected_none_without_logprobs_or_when_tokens_do_not_spell_the_answer():
    text = '{"visual_quality":7}'
    assert parse_completion(Completion(text, None), ["visual_quality"]).expected == {"visual_quality": None}
    wrong = [tok('{"visual_quality":', {'{"visual_quality":': 1.0}), tok("8", {"8": 1.0}), tok("}", {"}": 1.0})]
    parsed = parse_completion(Completion(text, wrong), ["visual_quality"])
    assert parsed.status == "ok" and parsed.expected == {"visual_quality": None}


def test_expected_with_a_stop_token_after_the_content():
    # vLLM lists the stop token in logprobs.content; the message content leaves it out.
    tokens = [tok('{"visual_quality":', {'{"visual_quality":': 1.0}), tok("7", {"7": 0.5, "8": 0.5}),
              tok("}", {"}": 1.0}), tok("<|endoftext|>", {"<|endoftext|>": 1.0})]
    parsed = parse_completion(Completion('{"visual_quality":7}', tokens), ["visual_quality"])
    assert parsed.expected["visual_quality"] == pytest.approx(7.5)
    # Leading whitespace the server kept in the tokens but stripped from the content.
    tokens = [tok("\n", {"\n": 1.0})] + tokens
    parsed = parse_completion(Completion('{"visual_quality":7}', tokens), ["visual_quality"])
    assert parsed.expected["visual_quality"] == pytest.approx(7.5)


def test_expected_score_out_of_token_range_is_none():
    tokens = [tok("ab", {"ab": 1.0})]
    assert expected_score(tokens, [0], 5, 7) is None


def test_fallback_answers_also_get_expected_scores():
    text = "Visual Quality: 9"
    tokens = [tok("Visual Quality: ", {"Visual Quality: ": 1.0}), tok("9", {"9": 0.5, "8": 0.5})]
    parsed = parse_completion(Completion(text, tokens), ["visual_quality"])
    assert parsed.status == "repaired" and parsed.expected["visual_quality"] == pytest.approx(8.5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 10), min_size=1, max_size=5), st.booleans())
def test_fake_server_answers_round_trip(scores, with_reason):
    metrics = [f"metric_{i}" for i in range(len(scores))]
    content, tokens = answer_tokens(dict(zip(metrics, scores)), "why not" if with_reason else None)
    parsed = parse_completion(Completion(content, tokens), metrics)
    assert parsed.status == "ok"
    assert [parsed.scores[m] for m in metrics] == scores
    for m, s in zip(metrics, scores):
        assert parsed.expected[m] == round(expected_of(s), EXPECTED_DECIMALS)
