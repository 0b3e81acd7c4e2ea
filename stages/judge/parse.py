"""Parse a judge answer: the integers, their expected scores, and how much repair it needed.

1. **Strict.** The content is JSON of the requested schema (every metric an integer in
   [score_min, score_max], optional string ``reason``): status ``ok``.
2. **Tolerant fallback** for servers that do not enforce the schema: JSON inside prose or a code
   fence, ``Instruction Following: 8`` / ``**visual_quality** = 9/10`` lines, numbers written as
   strings or as 8.0: status ``repaired`` when every metric is recovered. An out-of-range number
   (0, 11, 85) is ``malformed`` under ``judge.out_of_range: reject`` (the default: a judge that
   leaves the scale has misread the task, and clamping 11 to 10 would pass every filter), or
   clamped and ``repaired`` under ``clamp``. Anything else is ``malformed``.

**Expected score.** For each metric we find the token that generated the first digit of its
integer, and take the probability-weighted mean of the scores the candidates in that position's
``top_logprobs`` stand for (renormalised over the candidates that are scores).

How "10" is handled: byte-level BPE tokenizers differ. Qwen2's pre-tokenizer splits every digit
into its own token, so "10" is generated as "1" then "0", and the candidate "1" at the first
position stands for both 1 and 10. Its probability is split with the next position: when the
model did generate "1" there, P(10) = P("1") * P(next token starts with "0") and P(1) = the rest.
When the model generated another digit (say "8"), what would have followed "1" was never
computed; its mass then goes to whichever of 1 and 10 is nearer the integer the model chose (10
for 6..10, 1 for 1..5), since a judge's distribution is concentrated around its choice. A
tokenizer that has "10" as one token shows it as its own candidate, and then "1" means 1.
"""
from __future__ import annotations

import json
import math
import re
from bisect import bisect_right
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any


class EngineError(Exception):
    """The HTTP body is not a usable completion (empty choices, no message, not JSON)."""


@dataclass
class Completion:
    """The parts of an OpenAI chat completion the judge needs."""

    content: str | None
    tokens: list[dict] | None  # logprobs.content: [{token, logprob, top_logprobs: [...]}, ...]
    finish_reason: str | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None


