"""Tar members addressed by header offset (stages.media.tar_members), as every stage reads them through
stages.media.locate: concatenated tars with repeated names, long names (GNU / pax headers), a
name that ends in "@digits", and a tar changed since ingest."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from stages.media.locate import MediaError as ProbeError, locate
from stages.media.tar_members import member_ref, split_ref

LONG = "deep/" * 30 + "000000001.2.jpg"  # 165 characters: needs an extended header


def tar_bytes(members: list[tuple[str, bytes]], fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
def test_every_occurrence_of_a_repeated_name_is_reachable_by_offset(tmp_path, fmt):
    path = tmp_path / "concat.tar"
    path.write_bytes(tar_bytes([("a.json", b"first"), (LONG, b"long-1"), ("x@12", b"at")], fmt)
                     + tar_bytes([("a.json", b"second"), (LONG, b"long-2")], fmt))
    with tarfile.open(path, ignore_zeros=True) as tf:
        members = [m for m in tf if m.isfile()]
    got = {(m.name, m.offset): locate(f"tar://{path}#{member_ref(m.name, m.offset)}").getvalue() for m in members}
    assert sorted(got.values()) == [b"at", b"first", b"long-1", b"long-2", b"second"]
    # a plain name is the last occurrence (what tarfile.getmember and GNU tar give)
    assert locate(f"tar://{path}#a.json").getvalue() == b"second"
    assert locate(f"tar://{path}#{LONG}").getvalue() == b"long-2"
    # a member whose own name ends in "@digits" still resolves as a plain name
    assert split_ref("x@12") == ("x", 12) and locate(f"tar://{path}#x@12").getvalue() == b"at"


def test_offset_of_another_member_or_past_the_end_is_missing(tmp_path):
    path = tmp_path / "one.tar"
    path.write_bytes(tar_bytes([("a.jpg", b"aaaa"), ("b.jpg", b"bbbb")], tarfile.USTAR_FORMAT))
    with tarfile.open(path) as tf:
        a, b = tf.getmembers()
    assert locate(f"tar://{path}#b.jpg@{b.offset}").getvalue() == b"bbbb"
    for ref in (f"a.jpg@{b.offset}", f"a.jpg@{b.offset + 7}", "a.jpg@999999"):
        with pytest.raises(ProbeError) as e:
            locate(f"tar://{path}#{ref}")
        assert e.value.kind == "missing" and "the tar changed since ingest?" in e.value.message
    cut = tmp_path / "cut.tar"
    cut.write_bytes(path.read_bytes()[: b.offset_data + 2])  # b's data cut short
    with pytest.raises(ProbeError) as e:
        locate(f"tar://{cut}#b.jpg@{b.offset}")
    assert e.value.kind == "truncated"


def test_not_a_tar_is_corrupt(tmp_path: Path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar" * 100)
    with pytest.raises(ProbeError) as e:
        locate(f"tar://{junk}#a.jpg@0")
    assert e.value.kind in ("missing", "corrupt")
