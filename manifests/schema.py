"""Versioned Arrow schemas of every stage table.

Each stage writes its own table keyed by ``sample_id``. Bump ``SCHEMA_VERSION`` when a column
changes meaning or type; readers use ``union_by_name`` so added columns stay readable.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 1

MODALITIES = ("video", "image")
TASKS = ("edit", "t2v")

# The normalised edit-category vocabulary every adapter maps into. Raw categories are kept as
# published in ``category_raw``; filters work on ``category``.
CATEGORIES = (
    "style",
    "local_change",
    "background",
    "add",
    "remove",
    "replace",
    "subtitles",
    "text",
    "color",
    "action",
    "tone",
    "camera",
    "creative",
    "freeform",
    "reasoning",  # edits that need world knowledge ("show the car's interior"; X2Edit reasoning)
    "subject_driven",  # generation from a subject image, not an edit of it (X2Edit portrait ...)
    "motion",  # raw clips for the motion pretext tasks
    "other",
)

SAMPLES = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("subset", pa.string()),
        pa.field("split", pa.string()),
        pa.field("modality", pa.string()),  # video | image
        pa.field("task", pa.string()),  # edit | t2v
        # Locations: an absolute path, "tar://<abs tar path>#<member>",
        # "parquet://<abs file>#<row>/<column>" or an http(s) URL. Null source for t2v clips.
        pa.field("source_uri", pa.string()),
        pa.field("target_uri", pa.string()),
        pa.field("instruction", pa.string()),
        pa.field("alt_instructions", pa.list_(pa.string())),
        pa.field("caption", pa.string()),
        pa.field("category_raw", pa.string()),
        pa.field("category", pa.string()),
        # Window of a longer video (Koala-36M): cut at decode time.
        pa.field("clip_start_s", pa.float64()),
        pa.field("clip_end_s", pa.float64()),
        # Leading frames of source and target that every stage ignores (OpenVE-3M: 4, as SAMA's
        # own loader drops them); null = 0.
        pa.field("skip_frames", pa.int32()),
        pa.field("native_scores", pa.map_(pa.string(), pa.float64())),
        # Useful published fields with no column of their own, as a JSON object (keys per dataset,
        # see README "Manifest: extra"); query with DuckDB's json_extract_string(extra, '$.key').
        pa.field("extra", pa.string()),
        pa.field("license", pa.string()),
        pa.field("raw_record", pa.string()),  # original record as JSON, for audit
        pa.field("error", pa.string()),  # why the row could not be resolved; null when fine
        pa.field("schema_version", pa.int16(), nullable=False),
    ],
    metadata={"table": "samples", "schema_version": str(SCHEMA_VERSION)},
)


def _media_fields(role: str) -> list[pa.Field]:
    return [
        pa.field(f"{role}_codec", pa.string()),
        pa.field(f"{role}_width", pa.int32()),
        pa.field(f"{role}_height", pa.int32()),
        pa.field(f"{role}_fps", pa.float64()),
        pa.field(f"{role}_frames", pa.int64()),
        pa.field(f"{role}_duration_s", pa.float64()),
    ]


PROBES = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        *_media_fields("source"),
        *_media_fields("target"),
        # Frames inside the clip window (equal to target_frames when there is no window).
        pa.field("window_frames", pa.int64()),
        pa.field("error_kind", pa.string()),  # missing | zero_byte | path_escape | undecodable | ...
        pa.field("error", pa.string()),
        pa.field("probe_backend", pa.string()),
        pa.field("schema_version", pa.int16(), nullable=False),
    ],
    metadata={"table": "probes", "schema_version": str(SCHEMA_VERSION)},
)

# Repeated sample ids (all but the first occurrence), by the samples part (its name relative to
# tables/samples/, see manifests/repeats.py) and row that holds them.
DUPLICATES = pa.schema([("sample_id", pa.string()), ("dataset", pa.string()), ("part", pa.string()),
                        ("file_row_number", pa.int64())])

# The shard index (stages/shard): one row per shard tar, and which shard holds each key.
SHARDS = pa.schema([("shard", pa.string()), ("purpose", pa.string()), ("modality", pa.string()),
                    ("bucket", pa.string()), ("samples", pa.int64()), ("bytes", pa.int64()),
                    ("sha256", pa.string())])
SHARD_KEYS = pa.schema([("key", pa.string()), ("sample_id", pa.string()), ("shard", pa.string())])


def make_sample_id(dataset: str, *key_parts: Any) -> str:
    """Stable id: the dataset name plus a hash of the dataset's natural key.

    The natural key is what identifies a sample in the published layout (a path, a record id,
    (videoID, start, end) ...), so the id survives re-runs, re-ordering and re-partitioning.
    """
    key = json.dumps([str(p) for p in key_parts], ensure_ascii=False, separators=(",", ":"))
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]
    return f"{dataset}:{digest}"


def empty_sample(dataset: str, sample_id: str, **values: Any) -> dict[str, Any]:
    """A samples row with every column present (None where unknown)."""
    row: dict[str, Any] = {f.name: None for f in SAMPLES}
    row.update(dataset=dataset, sample_id=sample_id, schema_version=SCHEMA_VERSION)
    unknown = set(values) - set(row)
    if unknown:
        raise KeyError(f"not samples columns: {sorted(unknown)}")
    row.update(values)
    if isinstance(row.get("native_scores"), dict):
        row["native_scores"] = [(k, float(v)) for k, v in row["native_scores"].items() if v is not None]
    return row


def rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)
