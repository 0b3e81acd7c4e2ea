"""Reading one field of a published record: text and scores, the same way in every adapter.

The video adapters and the image adapters had a parser each; where they differed, the stricter
behaviour is kept:

* text is text: a number or NaN where an instruction belongs is refused (it was turned into the
  instruction ``"nan"``), and ``missing_text_fields`` names it as a wrong type;
* a score is a finite number, a plain decimal string (``"7.5"``; not ``"1_000"`` or ``"nan"``,
  which Python's ``float`` accepts) or a list of them (X2Edit's ``"[9, 8]"``).
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Iterable

_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def clean_text(value: Any) -> str | None:
    """A stripped string, or None when the value is missing, empty or not text."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def text_problem(value: Any) -> str | None:
    """Why ``value`` is not usable text: ``"missing or empty"``, ``"<type>, not text"``; else None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return "missing or empty"
    if not isinstance(value, str):
        if isinstance(value, float) and math.isnan(value):
            return "NaN, not text"
        return f"{type(value).__name__}, not text"
    return None


def missing_text_fields(pairs: Iterable[tuple[str, Any]]) -> str | None:
    """One error message for the required text fields (name, raw value) that are unusable:
    ``"missing or empty field: prompt"``, ``"wrong type: instruction is NaN, not text"``; None if all are fine."""
    missing, wrong = [], []
    for name, value in pairs:
        problem = text_problem(value)
        if problem == "missing or empty":
            missing.append(name)
        elif problem:
            wrong.append(f"{name} is {problem}")
    parts = ([f"missing or empty field: {', '.join(missing)}"] if missing else []) + \
            ([f"wrong type: {'; '.join(wrong)}"] if wrong else [])
    return "; ".join(parts) or None


def number(value: Any) -> float | None:
    """A finite number from a number or a plain decimal string; None for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not _DECIMAL.fullmatch(text):
            return None
        value = text
    elif not isinstance(value, (int, float)):
        return None
    try:
        result = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return result if math.isfinite(result) else None


def numeric_scores(record: dict[str, Any], skip: Iterable[str] = ()) -> dict[str, float] | None:
    """Published quality scores: fields named ``*score*`` holding a number, a numeric string, or
    a list of numbers (X2Edit writes judge scores as the string ``"[9, 8]"``; those become
    ``score_0``, ``score_1``). Non-numeric values ("None", reasoning text) are skipped."""
    skip = set(skip)
    out: dict[str, float] = {}
    for name, value in record.items():
        if name in skip or "score" not in str(name).lower():
            continue
        if isinstance(value, str) and value.strip().startswith("["):
            try:
                value = json.loads(value)
            except (json.JSONDecodeError, RecursionError):
                continue
        if isinstance(value, (list, tuple)):
            numbers = [number(v) for v in value]
            if numbers and all(n is not None for n in numbers):
                out.update({f"{name}_{i}": n for i, n in enumerate(numbers)})
            continue
        n = number(value)
        if n is not None:
            out[str(name)] = n
    return out or None


__all__ = ["clean_text", "missing_text_fields", "number", "numeric_scores", "text_problem"]
