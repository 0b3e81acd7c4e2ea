"""Where a sample's media bytes are: plain paths, ``file://``, tar members and parquet cells, each
refused unless it lies (after following symlinks) inside the dataset's roots.

URIs (see ``manifests.schema.SAMPLES``): an absolute path, ``file://<abs path>``,
``tar://<abs tar>#<member>``, ``parquet://<abs file>#<row>/<column>``; other schemes (http ...)
are ``unsupported_uri`` because the pipeline does not download. Every stage that opens media
(probe, judge requests, encode, preview) goes through ``locate``.
"""
from __future__ import annotations

import io
import os
import re
import stat
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, Iterator

import pyarrow as pa

from stages.media.tar_members import locate_member

# What the `error_kind` column can hold.
ERROR_KINDS = (
    "missing", "zero_byte", "path_escape", "unreadable", "unsupported_uri", "truncated",
    "corrupt", "undecodable", "no_video_stream", "window_out_of_range", "too_large",
    "probe_failed",
)


class MediaError(Exception):
    """A media problem: ``kind`` is one of ERROR_KINDS; ``info`` holds what was measured so far."""

    def __init__(self, kind: str, message: str, info: Any = None):
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.info = kind, message, info


def dataset_roots(cfg) -> dict[str, list[str]]:
    """dataset -> the directories its media may lie in (its configured roots, resolved)."""
    return section_roots(cfg.datasets)


def section_roots(datasets) -> dict[str, list[str]]:
    """``dataset_roots`` of the ``datasets:`` section alone (what a reader of a run's config.json
    validates, without the whole run config)."""
    roots = {}
    for name, ds in datasets.enabled().items():
        roots[name] = [str(Path(p).expanduser().resolve()) for p in ds.media_roots()]
    return roots


# ------------------------------------------------------------------ locating the bytes
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def _split_container(rest: str) -> tuple[str, str]:
    """Split ``<abs file>#<inner>``. A file name may itself hold '#': take the first split whose
    left part is an existing file, else the first '#'."""
    cuts = [m.start() for m in re.finditer("#", rest)]
    if not cuts:
        raise MediaError("unsupported_uri", f"no '#<member>' part in {rest!r}")
    for cut in cuts:
        if os.path.isfile(rest[:cut]):
            return rest[:cut], rest[cut + 1:]
    return rest[:cuts[0]], rest[cuts[0] + 1:]


def _check_file(path: str, roots: list[str] | None) -> int:
    """Containment, existence and size of a local file; returns its size."""
    if not os.path.isabs(path):
        raise MediaError("unsupported_uri", f"not an absolute path: {path!r}")
    if roots is not None:
        real = os.path.realpath(path)  # follows symlinks
        if not any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
            raise MediaError("path_escape", f"{path} resolves to {real}, outside the allowed roots")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MediaError("missing", f"no such file: {path}") from None
    except PermissionError as e:
        raise MediaError("unreadable", str(e)) from None
    if not stat.S_ISREG(st.st_mode):
        raise MediaError("missing", f"not a regular file: {path}")
    if st.st_size == 0:
        raise MediaError("zero_byte", f"empty file: {path}")
    if not os.access(path, os.R_OK):
        raise MediaError("unreadable", f"permission denied: {path}")
    return st.st_size


def _read_tar_member(path: str, member: str, roots: list[str] | None) -> bytes:
    """A tar member's bytes; ``member`` is a name or ``<name>@<header offset>`` (see
    stages.media.tar_members: concatenated tars repeat names, an offset names one member)."""
    _check_file(path, roots)
    offset, length = locate_member(path, member, MediaError)
    if length == 0:
        raise MediaError("zero_byte", f"empty tar member {member!r} in {path}")
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    if len(data) < length:
        raise MediaError("truncated", f"tar member {member!r} has {len(data)} of {length} bytes")
    return data


@lru_cache(maxsize=2)
def _row_group(path: str, mtime_ns: int, group: int, column: str) -> pa.ChunkedArray:
    """One row group of one column; cached because rows of a group are probed one after another."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).read_row_group(group, columns=[column]).column(0)


def _read_parquet_cell(path: str, inner: str, roots: list[str] | None) -> bytes:
    import pyarrow.parquet as pq

    m = re.fullmatch(r"(\d+)/(.+)", inner)
    if not m:
        raise MediaError("unsupported_uri", f"expected '#<row>/<column>', got {inner!r}")
    row, column = int(m.group(1)), m.group(2)
    _check_file(path, roots)
    try:
        meta = pq.ParquetFile(path).metadata
    except (pa.ArrowInvalid, OSError) as e:
        raise MediaError("corrupt", f"not a readable parquet file: {e}") from None
    if column not in meta.schema.to_arrow_schema().names:
        raise MediaError("missing", f"no column {column!r} in {path}")
    start = 0
    for group in range(meta.num_row_groups):  # only the row group holding the row is read
        n = meta.row_group(group).num_rows
        if row < start + n:
            break
        start += n
    else:
        raise MediaError("missing", f"row {row} beyond the {start} rows of {path}")
    try:
        cell = _row_group(path, os.stat(path).st_mtime_ns, group, column)[row - start].as_py()
    except (pa.ArrowInvalid, OSError) as e:
        raise MediaError("corrupt", f"cannot read row group {group} of {path}: {e}") from None
    if isinstance(cell, dict):  # the Hugging Face image struct {bytes, path}
        cell = cell.get("bytes")
    if cell is None:
        raise MediaError("missing", f"null cell at row {row}, column {column!r}")
    if not isinstance(cell, (bytes, bytearray)):
        raise MediaError("unsupported_uri", f"cell is {type(cell).__name__}, not bytes")
    if len(cell) == 0:
        raise MediaError("zero_byte", f"empty cell at row {row}, column {column!r}")
    return bytes(cell)


def locate(uri: str, roots: list[str] | None = None) -> str | io.BytesIO:
    """The media behind ``uri``: a local path (decoders open paths fastest) or, for a tar member
    or a parquet cell, its bytes in memory. Raises MediaError."""
    if not uri:
        raise MediaError("missing", "empty uri")
    m = _SCHEME.match(uri)
    scheme = m.group(1).lower() if m else None
    if scheme is None:
        _check_file(uri, roots)
        return uri
    rest = uri[m.end():]
    if scheme == "file":
        _check_file(rest, roots)
        return rest
    if scheme == "tar":
        return io.BytesIO(_read_tar_member(*_split_container(rest), roots))
    if scheme == "parquet":
        return io.BytesIO(_read_parquet_cell(*_split_container(rest), roots))
    raise MediaError("unsupported_uri", f"{scheme}:// is not read by the pipeline (download first)")


@contextmanager
def binary(src: str | io.BytesIO) -> Iterator[IO[bytes]]:
    if isinstance(src, str):
        with open(src, "rb") as f:
            yield f
    else:
        src.seek(0)
        yield src


def short_error(e: BaseException) -> str:
    """One line of an exception (decord's carry a C++ log prefix and a stack trace)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and "Stack trace" not in ln]
    text = lines[0] if lines else type(e).__name__
    text = re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", text)
    return text[:200]
