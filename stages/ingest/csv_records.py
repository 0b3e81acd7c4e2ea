"""Read a CSV record by record, so that no bad record can take others with it.

The stdlib reader over a whole file has three ways to lose records: an unbalanced quote swallows
every following line into one field (records merged silently), one byte that is not UTF-8 raises
and ends the file, and one field over the field limit (``csv.field_size_limit()``, 128 KiB) raises and ends the file. Here each record
is parsed on its own, from the line it starts on:

* a record is one line, or several when a quoted field holds newlines (it may span at most
  ``max_record_lines`` lines);
* a quoted field whose continuation lines each look like a complete record (as many fields as
  the header) is an unbalanced quote, not a multi-line field: that first line is one error row
  and reading resumes on the next line, so the records after it are read, not merged;
* any other parse error (a stray quote in strict mode, a field over the limit) is an error
  row for the record's first line; reading resumes on the next line;
* lines are decoded one by one: a record holding bytes that are not UTF-8 is an error row (its
  text, with U+FFFD in their place, is kept for the user).

A BOM at the start of the file is skipped, as every metadata reader does.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator, NamedTuple

from stages.ingest.record_guard import open_regular

UTF8_BOM = b"\xef\xbb\xbf"


class CsvRecord(NamedTuple):
    lineno: int  # the line the record starts on (1-based, the header is line 1)
    fields: list[str] | None  # None when the record could not be parsed
    text: str  # the record's text as read (U+FFFD in place of bytes that are not UTF-8)
    error: str | None


def _decode(raw: bytes) -> tuple[str, bool]:
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), False


class _Lines:
    """The file's lines with a push-back, so a failed multi-line record can give back the lines
    after its first one."""

    def __init__(self, f):
        self._f, self._back, self._next_no = f, [], 1

    def take(self) -> tuple[int, bytes] | None:
        if self._back:
            return self._back.pop()
        raw = self._f.readline()
        if not raw:
            return None
        if self._next_no == 1:
            raw = raw.removeprefix(UTF8_BOM)
        item = (self._next_no, raw)
        self._next_no += 1
        return item

    def give_back(self, items: list[tuple[int, bytes]]) -> None:
        self._back.extend(reversed(items))


def _parse(texts: list[str], delimiter: str) -> list[list[str]]:
    return list(csv.reader(texts, delimiter=delimiter, strict=True))


def _looks_like_record(text: str, delimiter: str, width: int | None) -> bool:
    if width is None or width < 2:
        return False
    try:
        rows = _parse([text], delimiter)
    except csv.Error:
        return False
    return len(rows) == 1 and len(rows[0]) == width


def iter_csv_records(path: str | Path, delimiter: str, max_record_lines: int = 64,
                     width: int | None = None) -> Iterator[CsvRecord]:
    """Every record of the CSV at ``path`` (the header first), blank lines skipped.

    ``width`` is the header's field count if known; else the first record's is used."""
    with open_regular(path, "rb") as f:
        lines = _Lines(f)
        while (first := lines.take()) is not None:
            record = _one_record(first, lines, delimiter, max_record_lines, width)
            if record is None:
                continue
            if width is None and record.fields is not None:
                width = len(record.fields)
            yield record


def _one_record(first: tuple[int, bytes], lines: _Lines, delimiter: str, max_lines: int,
                width: int | None) -> CsvRecord | None:
    lineno, raw = first
    if b'"' not in raw and raw.isascii():  # the common case: no quoting, plain text
        line = raw.decode("ascii").rstrip("\r\n")
        if not line.strip():
            return None
        fields = line.split(delimiter)
        if len(line) <= csv.field_size_limit():
            return CsvRecord(lineno, fields, line, None)
    text, utf8 = _decode(raw)
    if not text.strip():
        return None
    if '"' not in text:  # no quoting: the fields are the line split on the separator (the common case)
        line = text.rstrip("\r\n")
        fields = line.split(delimiter)
        limit = csv.field_size_limit()
        if any(len(x) > limit for x in fields):
            return CsvRecord(lineno, None, line, f"line {lineno}: malformed CSV record: field larger than field limit ({limit})")
        if not utf8:
            return CsvRecord(lineno, None, line, f"line {lineno}: not UTF-8 (bad bytes shown as U+FFFD)")
        return CsvRecord(lineno, fields, line, None)
    taken, texts, all_utf8 = [first], [text], utf8
    while True:
        try:
            rows = _parse(texts, delimiter)
            error = None
        except csv.Error as e:
            rows, error = [], str(e)
        if error and "unexpected end of data" in error and len(taken) < max_lines:
            more = lines.take()
            if more is not None:
                more_text, more_utf8 = _decode(more[1])
                taken.append(more)
                texts.append(more_text)
                all_utf8 = all_utf8 and more_utf8
                continue
            error = "unbalanced quote: the record is not closed before the end of the file"
        elif error and "unexpected end of data" in error:
            error = f"unbalanced quote: the record is not closed within {max_lines} lines"
        if error is None and len(taken) > 1 and any(_looks_like_record(t, delimiter, width) for t in texts[1:]):
            error = "unbalanced quote: a quoted field runs into the following records"
        if error is not None and len(taken) > 1 and not error.startswith("unbalanced quote"):
            error = f"unbalanced quote: a quoted field runs on past its line ({error})"
        if error is not None:
            lines.give_back(taken[1:])  # the next record starts on the next line
            return CsvRecord(lineno, None, text.rstrip("\r\n"), f"line {lineno}: malformed CSV record: {error}")
        joined = "".join(texts).rstrip("\r\n")
        if not all_utf8:
            return CsvRecord(lineno, None, joined, f"line {lineno}: not UTF-8 (bad bytes shown as U+FFFD)")
        return CsvRecord(lineno, rows[0] if rows else [], joined, None)


__all__ = ["CsvRecord", "iter_csv_records"]
