"""One parser per field kind for every adapter (stages/ingest/fields.py): the cases where the video
adapters' and the image adapters' former copies disagreed, decided for the stricter one."""
from __future__ import annotations

import math

import pytest

from stages.ingest import image_edit_common, video_pairs
from stages.ingest.fields import clean_text, missing_text_fields, number, numeric_scores


def test_both_families_use_the_one_implementation():
    assert video_pairs.clean_text is image_edit_common.clean_text is clean_text
    assert video_pairs.numeric_scores is image_edit_common.numeric_scores is numeric_scores


@pytest.mark.parametrize("value", [42, 3.5, math.nan, True, ["a"], {"a": 1}, None, "", "  "])
def test_text_is_text_only(value):
    # the video copy turned numbers into text: NaN became the instruction "nan"
    assert clean_text(value) is None


def test_text_is_stripped():
    assert clean_text("  Paint it red. ") == "Paint it red."


def test_wrong_types_are_named_apart_from_missing_fields():
    assert missing_text_fields([("prompt", None), ("video", "a.mp4")]) == "missing or empty field: prompt"
    assert missing_text_fields([("instruction", math.nan), ("video", " ")]) == (
        "missing or empty field: video; wrong type: instruction is NaN, not text")
    assert missing_text_fields([("instruction", 7)]) == "wrong type: instruction is int, not text"
    assert missing_text_fields([("a", "x")]) is None


def test_scores_lists_are_read_by_both_families():
    # the video copy skipped X2Edit-style list scores; the image copy expanded them
    assert numeric_scores({"vlm_score": "[9, 8]"}) == {"vlm_score_0": 9.0, "vlm_score_1": 8.0}
    assert numeric_scores({"score": [1, 2.5]}) == {"score_0": 1.0, "score_1": 2.5}
    assert numeric_scores({"score": [1, "x"]}) is None  # a list with a non-number: not a score


@pytest.mark.parametrize("text", ["1_000", "nan", "inf", "-Infinity", "0x10", "7 points", ""])
def test_a_score_string_is_a_plain_decimal(text):
    # Python's float() accepts the first four; neither copy refused them
    assert number(text) is None and numeric_scores({"score": text}) is None


def test_scores_keep_numbers_and_skip_the_rest():
    assert numeric_scores({"aesthetic_score": " 7.5 ", "clarity_score": 3, "motion_score": True,
                           "score_reason": "looks fine", "other": 1}) == {"aesthetic_score": 7.5, "clarity_score": 3.0}
    assert numeric_scores({"score": 1.0, "skipped_score": 2.0}, skip=["skipped_score"]) == {"score": 1.0}
    assert numeric_scores({"score": math.inf}) is None
