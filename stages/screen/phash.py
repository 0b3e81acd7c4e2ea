"""Perceptual hashes of small grey frames, and which frames carry no information.

``phash`` is the DCT hash of imagehash/pHash (32x32 grey, 2-D DCT-II, the 8x8 lowest frequencies
against their median), written over NumPy because neither OpenCV's img_hash nor imagehash is in the
project's environment; tests/stages/screen/test_screen_core.py checks the DCT against an FFT-based one.
Letterbox and pillarbox bars are cut before hashing, so a letterboxed re-upload hashes like the
original. Two things make crops and near misses findable without comparing all pairs
(stages/screen/groups.py): each hash comes with its *weak bits* (per 32-bit half, the WEAK_PER_HALF
bits whose DCT coefficient lies nearest the median, the ones a re-encode or a shifted frame flips
first), and a few frames per sample are also hashed on WINDOWS, sub-windows of the frame, so a
copy cropped by up to ~10 % from any sides hashes close to one of the original's windows.
A frame is *uninformative* (black, one colour, a title card of text on a flat ground)
when almost all its pixels sit near its median grey: such frames never make a match on their own.
"""
from __future__ import annotations

import numpy as np

HASH_SIDE = 32  # the grey image the DCT runs on
LOW = 8  # the LOW x LOW lowest frequencies make the 64 bits
# A pixel "near the median" is within this many grey levels; a frame with at least FLAT_SHARE of
# its pixels there is uninformative (a title card's letters are a few % of its pixels).
FLAT_LEVELS = 12
FLAT_SHARE = 0.9
BAR_LEVEL = 24  # rows/columns darker than this on average are letterbox bars
MAX_BAR_SHARE = 0.3  # never cut more than this share of a side (a dark scene is not a bar)
# Per 32-bit half of a hash, this many bits nearest the median are its weak bits: the grouping
# probes every combination of them flipped (2**WEAK_PER_HALF keys per half), which finds pairs a few
# bits apart that share no exact 32-bit half (most pairs 3-8 bits apart do not).
WEAK_PER_HALF = 4
# A side of ONE frame (an image) has one hash to be found by, where a clip has several: its hash gets
# this many weak bits a half (2**7 probes a band, what a clip's 8 frames make with 4). On the bench's
# real stills a copy trimmed 5 % on every side lies 4-8 bits from a window of its still, bits that 4
# weak bits a half reach for 17 of 28 stills and 7 for 25 (the rest meet through the whole frame).
ONE_FRAME_WEAK_PER_HALF = 7
# Window edges, as a share of the side cut from (left, top, right, bottom): each edge 0 or 7 %
# (not all 0: that is the whole frame), so a crop of up to 10 % from any sides has a window
# whose every edge is within 3.5 % of it, within 3 % for the common crops of 0 or 4-10 % a side; a
# misplaced edge of 2.5 % costs ~4 bits. On the real clips this grid brings 99.7 % of cropped frames
# within match_bits of a window, against 98.7 % for edges of 2.5 / 7.5 % (one-side crops suffer).
WINDOW_EDGES = (0.0, 0.07)
WINDOWS = tuple((l, t, r, b) for l in WINDOW_EDGES for t in WINDOW_EDGES for r in WINDOW_EDGES for b in WINDOW_EDGES
                if (l, t, r, b) != (0.0, 0.0, 0.0, 0.0))


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * (2 * i + 1) * k / (2 * n))  # scipy's unnormalised DCT-II


_DCT = _dct_matrix(HASH_SIDE)


def dct2(image: np.ndarray) -> np.ndarray:
    """Unnormalised 2-D DCT-II of a square float image (scipy.fftpack.dct on both axes)."""
    m = _dct_matrix(image.shape[0]) if image.shape[0] != HASH_SIDE else _DCT
    return m @ image @ m.T


