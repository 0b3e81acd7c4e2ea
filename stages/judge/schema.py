"""The `scores` table: one row per judged sample, keyed by ``sample_id``.

Every metric is stored twice: the integer the judge wrote (``visual_quality``) and the
probability-weighted expected score over the tokens 1..10 at the position where that integer was
generated (``visual_quality_expected``, to 4 decimals so that a server's batch-dependent logprob
noise does not change the bytes; null when the server returned no logprobs). A sample the
judge could not score is still a row: ``status`` says why, ``error`` says what happened.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import pyarrow as pa

from manifests.schema import SCHEMA_VERSION

# Every metric any kind of sample is scored on (pipeline.curate.config: video/image/clip metrics).
ALL_METRICS = ("instruction_following", "visual_quality", "content_preservation",
               "motion_consistency", "caption_alignment")

KINDS = ("video_edit", "image_edit", "clip")

# What `status` can hold.
#   ok           the answer is valid JSON of the requested schema
#   repaired     the fallback parser recovered every metric (prose around JSON, "Visual Quality: 8",
#                numbers as strings, clamped out-of-range values when judge.out_of_range=clamp)
#   malformed    the answer could not be parsed into every metric, after all attempts
#   engine_error the server kept failing (5xx, 429, 4xx, dropped connections, empty choices)
#   timeout      the request (or the call's overall deadline) timed out
#   input_error  the sample's media could not be read or decoded; nothing was sent
STATUSES = ("ok", "repaired", "malformed", "engine_error", "timeout", "input_error")
SCORED_STATUSES = ("ok", "repaired")


def expected_column(metric: str) -> str:
    return f"{metric}_expected"


def scores_schema(metrics: tuple[str, ...] | list[str] = ALL_METRICS) -> pa.Schema:
    """The scores schema; metrics beyond ALL_METRICS (a custom prompt) add their two columns."""
    metric_fields = []
    for m in dict.fromkeys([*ALL_METRICS, *metrics]):
        metric_fields += [pa.field(m, pa.int16()), pa.field(expected_column(m), pa.float64())]
    return pa.schema(
        [
            pa.field("sample_id", pa.string(), nullable=False),
            pa.field("dataset", pa.string()),
            pa.field("kind", pa.string()),  # video_edit | image_edit | clip
            pa.field("status", pa.string(), nullable=False),  # see STATUSES
            *metric_fields,
            pa.field("reason", pa.string()),  # the judge's optional one-line reason
            pa.field("raw_text", pa.string()),  # the answer as returned (last attempt)
            pa.field("attempts", pa.int16()),  # HTTP attempts made (0: never sent)
            pa.field("latency_s", pa.float64()),  # the last attempt, send to last byte
            pa.field("elapsed_s", pa.float64()),  # all attempts and back-off waits
            pa.field("prompt_tokens", pa.int32()),
            pa.field("output_tokens", pa.int32()),
            pa.field("finish_reason", pa.string()),
            pa.field("model", pa.string()),  # as the server named it (else the configured one)
            pa.field("endpoint", pa.string()),  # the replica that answered last
            pa.field("backend", pa.string()),  # openai | vllm | hf
            pa.field("prompt_file", pa.string()),  # e.g. video_edit_v1.txt
            pa.field("prompt_hash", pa.string()),  # sha256 of the prompt file's bytes, 16 hex
            pa.field("error", pa.string()),
            pa.field("schema_version", pa.int16(), nullable=False),
        ],
        metadata={"table": "scores", "schema_version": str(SCHEMA_VERSION)},
    )


SCORES = scores_schema()


@lru_cache(maxsize=16)
def _names(schema: pa.Schema) -> tuple[str, ...]:
    return tuple(schema.names)


def empty_score_row(sample_id: str, dataset: str | None, kind: str | None, schema: pa.Schema = SCORES,
                    **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(_names(schema))
    row.update(sample_id=sample_id, dataset=dataset, kind=kind, schema_version=SCHEMA_VERSION)
    unknown = set(values) - set(row)
    if unknown:
        raise KeyError(f"not scores columns: {sorted(unknown)}")
    row.update(values)
    return row


def sample_kind(modality: str | None, task: str | None, source_uri: str | None) -> str:
    """Which prompt a samples row gets: an image pair, a video pair, or a raw clip (t2v: no source)."""
    if modality == "image":
        return "image_edit"
    if task == "t2v" or source_uri is None:
        return "clip"
    return "video_edit"
