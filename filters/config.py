"""The ``filter:`` section: thresholds and category subsets (the paper's defaults)."""
from __future__ import annotations

from typing import Literal

from pipeline.config_base import Strict


class ThresholdRule(Strict):
    at_least: dict[str, float] = {}  # score >= value
    greater_than: dict[str, float] = {}  # score > value (strict)


class FilterConfig(Strict):
    image: ThresholdRule = ThresholdRule(
        at_least={"instruction_following": 9, "visual_quality": 9, "content_preservation": 9}
    )
    video: ThresholdRule = ThresholdRule(
        at_least={"instruction_following": 8, "visual_quality": 8, "content_preservation": 8},
        greater_than={"motion_consistency": 8},
    )
    # Raw clips (motion pretext): the video thresholds applied to the clip metrics (our reading
    # of the paper, which only says clips are scored on "the metrics that apply").
    clip: ThresholdRule = ThresholdRule(
        at_least={"caption_alignment": 8, "visual_quality": 8},
        greater_than={"motion_consistency": 8},
    )
    # Per dataset, the normalised categories kept (datasets not listed keep everything).
    keep_categories: dict[str, list[str]] = {
        "ditto": ["style"],
        "openve": ["local_change", "background", "style", "subtitles"],
    }
    # Per dataset, words that reject an instruction containing them (case-insensitive), as the
    # dataset's own loader does: rule rejected_instruction. ReCo-Data's official loader skips
    # instructions containing "error" or "none".
    reject_instruction_words: dict[str, list[str]] = {"reco": ["error", "none"]}
    # Compare thresholds with the judge's integer, or with its probability-weighted expected
    # score (falls back to the integer where the server returned no logprobs).
    score_field: Literal["score", "expected"] = "score"
    # Judge outcomes that count as scored; any other status rejects the sample (rule judge_status).
    accept_status: list[Literal["ok", "repaired"]] = ["ok", "repaired"]
