"""Helpers shared by the image edit-pair adapters (NHR-Edit, GPT-Image-Edit-1.5M, X2Edit,
Pico-Banana-400K).

Their metadata is JSON (lines, lists or tar members) with free-text edit-type labels; what they
share is: reading JSON Lines without losing a malformed line, turning a label into the normalised
category vocabulary by keywords, collecting published quality scores, and spelling container
URIs the way the probe stage reads them.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Iterator

from manifests.schema import CATEGORIES
from stages.ingest.fields import clean_text, numeric_scores  # noqa: F401 - shared by the image adapters
from stages.ingest.fields import number as _number
from stages.ingest.record_guard import open_regular

UTF8_BOM = b"\xef\xbb\xbf"

# ------------------------------------------------------------------ text


def text_list(value: Any) -> list[str] | None:
    """Alternative instructions as a list of non-empty strings.

    Accepts a list, a JSON-encoded list (some exports stringify list columns) or one string.
    """
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            try:
                value = json.loads(s)
            except json.JSONDecodeError:
                value = [s]
        else:
            value = [s]
    if not isinstance(value, (list, tuple)):
        return None
    out = [t for t in (clean_text(v) for v in value) if t]
    return out or None


def label_text(value: Any) -> str | None:
    """A raw category label as one string (lists are joined with '|', numbers kept)."""
    if isinstance(value, (list, tuple)):
        parts = [label_text(v) for v in value]
        return "|".join(p for p in parts if p) or None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return str(value)
    return clean_text(value)


# ------------------------------------------------------------------ categories

# Ordered: the first rule that matches a label wins. The order resolves labels naming several
# things: "Change font style or color of visible text" is text, not style or color;
# "Add/Remove/Replace accessories" is a local change, not an addition; "Add film grain" is tone.
_KEYWORD_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (category, re.compile(pattern))
    for category, pattern in (
        ("text", r"\btext(ual)?\b|\bfont\b|\btranslat|\btypograph|\bsubtitle"),
        ("style", r"\bstyli[sz]|\bstyle\b|cartoon|anime|manga|sketch|comic|pixar|disney|\blego\b"
                  r"|funko|simpson|sticker|line art|caricature|van gogh|\bpainting|artistic"
                  r"|watercolou?r|ghibli|illustration"),
        ("background", r"background|backdrop|scene context"),
        ("local_change", r"accessor|clothing|outfit|expression|\bage\b|gender|attribute|material"
                         r"|\bsize\b|\bshape\b|orientation|relocat|\bposition\b|\blocal\b"),
        ("tone", r"\btone\b|\btonal\b|\btune\b|lighting|weather|season|film grain|vintage|filter"
                 r"|exposure|bright|contrast|photometric|dehaz|low light|enhance|day to night"),
        ("remove", r"\bremov|\bdelet|\beras"),
        ("replace", r"\breplac|\bswap|substitut"),
        ("add", r"\badd(s|ed|ing|ition)?\b|\binsert"),
        ("color", r"colou?r"),
        ("action", r"\baction\b|\bpose\b|motion|gesture"),
        ("camera", r"zoom|camera|viewpoint|perspective|outpaint|rotation|movement|\bresize\b"),
        ("freeform", r"free ?form"),
        ("creative", r"creative"),
    )
)
assert all(c in CATEGORIES for c, _ in _KEYWORD_RULES)


def normalise_label(label: str) -> str:
    """Lower case, separators (``_ - / –``) as spaces: ``subject_addition`` -> ``subject addition``."""
    return re.sub(r"\s+", " ", re.sub(r"[_\-/–—:,()]+", " ", label.lower())).strip()


def keyword_category(*labels: str | None) -> str:
    """The normalised category of the first label that any keyword rule matches, else "other"."""
    for label in labels:
        if not label:
            continue
        text = normalise_label(label)
        if text in CATEGORIES:
            return text
        for category, pattern in _KEYWORD_RULES:
            if pattern.search(text):
                return category
    return "other"


# ------------------------------------------------------------------ scores


# ------------------------------------------------------------------ JSON Lines


def iter_json_lines(path: Path) -> Iterator[tuple[int, str, dict[str, Any] | None, str | None]]:
    """``(line number, line text, record, error)`` for every non-blank line; exactly one of
    record/error is set. Lines are read as bytes so a bad byte sequence spoils one line only."""
    with open_regular(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1:
                raw = raw.removeprefix(UTF8_BOM)  # as the CSV and JSON readers do
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError as e:
                yield lineno, raw.decode("utf-8", "replace").strip(), None, f"line {lineno}: not UTF-8: {e.reason}"
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as e:
                yield lineno, text, None, f"line {lineno}: malformed JSON: {e.msg}"
                continue
            except RecursionError:
                yield lineno, text[:10000], None, f"line {lineno}: JSON nested too deeply to read"
                continue
            if not isinstance(record, dict):
                yield lineno, text, None, f"line {lineno}: expected a JSON object, got {type(record).__name__}"
                continue
            yield lineno, text, record, None


def iter_json_array(path: Path, chunk_chars: int = 1 << 20, max_record_chars: int = 64 << 20) -> Iterator[Any]:
    """The elements of a top-level JSON array, decoded one at a time from a bounded buffer, so a
    multi-GB annotation list never sits in memory whole. Raises ValueError where the text stops
    being a JSON array (elements before that point have been yielded)."""
    decoder = json.JSONDecoder()
    with open_regular(path, "r", encoding="utf-8-sig") as f:
        buf, pos, eof = "", 0, False

        def more() -> None:
            nonlocal buf, pos, eof
            chunk = f.read(chunk_chars)
            eof = not chunk
            buf, pos = buf[pos:] + chunk, 0

        def skip_ws() -> None:
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    pos += 1
                if pos < len(buf) or eof:
                    return
                more()

        skip_ws()
        if pos >= len(buf) or buf[pos] != "[":
            raise ValueError("not a JSON array")
        pos += 1
        expect_value = True
        while True:
            skip_ws()
            if pos >= len(buf):
                raise ValueError("JSON array not closed (file truncated?)")
            if buf[pos] == "]":
                return
            if not expect_value:
                if buf[pos] != ",":
                    raise ValueError(f"expected ',' or ']' in the JSON array, got {buf[pos]!r}")
                pos += 1
                expect_value = True
                continue
            try:
                value, end = decoder.raw_decode(buf, pos)
                complete = end < len(buf) or eof  # a number/literal may continue in the next chunk
            except json.JSONDecodeError as e:
                if eof:
                    raise ValueError(f"malformed JSON in the array: {e.msg}") from None
                complete = False
            if not complete:
                if len(buf) - pos > max_record_chars:
                    raise ValueError(f"a record over {max_record_chars} characters, or malformed JSON")
                more()
                continue
            yield value
            pos, expect_value = end, False


# ------------------------------------------------------------------ URIs


def tar_uri(tar_path: Path | str, member: str) -> str:
    return f"tar://{tar_path}#{member}"


def parquet_uri(path: Path | str, row: int, column: str) -> str:
    return f"parquet://{path}#{row}/{column}"


def posix_rel(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with forward slashes (stable natural keys across OSes)."""
    return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()


def int_or_none(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number == int(number) else None


# Instructions that are placeholders for "none" (X2Edit writes "None" and "无" where the
# generating model gave no instruction): empty, after stripping edge punctuation and case.
NULL_INSTRUCTIONS = frozenset({"none", "null", "nan", "n/a", "无", "空", "无指令"})
_EDGE = " \t\r\n.。!！?？,，;；:：、\"'“”‘’()（）"


def instruction_text(value: Any) -> str | None:
    """An instruction, or None when missing, empty or a "None"/"无" placeholder."""
    text = clean_text(value)
    if text is None or text.lower().strip(_EDGE) in NULL_INSTRUCTIONS or not text.strip(_EDGE):
        return None
    return text