def read_completion(body: Any) -> Completion:
    if not isinstance(body, dict):
        raise EngineError(f"response is {type(body).__name__}, not a JSON object")
    choices = body.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise EngineError("response has no choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise EngineError("choice has no message")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise EngineError(f"message content is {type(content).__name__}, not text")
    logprobs = choice.get("logprobs")
    tokens = logprobs.get("content") if isinstance(logprobs, dict) else None
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    return Completion(content, tokens if isinstance(tokens, list) else None, choice.get("finish_reason"),
                      body.get("model"), usage.get("prompt_tokens"), usage.get("completion_tokens"))


@dataclass
class Found:
    """One metric's number as written: its value and where its first digit is in the content."""

    value: Any
    start: int | None = None  # character offset of the first digit (None: not located)


@dataclass
class Parsed:
    status: str  # ok | repaired | malformed
    scores: dict[str, int | None]
    expected: dict[str, float | None] = field(default_factory=dict)
    reason: str | None = None
    error: str | None = None


# ------------------------------------------------------------------ finding the numbers
def _json_key_positions(text: str, metrics: list[str]) -> dict[str, int]:
    """Where each metric's number starts in a JSON text (first occurrence of the key)."""
    out = {}
    for m in metrics:
        hit = re.search(r'"%s"\s*:\s*"?(-?\d)' % re.escape(m), text)
        if hit:
            out[m] = hit.start(1)
    return out


def _strict_json(text: str) -> dict | None:
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _embedded_json(text: str, metrics: list[str]) -> tuple[dict, int] | None:
    """The first JSON object inside prose or a code fence that names a metric, and its offset."""
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(obj, dict) and any(k in obj for k in metrics):
            return obj, m.start()
    return None


def _label_pattern(metric: str) -> re.Pattern:
    # instruction_following matches "Instruction Following", "instruction-following",
    # "**Instruction following**", '"instruction_following"' ... then ":" or "=" and a number.
    words = r"[\s_-]*".join(re.escape(w) for w in metric.split("_"))
    return re.compile(r"(?<![A-Za-z])%s[\s*\"'`]*(?:score)?[\s*\"'`]*[:=][\s*\"'`]*(-?\d+(?:\.\d+)?)(?:\s*/\s*\d+)?"
                      % words, re.IGNORECASE)


def _labelled_numbers(text: str, metrics: list[str]) -> dict[str, Found]:
    out = {}
    for m in metrics:
        hit = _label_pattern(m).search(text)
        if hit:
            out[m] = Found(hit.group(1), hit.start(1))
    return out


def _reason_of(obj: dict) -> str | None:
    reason = obj.get("reason")
    return reason if isinstance(reason, str) else None


def _labelled_reason(text: str) -> str | None:
    hit = re.search(r"reason[\s*\"'`]*[:=][\s*\"'`]*([^\n\"]{1,500})", text, re.IGNORECASE)
    return hit.group(1).strip() if hit else None


# ------------------------------------------------------------------ validating the numbers
def _coerce(value: Any, lo: int, hi: int, out_of_range: str) -> tuple[int | None, bool, str | None]:
    """(integer, was_repaired, problem). A bool is not a score; "8", 8.0 and 8.4 are, repaired."""
    repaired = False
    if isinstance(value, bool) or value is None:
        return None, False, f"not a number: {value!r}"
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None, False, f"not a number: {value!r}"
        repaired = True
    if isinstance(value, float):
        if not math.isfinite(value):
            return None, False, f"not a number: {value!r}"
        repaired = True  # the schema asks for an integer: 8.0 is a deviation, 8.5 a guess
        value = int(math.floor(value + 0.5))  # 8.5 -> 9: round half up, as a reader would
    if not isinstance(value, int):
        return None, False, f"not a number: {value!r}"
    if not lo <= value <= hi:
        if out_of_range == "clamp":
            return min(max(value, lo), hi), True, None
        return None, False, f"{value} is outside {lo}..{hi}"
    return value, repaired, None


def _validate(found: dict[str, Found], metrics: list[str], lo: int, hi: int,
              out_of_range: str) -> tuple[dict[str, int | None], bool, list[str]]:
    scores, repaired, problems = {}, False, []
    for m in metrics:
        if m not in found:
            scores[m] = None
            problems.append(f"{m}: missing")
            continue
        value, fixed, problem = _coerce(found[m].value, lo, hi, out_of_range)
        scores[m] = value
        repaired |= fixed
        if problem:
            problems.append(f"{m}: {problem}")
    return scores, repaired, problems


def parse_answer(content: str | None, metrics: list[str], score_min: int = 1, score_max: int = 10,
                 out_of_range: str = "reject") -> tuple[Parsed, dict[str, int]]:
    """Scores from an answer's text, and where each metric's number starts in it."""
    text = content or ""
    if not text.strip():
        return Parsed("malformed", {m: None for m in metrics}, error="empty answer"), {}
    # 1. strict: the whole content is JSON of the schema.
    obj = _strict_json(text.strip())
    if obj is not None:
        lead = len(text) - len(text.lstrip())
        positions = {m: p + lead for m, p in _json_key_positions(text.strip(), metrics).items()}
        found = {m: Found(obj[m], positions.get(m)) for m in metrics if m in obj}
        scores, repaired, problems = _validate(found, metrics, score_min, score_max, out_of_range)
        if not problems:
            extra = set(obj) - set(metrics) - {"reason"}
            reason = obj.get("reason")
            clean = not repaired and not extra and (reason is None or isinstance(reason, str))
            return Parsed("ok" if clean else "repaired", scores, reason=_reason_of(obj),
                          error=None if clean else "answer deviates from the schema"), positions
    # 2. JSON inside prose or a code fence.
    embedded = _embedded_json(text, metrics)
    candidates: list[tuple[dict[str, Found], str | None]] = []
    if embedded is not None:
        obj, at = embedded
        positions = _json_key_positions(text[at:], metrics)
        candidates.append(({m: Found(obj[m], positions[m] + at if m in positions else None)
                            for m in metrics if m in obj}, _reason_of(obj)))
    # 3. "Metric: 8" lines.
    candidates.append((_labelled_numbers(text, metrics), _labelled_reason(text)))
    first_problems = None
    for found, reason in candidates:
        scores, _, problems = _validate(found, metrics, score_min, score_max, out_of_range)
        if not problems:
            return (Parsed("repaired", scores, reason=reason, error="recovered by the fallback parser"),
                    {m: f.start for m, f in found.items() if f.start is not None})
        first_problems = first_problems or problems
    scores = {m: None for m in metrics}
    return Parsed("malformed", scores, error="; ".join(first_problems or ["no scores found"])), {}


# ------------------------------------------------------------------ expected scores
def _prob(logprob: Any) -> float:
    try:
        p = math.exp(float(logprob))
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return p if math.isfinite(p) else 0.0


def _candidates(entry: dict) -> list[tuple[str, float]]:
    """A position's alternatives as (text, probability), the generated token included."""
    out = [(c.get("token") or "", _prob(c.get("logprob"))) for c in entry.get("top_logprobs") or []
           if isinstance(c, dict)]
    chosen = entry.get("token") or ""
    if chosen not in {t for t, _ in out}:
        out.append((chosen, _prob(entry.get("logprob"))))
    return out


def _token_offsets(tokens: list[dict], content: str) -> list[int] | None:
    """Start offset of every token in the content, or None when the tokens do not spell it.

    vLLM's logprobs also list the stop token (e.g. "<|endoftext|>") that the content leaves out,
    so the tokens may spell more than the content: they must contain it, and offsets are taken
    relative to where it starts."""
    offsets, pos = [], 0
    for t in tokens:
        offsets.append(pos)
        pos += len(t.get("token") or "")
    joined = "".join(t.get("token") or "" for t in tokens)
    if joined == content or joined.startswith(content):
        return offsets
    shift = joined.find(content) if content else -1
    if shift < 0:
        return None
    return [o - shift for o in offsets]


_DIGITS = re.compile(r"\d*")


@lru_cache(maxsize=8)
def _score_strings(lo: int, hi: int) -> tuple[dict[str, int], dict[str, tuple[str, ...]]]:
    """The scores as strings, and for each the longer scores it is a prefix of ("1" -> "10")."""
    valid = {str(s): s for s in range(lo, hi + 1)}
    longer = {d: tuple(sorted((e for e in valid if e.startswith(d) and e != d), key=len)) for d in valid}
    return valid, longer


def expected_score(tokens: list[dict], offsets: list[int], start: int, chosen: int,
                   score_min: int = 1, score_max: int = 10) -> float | None:
    """The probability-weighted mean score at the token holding character ``start``."""
    i = bisect_right(offsets, start) - 1
    if i < 0 or start >= offsets[i] + len(tokens[i].get("token") or ""):
        return None
    entry = tokens[i]
    token = entry.get("token") or ""
    cut = start - offsets[i]
    prefix = token[:cut]  # e.g. ':' when a tokenizer merges it with the digit
    valid, extensions = _score_strings(score_min, score_max)
    # (digits, whether something else follows them in the token, probability) per candidate
    read = []
    for text, p in _candidates(entry):
        if text.startswith(prefix):
            digits = _DIGITS.match(text, cut).group()
            if digits in valid:
                read.append((digits, len(digits) < len(text) - cut, p))
    whole = {d for d, _, _ in read}  # a tokenizer with "10" in its vocabulary offers it here
    mass: dict[int, float] = {}
    ambiguous: dict[str, float] = {}  # a digit string that may continue into a longer score
    for digits, ended, p in read:
        if ended or not any(e not in whole for e in extensions[digits]):
            mass[valid[digits]] = mass.get(valid[digits], 0.0) + p
        else:
            ambiguous[digits] = ambiguous.get(digits, 0.0) + p
    chosen_digits = token[cut:]
    for digits, p in ambiguous.items():
        longer = extensions[digits]
        if chosen_digits == digits and i + 1 < len(tokens):
            # Observed: what followed this very token. P(continues with the next digit of a longer score).
            nxt = _candidates(tokens[i + 1])
            total = sum(q for _, q in nxt) or 1.0
            share = {d: sum(q for t, q in nxt if t.startswith(d[len(digits):])) / total for d in longer}
            rest = max(0.0, 1.0 - sum(share.values()))
            for d, s in share.items():
                mass[valid[d]] = mass.get(valid[d], 0.0) + p * s
            mass[valid[digits]] = mass.get(valid[digits], 0.0) + p * rest
        else:
            # Not observed: the reading nearest the chosen score.
            options = [valid[digits]] + [valid[d] for d in longer]
            nearest = min(options, key=lambda s: (abs(s - chosen), s))
            mass[nearest] = mass.get(nearest, 0.0) + p
    total = sum(mass.values())
    if total <= 0:
        return None
    return sum(s * p for s, p in mass.items()) / total


# Expected scores are kept to 4 decimals. The logprobs a server returns for the same request move in
# the 7th decimal with how it batched the request (vLLM's CPU kernels are not batch-invariant: on the
# demo 2-4 of 47 rows differ run to run by up to 1e-7), so unrounded scores, and the shards that
# carry them, would never be the same bytes twice. A 1-10 score needs no more than 4 decimals; a
# re-run now flips a value only when it lies within ~1e-7 of a rounding boundary.
EXPECTED_DECIMALS = 4


def parse_completion(completion: Completion, metrics: list[str], score_min: int = 1, score_max: int = 10,
                     out_of_range: str = "reject") -> Parsed:
    """Scores, expected scores and status of one completion."""
    parsed, positions = parse_answer(completion.content, metrics, score_min, score_max, out_of_range)
    parsed.expected = {m: None for m in metrics}
    if parsed.status == "malformed" or not completion.tokens:
        return parsed
    offsets = _token_offsets(completion.tokens, completion.content or "")
    if offsets is None:
        return parsed
    for m in metrics:
        if positions.get(m) is not None and parsed.scores.get(m) is not None:
            value = expected_score(completion.tokens, offsets, positions[m], parsed.scores[m], score_min, score_max)
            parsed.expected[m] = None if value is None else round(value, EXPECTED_DECIMALS)
    return parsed
