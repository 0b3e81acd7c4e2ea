"""Reading one member of a tar shard, by offset or by name (probe, judge, encode, preview).

A ``tar://`` URI names a member as ``tar://<abs tar>#<member>`` or, where names repeat,
``tar://<abs tar>#<member>@<offset>`` with ``<offset>`` the byte offset of the member's header
block (``TarInfo.offset``: the first header, so a GNU long-name or pax header is included).

Why offsets: some published tars (X2Edit's kontext_subject, gpt4o, textflux ...) are several
tars appended to each other, and their members repeat names with different content (one tar: 19,976
members, 10,516 unique names). A name then points at one of several members; the offset points at
exactly one. Reading by offset is also O(1): one header is parsed, the tar is not listed.

A name without an offset resolves to the LAST member of that name (``TarFile.getmember`` and GNU
tar agree), from an index built once per shard. Every tar is opened with ``ignore_zeros=True`` so
members after an inner end-of-archive marker are found.
"""
from __future__ import annotations

import os
import re
import tarfile
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

_OFFSET = re.compile(r"^(.*)@(\d+)$")


def member_ref(member: str, offset: int | None = None) -> str:
    """The part after ``#`` in a tar URI."""
    return member if offset is None else f"{member}@{offset}"


def split_ref(ref: str) -> tuple[str, int | None]:
    """``<member>@<offset>`` -> (member, offset); a plain name -> (name, None)."""
    m = _OFFSET.match(ref)
    return (m.group(1), int(m.group(2))) if m else (ref, None)


@dataclass(frozen=True)
class TarIndex:
    members: dict[str, tuple[int, int]]  # name -> (data offset, size) of its last occurrence
    complete: bool  # False when the tar ended (or broke) before its end-of-archive marker


@lru_cache(maxsize=16)
def tar_index(path: str, mtime_ns: int, size: int) -> TarIndex:
    """Member offsets of a tar, read once per shard (a shard holds thousands of members).
    Raises tarfile.ReadError when the file is not a tar at all."""
    members: dict[str, tuple[int, int]] = {}
    complete = True
    with tarfile.open(path, "r:", ignore_zeros=True) as tf:
        while True:
            try:
                m = tf.next()
            except (tarfile.ReadError, EOFError):
                complete = False
                break
            if m is None:
                break
            if m.isfile():
                members[m.name] = (m.offset_data, m.size)
    return TarIndex(members, complete)


def member_at(path: str, offset: int) -> tarfile.TarInfo | None:
    """The member whose header starts at ``offset``; None when no valid header is there."""
    with open(path, "rb") as f:
        try:
            # The constructor reads the first member; parse the one at ``offset`` instead.
            tf = tarfile.TarFile(fileobj=f, mode="r", ignore_zeros=False)
            f.seek(offset)
            return tarfile.TarInfo.fromtarfile(tf)
        except (tarfile.TarError, EOFError, ValueError, OSError):
            return None


def _plain(name: str) -> str:
    return name[2:] if name.startswith("./") else name


def locate_member(path: str, ref: str, fail: Callable[[str, str], Exception]) -> tuple[int, int]:
    """(data offset, size) of the member ``ref`` names in the tar at ``path``.

    ``fail(kind, message)`` builds the exception to raise (the caller's error type), with kind one
    of missing / truncated / corrupt."""
    member, offset = split_ref(ref)
    if offset is not None:
        info = member_at(path, offset)
        if info is not None and info.isfile() and _plain(info.name) == _plain(member):
            return info.offset_data, info.size
        # A name that happens to end in "@digits": try it as a plain name before giving up.
        where = "no valid header" if info is None else f"member {info.name!r}"
        try:
            return _by_name(path, ref, fail)
        except Exception:  # noqa: BLE001 - the offset's failure is the message worth reporting
            raise fail("missing", f"no member {member!r} at offset {offset} of {path} ({where} there: "
                                  "the tar changed since ingest?)") from None
    return _by_name(path, member, fail)


def _by_name(path: str, member: str, fail: Callable[[str, str], Exception]) -> tuple[int, int]:
    st = os.stat(path)
    try:
        index = tar_index(path, st.st_mtime_ns, st.st_size)
    except tarfile.ReadError as e:
        raise fail("corrupt", f"not a readable tar: {path}: {e}") from None
    for name in (member, f"./{member}", member[2:] if member.startswith("./") else None):
        if name in index.members:
            return index.members[name]
    if not index.complete:
        raise fail("truncated", f"tar {path} ends before member {member!r}")
    raise fail("missing", f"no member {member!r} in {path}")


__all__ = ["TarIndex", "locate_member", "member_at", "member_ref", "split_ref", "tar_index"]
