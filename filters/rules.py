"""Threshold and category rules over samples joined with their judge scores.

The rules, in the order that attributes a rejection (``rejected_by`` names the first that fails):

1. ``sample_error``   ingest could not resolve the sample (``sample_error`` not null)
2. ``probe_error``    the probe found its media broken (``probe_error_kind`` not null)
2b. ``screen.*``      the screen stage drops it (filters/screen.py; only when screened)
3. ``category``       the dataset keeps only some categories (filter.keep_categories)
3b. ``rejected_instruction``  the dataset's own loader refuses the instruction: it contains one of
                      filter.reject_instruction_words[dataset], case-insensitive (ReCo-Data's
                      official loader skips instructions containing "error" or "none")
4. ``judge_status``   the judge did not score it (no scores row, or a status outside
                      filter.accept_status: malformed, engine_error, timeout, input_error)
5. thresholds         per kind of sample, one rule per metric: ``image.visual_quality>=9``,
                      ``video.motion_consistency>8``, ``clip.caption_alignment>=8`` ... compared
                      with the integer score or the expected score (filter.score_field; where a
                      row has no expected score, its integer is used).

Rules 1-2 and 3b apply only when their column is present. The input is one row per sample with
columns ``sample_id, dataset, modality, task, source_uri, category, instruction, judge_status`` and the metric
columns (``visual_quality``, ``visual_quality_expected`` ...); ``filters.selection.joined_sql``
builds it from a run's catalog.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from filters.screen import screen_fails, screen_rules

SELECTED = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string()),
        pa.field("kept", pa.bool_(), nullable=False),
        pa.field("rejected_by", pa.string()),  # the first rule that failed; null when kept
    ],
    metadata={"table": "selected", "schema_version": "1"},
)

# Which FilterConfig section holds the thresholds of each kind of judged sample.
SECTION_OF_KIND = {"image_edit": "image", "video_edit": "video", "clip": "clip"}


@dataclass(frozen=True)
class Rule:
    name: str
    what: str  # sample_error | probe_error | category | judge_status | threshold
    kind: str | None = None  # threshold: the kind of sample it applies to
    metric: str | None = None
    op: str | None = None  # ">=" or ">"
    value: float | None = None
    dataset: str | None = None  # category: the dataset it applies to
    allowed: tuple[str, ...] = ()  # category: kept categories; judge_status: accepted statuses;
    # rejected_instruction: the words that reject an instruction


def _num(v: float) -> str:
    return f"{v:g}"


def rules_for(cfg, columns: list[str] | None = None) -> list[Rule]:
    """The ordered rules of a FilterConfig (rules on absent optional columns are left out)."""
    cols = set(columns or [])
    rules = []
    if columns is None or "sample_error" in cols:
        rules.append(Rule("sample_error", "sample_error"))
    if columns is None or "probe_error_kind" in cols:
        rules.append(Rule("probe_error", "probe_error"))
    rules += screen_rules(Rule, columns)  # what the screen stage drops (filters/screen.py)
    for dataset, keep in sorted(cfg.keep_categories.items()):
        rules.append(Rule("category", "category", dataset=dataset, allowed=tuple(keep)))
    if columns is None or "instruction" in cols:
        for dataset, words in sorted(cfg.reject_instruction_words.items()):
            if words:
                rules.append(Rule("rejected_instruction", "instruction", dataset=dataset,
                                  allowed=tuple(w.lower() for w in words)))
    rules.append(Rule("judge_status", "judge_status", allowed=tuple(cfg.accept_status)))
    for kind, section in SECTION_OF_KIND.items():
        rule = getattr(cfg, section)
        for metric, v in rule.at_least.items():
            rules.append(Rule(f"{section}.{metric}>={_num(v)}", "threshold", kind, metric, ">=", float(v)))
        for metric, v in rule.greater_than.items():
            rules.append(Rule(f"{section}.{metric}>{_num(v)}", "threshold", kind, metric, ">", float(v)))
    return rules


def rule_names(cfg, columns: list[str] | None = None) -> list[str]:
    return list(dict.fromkeys(r.name for r in rules_for(cfg, columns)))


# ------------------------------------------------------------------ evaluation with Arrow
def _column(table: pa.Table, name: str, dtype=pa.string()) -> pa.ChunkedArray:
    if name in table.column_names:
        return table.column(name)
    return pa.chunked_array([pa.nulls(table.num_rows, dtype)], dtype)


def sample_kinds(table: pa.Table) -> pa.ChunkedArray:
    """image_edit | video_edit | clip per row (as stages.judge.schema.sample_kind decides)."""
    given = _column(table, "judge_kind")  # the scores row's kind, when scored
    modality, task, source = _column(table, "modality"), _column(table, "task"), _column(table, "source_uri")
    is_image = pc.fill_null(pc.equal(modality, "image"), False)
    is_clip = pc.or_(pc.fill_null(pc.equal(task, "t2v"), False), pc.is_null(source))
    derived = pc.if_else(is_image, "image_edit", pc.if_else(is_clip, "clip", "video_edit"))
    return pc.coalesce(given, derived)


def _score(table: pa.Table, metric: str, field: str) -> pa.ChunkedArray:
    if metric not in table.column_names:
        raise ValueError(f"filter: no column {metric!r} in the scores; the judge config has no such "
                         f"metric (check the filter section's metric names)")
    integer = pc.cast(table.column(metric), pa.float64())
    if field == "expected" and f"{metric}_expected" in table.column_names:
        return pc.coalesce(pc.cast(table.column(f"{metric}_expected"), pa.float64()), integer)
    return integer


def failures(table: pa.Table, rule: Rule, field: str, kinds: pa.ChunkedArray | None = None) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """(applies, fails) boolean columns of one rule, nulls resolved (a null score fails)."""
    n = table.num_rows
    every = pa.chunked_array([pa.array([True] * n, pa.bool_())]) if n else pa.chunked_array([], pa.bool_())
    if rule.what == "sample_error":
        return every, pc.is_valid(_column(table, "sample_error"))
    if rule.what == "probe_error":
        return every, pc.is_valid(_column(table, "probe_error_kind"))
    if rule.what == "screen":
        return every, screen_fails(table, rule.name)
    if rule.what == "category":
        applies = pc.fill_null(pc.equal(_column(table, "dataset"), rule.dataset), False)
        inside = pc.fill_null(pc.is_in(_column(table, "category"), value_set=pa.array(rule.allowed, pa.string())), False)
        return applies, pc.and_(applies, pc.invert(inside))
    if rule.what == "instruction":
        applies = pc.fill_null(pc.equal(_column(table, "dataset"), rule.dataset), False)
        text = pc.utf8_lower(pc.fill_null(_column(table, "instruction"), ""))
        hit = None
        for word in rule.allowed:
            found = pc.match_substring(text, word)
            hit = found if hit is None else pc.or_(hit, found)
        return applies, pc.and_(applies, hit)
    if rule.what == "judge_status":
        ok = pc.fill_null(pc.is_in(_column(table, "judge_status"), value_set=pa.array(rule.allowed, pa.string())), False)
        return every, pc.invert(ok)
    kinds = sample_kinds(table) if kinds is None else kinds
    applies = pc.fill_null(pc.equal(kinds, rule.kind), False)
    score = _score(table, rule.metric, field)
    passes = pc.greater_equal(score, rule.value) if rule.op == ">=" else pc.greater(score, rule.value)
    return applies, pc.and_(applies, pc.invert(pc.fill_null(passes, False)))


def select_table(joined: pa.Table, cfg) -> pa.Table:
    """The `selected` table: one row per input row, ``kept`` and the first failing rule."""
    kinds = sample_kinds(joined)
    rejected = pa.chunked_array([pa.nulls(joined.num_rows, pa.string())], pa.string())
    for rule in rules_for(cfg, joined.column_names):
        _, fails = failures(joined, rule, cfg.score_field, kinds)
        rejected = pc.if_else(pc.and_(pc.is_null(rejected), fails), rule.name, rejected)
    return pa.table({"sample_id": pc.cast(joined.column("sample_id"), pa.string()),
                     "dataset": pc.cast(_column(joined, "dataset"), pa.string()),
                     "kept": pc.is_null(rejected), "rejected_by": rejected}, schema=SELECTED)