def resize_area(gray: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-average resize of a 2-D float image (exact block means when the sides divide)."""
    h, w = gray.shape
    rows = np.minimum((np.arange(h) * height) // h, height - 1)
    cols = np.minimum((np.arange(w) * width) // w, width - 1)
    sums = np.zeros((height, w), np.float64)
    np.add.at(sums, rows, gray)
    out = np.zeros((height, width), np.float64)
    np.add.at(out.T, cols, sums.T)
    counts = np.bincount(rows, minlength=height)[:, None] * np.bincount(cols, minlength=width)[None, :]
    return out / np.maximum(counts, 1)


def trim_bars(gray: np.ndarray) -> np.ndarray:
    """The frame without dark letterbox/pillarbox bars (at most MAX_BAR_SHARE of each side)."""
    h, w = gray.shape
    rows, cols = gray.mean(axis=1), gray.mean(axis=0)

    def cut(profile: np.ndarray, n: int) -> tuple[int, int]:
        limit = int(n * MAX_BAR_SHARE)
        lo = 0
        while lo < limit and profile[lo] < BAR_LEVEL:
            lo += 1
        hi = n
        while n - hi < limit and profile[hi - 1] < BAR_LEVEL:
            hi -= 1
        return (lo, hi) if hi - lo >= n // 2 else (0, n)

    top, bottom = cut(rows, h)
    left, right = cut(cols, w)
    return gray[top:bottom, left:right]


def informative(gray: np.ndarray) -> bool:
    """False for black, single-colour and flat title-card frames."""
    near = np.abs(gray - np.median(gray)) <= FLAT_LEVELS
    return bool(near.mean() < FLAT_SHARE)


def _int64(bits: np.ndarray) -> int:
    value = int(np.packbits(bits).view(">u8")[0])
    return value - (1 << 64) if value >= 1 << 63 else value


def _low(gray: np.ndarray) -> np.ndarray:
    small = resize_area(np.asarray(gray, np.float64), HASH_SIDE, HASH_SIDE)
    return dct2(small)[:LOW, :LOW].ravel()


def phash(gray: np.ndarray) -> int:
    """64-bit DCT perceptual hash (as a signed int64 value) of a 2-D grey frame (0..255)."""
    low = _low(gray)
    return _int64(low > np.median(low))


def phash_weak(gray: np.ndarray, per_half: int = WEAK_PER_HALF) -> tuple[int, int]:
    """(phash, weak): ``weak`` has the ``per_half`` bits of each 32-bit half set whose coefficient
    is nearest the median (same bit order as the hash)."""
    low = _low(gray)
    median = np.median(low)
    margin = np.abs(low - median).reshape(2, 32)
    weak = np.zeros((2, 32), bool)
    np.put_along_axis(weak, np.argsort(margin, axis=1, kind="stable")[:, :per_half], True, axis=1)
    return _int64(low > median), _int64(weak.ravel())


def frame_hash(gray: np.ndarray) -> tuple[int, bool]:
    """(hash, informative) of one grey frame, bars cut first."""
    core = trim_bars(np.asarray(gray, np.float64))
    return phash(core), informative(core)


def frame_fingerprint(gray: np.ndarray, per_half: int = WEAK_PER_HALF) -> tuple[int, int, bool]:
    """(hash, weak bits, informative) of one grey frame, bars cut first."""
    core = trim_bars(np.asarray(gray, np.float64))
    return (*phash_weak(core, per_half), informative(core))


def window_hashes(gray: np.ndarray) -> list[int | None]:
    """The hash of each of WINDOWS of a grey frame (bars cut first); None for a flat window."""
    core = trim_bars(np.asarray(gray, np.float64))
    h, w = core.shape
    out = []
    for left, top, right, bottom in WINDOWS:
        win = core[round(top * h):h - round(bottom * h), round(left * w):w - round(right * w)]
        out.append(phash(win) if informative(win) else None)
    return out


def hamming(a: int, b: int) -> int:
    return bin((a ^ b) & ((1 << 64) - 1)).count("1")
