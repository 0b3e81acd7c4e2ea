"""What keeps one bad record from taking its file, its unit or the run down with it.

* ``unconvertible_row``: a row Arrow refuses (text that is not valid Unicode, such as a lone
  surrogate ``"\\ud800"`` that JSON can spell but UTF-8 cannot) becomes an error row naming the
  field. Chosen over silently repairing the text: a caption with a replacement character in it
  would be trained on as if it were what the authors wrote. The raw record is kept, repaired
  with U+FFFD, so the user still sees what was there.
* ``open_regular``: metadata files are opened without blocking and refused unless regular, so a
  FIFO, socket or device where a metadata file is expected is one error row, not a hang.
* ``Adapter.guarded`` (stages.ingest.base) wraps the per-record work of every adapter.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

from manifests.schema import SAMPLES

_SURROGATE = re.compile("[\ud800-\udfff]")
_KEEP = ("sample_id", "dataset", "subset", "split", "modality", "task", "license", "schema_version")


class NotRegularFileError(OSError):
    """A metadata path that is a FIFO, socket, device or directory: reading it could block."""


def repair_text(value: Any) -> Any:
    """``value`` with every string made encodable (lone surrogates -> U+FFFD), recursively."""
    if isinstance(value, str):
        return value if _encodable(value) else _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {repair_text(k): repair_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [repair_text(v) for v in value]
    return value


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def bad_text_fields(row: dict[str, Any]) -> list[str]:
    """Columns of ``row`` whose text (or any text inside them) cannot be written as UTF-8."""
    return [name for name, value in row.items() if repair_text(value) != value]


def unconvertible_row(row: dict[str, Any], error: BaseException) -> dict[str, Any]:
    """An error row in place of a row Arrow refused; keeps the row's id and identity columns."""
    bad = bad_text_fields(row)
    if bad:
        reason = f"text that is not valid Unicode (a lone surrogate) in field: {', '.join(bad)}"
    else:
        reason = f"a value of the wrong type: {type(error).__name__}: {repair_text(str(error))[:200]}"
    out: dict[str, Any] = {f.name: None for f in SAMPLES}
    out.update({k: repair_text(row.get(k)) for k in _KEEP if isinstance(row.get(k), (str, int)) or row.get(k) is None})
    raw = row.get("raw_record")
    out["raw_record"] = repair_text(raw) if isinstance(raw, str) else None
    out["error"] = reason
    return out


def open_regular(path: str | Path, mode: str = "rb", **kwargs: Any):
    """Open ``path`` like ``open`` if it is a regular file, else raise NotRegularFileError.

    The file is opened with O_NONBLOCK first, so that opening a FIFO with no writer returns at
    once instead of waiting for one; the check is then made on what was opened (no race with a
    rename in between)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(f"not a regular file (a FIFO, socket, device or directory): {path}")
        os.set_blocking(fd, True)
        return open(fd, mode, closefd=True, **kwargs)
    except BaseException:
        os.close(fd)
        raise


def check_regular(path: str | Path) -> None:
    """Raise NotRegularFileError unless ``path`` is a regular file (or missing: the reader says so)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
        raise NotRegularFileError(f"not a regular file (a FIFO, socket or device): {path}")


__all__ = ["NotRegularFileError", "bad_text_fields", "check_regular", "open_regular", "repair_text",
           "unconvertible_row"]
