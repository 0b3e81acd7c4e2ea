"""Read the index (``moov`` box) of an MP4/MOV file far enough to tell a damaged index from a file
that really has no video.

FFmpeg's mov demuxer skips child boxes it cannot parse, so a file whose ``moov`` is garbled opens
"fine" with no streams (or a video stream without a codec). The probe asks ``video_index_problem``
before it labels such a file ``no_video_stream``: only a well-formed index without a video track
(e.g. an .m4a) is that; anything else is ``corrupt``.

Box layout (ISO/IEC 14496-12): ``size:u32 type:4cc [largesize:u64]`` then the payload; the tracks
are ``moov/trak``, a track's kind is the ``handler_type`` of ``trak/mdia/hdlr`` (``vide``,
``soun`` ...), its codec the format 4cc of the first entry of ``trak/mdia/minf/stbl/stsd``.
"""
from __future__ import annotations

import os
import re
from typing import IO

# Boxes whose payload is only child boxes, on the way from moov to hdlr and stsd.
_CONTAINERS = {b"trak", b"mdia", b"minf", b"stbl"}
_FOURCC = re.compile(rb"[A-Za-z0-9 \xa9]{4}")
MAX_MOOV_BYTES = 256 << 20  # an index this big is not one we read into memory (hours of 8K video)


class DamagedIndex(Exception):
    pass


def _boxes(buf: bytes, start: int, end: int, where: str) -> list[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the boxes that exactly fill ``buf[start:end]``."""
    out, pos = [], start
    while pos < end:
        if pos + 8 > end:
            raise DamagedIndex(f"{end - pos} stray bytes at the end of '{where}'")
        size, kind = int.from_bytes(buf[pos:pos + 4], "big"), buf[pos + 4:pos + 8]
        head = 8
        if size == 1 and pos + 16 <= end:
            size, head = int.from_bytes(buf[pos + 8:pos + 16], "big"), 16
        elif size == 0:
            size = end - pos
        if not _FOURCC.fullmatch(kind) or size < head or pos + size > end:
            raise DamagedIndex(f"an unreadable box (type {kind!r}, size {size}) inside '{where}'")
        out.append((kind, pos + head, pos + size))
        pos += size
    return out


def _track(buf: bytes, start: int, end: int) -> tuple[bytes | None, bytes | None]:
    """(handler type, first sample-description format) of one ``trak``."""
    handler = fmt = None
    stack = [(start, end, "trak")]
    while stack:
        s, e, where = stack.pop()
        for kind, ps, pe in _boxes(buf, s, e, where):
            if kind in _CONTAINERS:
                stack.append((ps, pe, kind.decode("latin-1")))
            elif kind == b"hdlr" and pe - ps >= 12:
                handler = buf[ps + 8:ps + 12]  # after version/flags and pre_defined
            elif kind == b"stsd" and pe - ps >= 16:
                fmt = buf[ps + 12:ps + 16]  # after version/flags, entry count, the entry's size
    return handler, fmt


def _top_boxes(f: IO[bytes]):
    """(type, offset, size) of the top-level boxes, then a last ``(None, end, file size)``; stops
    early (type None) at bytes that are no ISO-BMFF box (garbage, not a cut file)."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    pos = 0
    while pos + 8 <= size:
        f.seek(pos)
        head = f.read(16)
        box, kind = int.from_bytes(head[:4], "big"), head[4:8]
        if not _FOURCC.fullmatch(kind) or (pos == 0 and kind != b"ftyp"):
            yield None, -1, size
            return
        if box == 1:
            box = int.from_bytes(head[8:16], "big")
        elif box == 0:
            box = size - pos  # "to the end of the file"
        if box < 8:
            yield None, -1, size
            return
        yield kind, pos, box
        pos += box
    yield None, pos, size


def cut_iso_file(f: IO[bytes]) -> str | None:
    """Why an MP4/MOV that FFmpeg refused looks cut short, or None when it does not.

    A top-level box running past the end of the file, or a complete file with no ``moov`` (the
    index, written last by default), means the file was truncated."""
    kinds = []
    for kind, pos, size in _top_boxes(f):
        if kind is None:
            if pos < 0:
                return None
            if pos > size:
                return f"box '{kinds[-1]}' runs {pos - size} bytes past the end of the file"
        else:
            kinds.append(kind.decode("latin-1"))
    if kinds and "moov" not in kinds:
        return "no 'moov' box (the index is missing)"
    return None


def _read_moov(f: IO[bytes]) -> bytes | None:
    """The ``moov`` box's bytes, or None when ``f`` is no ISO-BMFF file or has none."""
    for kind, pos, size in _top_boxes(f):
        if kind == b"moov" and size <= MAX_MOOV_BYTES:
            f.seek(pos)
            return f.read(size)
    return None


def video_index_problem(f: IO[bytes], video_exposed: bool) -> str | None:
    """Why ``f``'s MP4 index is damaged, given what FFmpeg made of it (``video_exposed``: it found
    a video stream, but without a codec); None for a file that is not ISO-BMFF or whose index is
    intact (a track list without video, or a video track in a codec that is simply unknown)."""
    moov = _read_moov(f)
    if moov is None:
        return None
    try:
        traks = [(ps, pe) for kind, ps, pe in _boxes(moov, 8, len(moov), "moov") if kind == b"trak"]
        tracks = [_track(moov, ps, pe) for ps, pe in traks]
    except DamagedIndex as e:
        return f"the 'moov' index is damaged: {e}"
    if not tracks:
        return "the 'moov' index lists no tracks"
    for handler, fmt in tracks:
        if handler == b"vide" and (fmt is None or not _FOURCC.fullmatch(fmt)):
            return f"the 'moov' index has a video track with an unreadable sample description ({fmt!r})"
        if handler == b"vide" and not video_exposed:
            return f"the 'moov' index has a video track ({fmt.decode('latin-1')!r}) that FFmpeg could not read"
        if handler is None:
            return "the 'moov' index has a track without a handler"
    return None
