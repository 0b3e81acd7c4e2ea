"""Read a huge CSV as a sequence of Arrow tables, holding one block in memory at a time.

pyarrow's own streaming reader (``pyarrow.csv.open_csv``) reads ahead on a background thread,
dozens of blocks, whenever its consumer is slower than the disk, which ingest always is (measured
with pyarrow 26: ~28 blocks queued right after opening with 8 MB blocks; with 64 MB blocks and a
slow consumer, 1.4 GB peak RSS on a 1.2 GB file). So the file is cut here into blocks
that end on a record boundary, and each block is parsed on its own with ``pyarrow.csv.read_csv``:
memory is bounded by the block size, whatever the file size and the consumer's speed.

A newline ends a record when an even number of quote characters precedes it since the block's
start (RFC 4180: quotes inside a quoted field are doubled, so parity is preserved). A block always
starts on a record boundary, so only its tail has to be inspected.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.csv as pacsv

from stages.ingest.record_guard import open_regular

_BOM = b"\xef\xbb\xbf"


def last_record_end(buf: bytes, quote: bytes = b'"') -> int:
    """Index just past the last newline of ``buf`` that ends a record, or -1 if none does."""
    quotes_before_end = buf.count(quote)
    end = len(buf)
    while True:
        nl = buf.rfind(b"\n", 0, end)
        if nl < 0:
            return -1
        quotes_before_end -= buf.count(quote, nl, end)
        if quotes_before_end % 2 == 0:
            return nl + 1
        end = nl


def first_record_end(buf: bytes, quote: bytes = b'"') -> int:
    """Index just past the first newline of ``buf`` that ends a record, or -1 if none does."""
    start = quotes = 0
    while True:
        nl = buf.find(b"\n", start)
        if nl < 0:
            return -1
        quotes += buf.count(quote, start, nl)
        if quotes % 2 == 0:
            return nl + 1
        start = nl + 1


def iter_record_blocks(f: io.BufferedIOBase, block_size: int, max_block_size: int) -> Iterator[memoryview]:
    """Blocks of about ``block_size`` bytes, each made of whole records (the last may lack a
    final newline). Blocks are read-only views of the bytes read, not copies.

    A block with no record boundary grows (a record longer than a block) up to ``max_block_size``
    bytes; then it is cut at its last newline whatever the quote parity. That bounds memory
    when a stray quote inside an unquoted field (pyarrow reads it literally) breaks the parity:
    at worst the rows around that cut come back from pyarrow as invalid rows, reported, not lost.
    """
    carry = b""
    want = block_size
    while True:
        data = f.read(max(want - len(carry), 1))
        if not data:
            if carry:
                yield memoryview(carry)
            return
        buf = carry + data if carry else data  # carry is normally a fraction of one record
        del data
        cut = last_record_end(buf)
        if cut <= 0 and len(buf) >= max_block_size:
            cut = buf.rfind(b"\n") + 1
        if cut <= 0:  # no record boundary yet: read more before cutting
            carry, want = buf, len(buf) * 2
            continue
        yield memoryview(buf)[:cut]
        carry, want = buf[cut:], block_size


@dataclass(frozen=True)
class CsvBlocks:
    """The header of one CSV file and a way to iterate its data as bounded Arrow tables."""

    path: Path
    columns: list[str]
    data_offset: int  # where the first data record starts (after the header and any BOM)
    block_size: int
    max_block_size: int  # a block without a record boundary is cut anyway at this size

    @classmethod
    def open(cls, path: str | Path, block_size: int, max_block_size: int | None = None) -> "CsvBlocks":
        with open_regular(path, "rb") as f:
            head = f.read(min(block_size, 1 << 20))
            while (end := first_record_end(head)) < 0:
                more = f.read(max(len(head), 1))
                if not more:  # a header without a final newline, and no data
                    end = len(head)
                    break
                head += more
        header = head[:end].removeprefix(_BOM).decode("utf-8")
        columns = next(csv.reader(io.StringIO(header)), [])
        cap = max_block_size or max(4 * block_size, 16 << 20)
        return cls(Path(path), columns, end, block_size, cap)

    def tables(self, use_threads: bool = True, start: int | None = None,
               end: int | None = None) -> Iterator[tuple[pa.Table, list[Any]]]:
        """Per block: a table with every column read as text (types are the caller's business),
        and the rows whose field count is wrong (pyarrow's InvalidRow: ``text``,
        ``actual_columns``; ``number`` counts within the block, when pyarrow knows it).

        A block with invalid UTF-8 is read again with the bad bytes replaced by U+FFFD, so one
        bad byte does not cost the rest of the file.
        """
        bad: list[Any] = []

        def on_invalid(row) -> str:
            bad.append(row)
            return "skip"

        read_options = pacsv.ReadOptions(column_names=self.columns, use_threads=use_threads)
        # Free text (captions) may hold quoted newlines: they must not split a record.
        parse_options = pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid)
        convert_options = pacsv.ConvertOptions(column_types={c: pa.string() for c in self.columns})

        def parse(data) -> pa.Table:
            bad.clear()
            return pacsv.read_csv(pa.py_buffer(data), read_options=read_options,
                                  parse_options=parse_options, convert_options=convert_options)

        with open_regular(self.path, "rb") as f:
            f.seek(self.data_offset if start is None else start)
            source = f if end is None else _Window(f, end - f.tell())
            for block in iter_record_blocks(source, self.block_size, self.max_block_size):
                try:
                    table = parse(block)
                except pa.ArrowInvalid as e:
                    if "utf8" not in str(e).lower():
                        raise
                    table = parse(bytes(block).decode("utf-8", "replace").encode("utf-8"))
                yield table, list(bad)


class _Window:
    """Reads of a file that stop ``remaining`` bytes after where they start (one byte range)."""

    def __init__(self, f, remaining: int):
        self._f, self._left = f, max(remaining, 0)

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._f.read(n) if n else b""
        self._left -= len(data)
        return data


def record_ranges(path: str | Path, data_offset: int, range_bytes: int, max_block_size: int,
                  quote: bytes = b'"', scan_bytes: int = 64 << 20) -> list[tuple[int, int]]:
    """``[(start, end), ...]``: the data of the file at ``path`` cut into byte ranges of about
    ``range_bytes``, each starting on a record boundary, so each can be read on its own.

    A boundary is the first newline after the target offset with an even number of quote
    characters between the data's start and it: the rule iter_record_blocks applies within a
    block, applied from the file's start, so a quoted newline never splits a record. Finding it
    needs the quote count up to each target: one sequential pass counting quotes (bytes.count,
    C speed, the file is read once more at planning). If no such newline comes within
    ``max_block_size`` bytes (a stray quote broke the parity) the range is cut at the first
    newline, as the block reader cuts such a block."""
    size = os.stat(path).st_size
    if size - data_offset <= range_bytes:
        return [(data_offset, size)]
    cuts = [data_offset]
    quotes, pos = 0, data_offset
    with open_regular(path, "rb") as f:
        f.seek(pos)
        target = data_offset + range_bytes
        while target < size:
            while pos < target:  # quotes before the target
                chunk = f.read(min(scan_bytes, target - pos))
                if not chunk:
                    break
                quotes += chunk.count(quote)
                pos += len(chunk)
            window = f.read(max_block_size)
            cut = _even_newline(window, quotes, quote)
            if cut < 0:
                cut = window.find(b"\n") + 1 or len(window)
            boundary = target + cut
            if boundary >= size:
                break
            quotes += window.count(quote, 0, cut)
            cuts.append(boundary)
            pos = boundary
            f.seek(pos)
            target = max(boundary + 1, data_offset + range_bytes * len(cuts))
    return [(a, b) for a, b in zip(cuts, [*cuts[1:], size])]


def _even_newline(buf: bytes, quotes_before: int, quote: bytes) -> int:
    """Index just past the first newline of ``buf`` with an even quote count before it (counting
    ``quotes_before`` quotes ahead of ``buf``), or -1."""
    start, quotes = 0, quotes_before
    while (nl := buf.find(b"\n", start)) >= 0:
        quotes += buf.count(quote, start, nl)
        if quotes % 2 == 0:
            return nl + 1
        start = nl + 1
    return -1


__all__ = ["CsvBlocks", "first_record_end", "iter_record_blocks", "last_record_end", "record_ranges"]
