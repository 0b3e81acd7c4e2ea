"""The screen stage's core without Ray: hashes, uninformative frames, motion, copy score, and the
DuckDB grouping over hash rows (duplicates, keepers, benchmark matches)."""
from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from stages.screen.config import ScreenConfig
from stages.screen.core import Settings, copy_score, screen_table
from stages.screen.frames import Frames, read_video
from stages.screen.groups import _probes_sql, build, window_bits
from stages.screen.motion import clip_motion
from stages.screen.phash import (WINDOWS, dct2, frame_fingerprint, frame_hash, hamming, informative, phash,
                                 resize_area, trim_bars, window_hashes)
from stages.screen.schema import SCREENS


def _fft_dct2(image: np.ndarray) -> np.ndarray:
    """Reference: unnormalised DCT-II per axis through the FFT of the even extension."""
    def dct1d(x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        ext = np.concatenate([x, x[::-1]], axis=0)
        spec = np.fft.fft(ext, axis=0)[:n]
        k = np.arange(n).reshape(-1, *([1] * (x.ndim - 1)))
        return np.real(spec * np.exp(-1j * np.pi * k / (2 * n)))
    return dct1d(dct1d(image).T).T


def _textured(seed: int, side: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (8, 8))
    return np.kron(small, np.ones((side // 8, side // 8)))


def test_dct_matches_the_fft_reference():
    image = np.random.default_rng(0).uniform(0, 255, (32, 32))
    np.testing.assert_allclose(dct2(image), _fft_dct2(image), rtol=1e-9, atol=1e-6)


def test_phash_survives_noise_and_letterbox_but_not_another_image():
    a = _textured(1)
    noisy = np.clip(a + np.random.default_rng(2).normal(0, 6, a.shape), 0, 255)
    boxed = np.zeros((96, 96))
    boxed[12:84] = np.kron(_textured(1, 96)[::4, ::4], np.ones((3, 4)))[:72, :96]  # squeezed, bars above/below
    assert hamming(phash(a), phash(noisy)) <= 4
    assert trim_bars(boxed).shape == (72, 96)
    assert hamming(frame_hash(a)[0], frame_hash(boxed)[0]) <= 10
    assert hamming(phash(a), phash(_textured(3))) > 16


def test_a_crop_hashes_close_to_one_of_the_windows_of_the_original(realclips):
    import decord

    limit, whole_misses = ScreenConfig().match_bits, []
    for clip in ("hl09", "zs01", "hl06"):
        reader = decord.VideoReader(str(realclips / "videos" / f"{clip}_source.mp4"))
        for rgb in reader.get_batch([5, 15, 25]).asnumpy().astype(np.float64):
            gray = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
            h, w = gray.shape
            original = resize_area(gray, 96, 96)  # what the screen decodes: the whole picture at 96x96
            windows = window_hashes(original)
            # (left, top, right, bottom): the bench's corner crop, one side, every side, two sides
            for left, top, right, bottom in [(0.08, 0.08, 0, 0), (0, 0, 0.1, 0), (0.05,) * 4, (0.1, 0, 0.1, 0)]:
                cropped = gray[round(top * h):h - round(bottom * h), round(left * w):w - round(right * w)]
                whole = frame_hash(resize_area(cropped, 96, 96))[0]
                whole_misses.append(hamming(whole, frame_hash(original)[0]) > limit)
                assert min(hamming(whole, x) for x in windows) <= limit, (clip, left, top, right, bottom)
    assert np.mean(whole_misses) > 0.5  # the whole-frame hash alone misses most of them


def test_weak_bits_are_the_coefficients_nearest_the_median_four_per_half():
    frame = _textured(5)
    h, weak, inf = frame_fingerprint(frame)
    assert h == frame_hash(frame)[0] and inf
    mask = weak & ((1 << 64) - 1)
    assert bin(mask >> 32).count("1") == 4 and bin(mask & 0xFFFFFFFF).count("1") == 4
    # a one-frame side's hash gets more: the 4 and the next 3 nearest the median
    wide = frame_fingerprint(frame, 7)[1] & ((1 << 64) - 1)
    assert bin(wide >> 32).count("1") == 7 and bin(wide & 0xFFFFFFFF).count("1") == 7 and wide & mask == mask
    # noise flips weak bits first: 8 of the 64 bits, most of the flips
    flips = weak_flips = 0
    for seed in range(20):
        noisy = np.clip(frame + np.random.default_rng(seed).normal(0, 24, frame.shape), 0, 255)
        flipped = (h ^ frame_hash(noisy)[0]) & ((1 << 64) - 1)
        flips, weak_flips = flips + bin(flipped).count("1"), weak_flips + bin(flipped & mask).count("1")
    assert flips >= 5 and weak_flips / flips >= 0.8, (flips, weak_flips)
    assert len(window_hashes(frame)) == len(WINDOWS) and window_hashes(np.zeros((96, 96))) == [None] * len(WINDOWS)


def test_flat_frames_are_uninformative():
    black, grey = np.zeros((96, 96)), np.full((96, 96), 128.0)
    card = np.zeros((96, 96))
    card[40:48, 10:86:4] = 255  # a line of "letters" on a black card
    assert not informative(black) and not informative(grey) and not informative(card)
    assert informative(_textured(4))


def _zoom(still: np.ndarray, n: int) -> np.ndarray:
    from PIL import Image

    im, out = Image.fromarray(still.astype(np.uint8)), []
    for k in range(n):
        w = 96 / (1 + 0.03 * k)
        o = (96 - w) / 2
        out.append(np.asarray(im.resize((96, 96), Image.BILINEAR, box=(o + 0.8 * k, o, o + w + 0.8 * k, o + w)), np.float32))
    return np.stack(out)


def test_motion_still_and_zoom_over_a_still_have_no_content_motion(realclips):
    frames = read_video(str(realclips / "videos" / "hl06_source.mp4"), None, 0.25, 16)
    real = clip_motion(frames.gray, frames.times)
    still = clip_motion(np.stack([frames.gray[0]] * 8), np.arange(8) * 0.25)
    zoom = clip_motion(_zoom(frames.gray[0], 8), np.arange(8) * 0.25)
    limit = ScreenConfig().min_content_motion
    assert real.content_motion > limit
    assert still.motion < 0.5 and still.content_motion < limit
    assert zoom.motion > limit and zoom.content_motion < limit and zoom.camera_share > 0.5


def test_copy_score_is_zero_for_a_copy_and_large_for_an_edit(realclips):
    src = read_video(str(realclips / "videos" / "hl10_source.mp4"), None, 0.25, 16)
    edit = read_video(str(realclips / "videos" / "hl10_edited.mp4"), None, 0.25, 16)
    assert copy_score(src, src) == 0.0
    assert copy_score(src, edit) > ScreenConfig().copy_max_diff


def test_screen_table_keeps_every_sample_as_a_row_or_an_error_row(realclips):
    clip = str(realclips / "videos" / "hl07_source.mp4")
    samples = pa.table({"sample_id": ["a", "b", "c"], "dataset": ["d"] * 3, "modality": ["video"] * 3,
                        "task": ["t2v"] * 3, "source_uri": [None] * 3,
                        "target_uri": [clip, "/nonexistent/x.mp4", clip]})
    out = screen_table(samples, {"c": "truncated: cut"}, Settings())
    assert out.schema == SCREENS and out["sample_id"].to_pylist() == ["a", "b", "c"]
    assert out["error_kind"].to_pylist() == [None, "missing", "probe"]
    assert len(out["target_hashes"][0].as_py()) >= 2 and out["motion_score"][0].as_py() > 0


# ------------------------------------------------------------------ grouping (hash rows only)
def _row(sid, kind, target, source=None, copy=None, content=None, informative_=None, weak=None,
         windows=None, window_frames=None):
    return {"sample_id": sid, "dataset": sid.split(":")[0], "kind": kind, "target_hashes": target,
            "target_weak": weak, "target_windows": windows, "target_window_frames": window_frames,
            "target_informative": informative_ or [True] * len(target),
            "target_times": [0.25 * i for i in range(len(target))], "source_hashes": source,
            "source_informative": None if source is None else [True] * len(source),
            "source_times": None if source is None else [0.25 * i for i in range(len(source))],
            "copy_score": copy, "content_motion": content, "schema_version": 1}


def _verdicts(rows, bench=None, **cfg):
    con = duckdb.connect()
    con.register("screens", pa.Table.from_pylist(rows, schema=SCREENS))
    if bench is not None:
        con.register("bench", pa.Table.from_pylist(bench))
    build(con, "screens", ScreenConfig(**cfg), "bench" if bench is not None else None)
    return {r[0]: r for r in con.execute(
        "SELECT sample_id, duplicate_of, group_size, benchmark, benchmark_clip, screen_drop FROM verdict").fetchall()}


def test_duplicates_group_with_one_keeper_and_edits_need_both_sides():
    rng = np.random.default_rng(0)
    h = [int(x) for x in rng.integers(-2**63, 2**63 - 1, 12, dtype=np.int64)]
    flip = [x ^ 0b101 for x in h]  # 2 bits apart: a re-encode
    other = [int(x) for x in rng.integers(-2**63, 2**63 - 1, 12, dtype=np.int64)]
    rows = [_row("koala:b", "clip", h, content=5.0), _row("motionbench:a", "clip", flip, content=5.0),
            _row("koala:c", "clip", other, content=5.0),
            _row("koala:d", "clip", h[3:9], content=5.0),  # a window of the same footage
            _row("ditto:x", "video_edit", other, source=h, copy=0.2),
            _row("openve:y", "video_edit", other, source=flip, copy=0.2),
            _row("reco:z", "video_edit", other, source=h[::-1][:1] + other[:11], copy=0.2)]  # same target, other source
    v = _verdicts(rows)
    # the keeper: the smallest sample_id (across datasets)
    assert v["motionbench:a"][1:3] == ("koala:b", 3) and v["koala:d"][1] == "koala:b"
    assert v["koala:b"][1] is None and v["koala:b"][5] is None
    assert v["koala:c"][1] is None and v["koala:c"][2] is None
    assert v["openve:y"][1] == "ditto:x" and v["openve:y"][5] == "screen.duplicate"
    assert v["reco:z"][1] is None
    assert _verdicts(rows, drop_duplicates=False)["openve:y"][5] is None


def test_keeper_is_a_sample_no_other_rule_drops_and_uninformative_frames_never_match():
    h = [(i * 0x9E3779B97F4A7C15) % 2**63 for i in range(1, 9)]
    rows = [_row("a:1", "clip", h, content=0.1), _row("a:2", "clip", h, content=5.0),
            _row("a:3", "clip", [0] * 8, content=5.0, informative_=[False] * 8),
            _row("a:4", "clip", [0] * 8, content=5.0, informative_=[False] * 8)]
    v = _verdicts(rows)
    # a:1 is static too, so the keeper is the moving a:2 (a drop names contamination, then duplication)
    assert v["a:1"][1] == "a:2" and v["a:1"][5] == "screen.duplicate"
    assert v["a:2"][1] is None and v["a:2"][5] is None
    assert v["a:3"][1] is None and v["a:4"][1] is None


def test_contamination_marks_a_temporal_overlap_with_a_benchmark_clip():
    h = [(i * 0x2545F4914F6CDD1D) % 2**63 for i in range(1, 17)]
    bench = [{"benchmark": "vie", "clip": "/b/c1.mp4", "k": k, "w": -1, "h": x ^ 1, "weak": 0, "t": 0.25 * k}
             for k, x in enumerate(h[4:10])]
    bench += [{"benchmark": "vie", "clip": "/b/black.mp4", "k": 0, "w": -1, "h": 0, "weak": 0, "t": 0.0}]
    rows = [_row("a:1", "clip", h, content=5.0), _row("a:2", "video_edit", [7, 9], source=h[5:8], copy=0.3),
            _row("a:3", "clip", [h[0] ^ -1, h[1] ^ -1], content=5.0)]
    v = _verdicts(rows, bench)
    assert v["a:1"][3:6] == ("vie", "/b/c1.mp4", "screen.contaminated")
    assert v["a:2"][3:5] == ("vie", "/b/c1.mp4")
    assert v["a:3"][3] is None
    assert _verdicts(rows, bench, drop_contaminated=False)["a:1"][5] is None


def _random_hashes(seed: int, n: int) -> list[int]:
    return [int(x) for x in np.random.default_rng(seed).integers(-2**63, 2**63 - 1, n, dtype=np.int64)]


def _signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


def test_probing_the_weak_bits_finds_a_pair_that_shares_no_exact_band():
    h = _random_hashes(10, 8)
    flip = (1 << 3) | (1 << 17) | (1 << 40) | (1 << 61)  # 4 bits, 2 in each 32-bit half
    near = [_signed((x ^ flip) & ((1 << 64) - 1)) for x in h]
    rows = [_row("a:1", "clip", h, content=5.0), _row("a:2", "clip", near, content=5.0)]
    assert _verdicts(rows)["a:2"][1] is None  # no weak bits: no band of a:2 equals one of a:1
    rows[1] = _row("a:2", "clip", near, content=5.0, weak=[_signed(flip)] * 8)
    assert _verdicts(rows)["a:2"][1] == "a:1"
    assert _verdicts(rows, band_bits=16)["a:2"][1] == "a:1"


def test_a_crop_matches_one_window_of_the_original_on_several_frames():
    nw = len(WINDOWS)
    h, wins = _random_hashes(11, 8), _random_hashes(12, 3 * nw)
    frames = [1, 4, 6]
    orig = _row("a:1", "clip", h, content=5.0, windows=wins, window_frames=frames)
    crop = list(_random_hashes(13, 8))
    for i, k in enumerate(frames):
        crop[k] = wins[i * nw + 5] ^ 0b11  # window 5 of frame k, 2 bits off
    mixed = list(_random_hashes(14, 8))
    mixed[1], mixed[4] = wins[5], wins[nw + 7]  # two frames, but two different windows: no crop
    wins_flat = list(wins)
    wins_flat[5:nw * 3:nw] = [None] * 3  # window 5 flat on every frame: nothing to match
    v = _verdicts([orig, _row("b:2", "clip", crop, content=5.0), _row("c:3", "clip", mixed, content=5.0)])
    assert v["b:2"][1] == "a:1" and v["c:3"][1] is None
    flat = _row("a:1", "clip", h, content=5.0, windows=wins_flat, window_frames=frames)
    assert _verdicts([flat, _row("b:2", "clip", crop, content=5.0)])["b:2"][1] is None
    # a benchmark clip's windows catch a training clip cropped from it
    bench = [{"benchmark": "vie", "clip": "/b/c.mp4", "k": k, "w": -1 if i == 0 else i - 1,
              "h": h[k] if i == 0 else wins[(frames.index(k)) * nw + i - 1], "weak": 0 if i == 0 else None, "t": 0.25 * k}
             for k in frames for i in range(nw + 1)]
    v = _verdicts([_row("b:2", "clip", crop, content=5.0)], bench)
    assert v["b:2"][3:6] == ("vie", "/b/c.mp4", "screen.contaminated")


def _flip(x: int, n: int) -> int:
    """x with its n lowest bits flipped (all in the low 32-bit half: the other band stays exact)."""
    return _signed((x ^ ((1 << n) - 1)) & ((1 << 64) - 1))


def test_a_one_frame_sample_needs_its_window_match_within_window_bits():
    nw, tight = len(WINDOWS), window_bits(ScreenConfig().match_bits)
    assert tight == 8  # 30 window comparisons at 8 bits pass unrelated hashes no likelier than one at 10
    h, wins = _random_hashes(21, 2), _random_hashes(22, 2 * nw)
    image = _row("a:1", "image_edit", h[:1], windows=wins[:nw], window_frames=[0])
    near = _row("b:1", "image_edit", [_flip(wins[5], tight)])  # a crop of it: window 5, 8 bits off
    far = _row("c:1", "image_edit", [_flip(wins[7], tight + 2)])  # 10 bits from window 7: a coincidence
    v = _verdicts([image, near, far])
    assert v["b:1"][1] == "a:1" and v["c:1"][1] is None
    # a clip showing the same window on two frames 10 bits off is a crop (two coincidences)
    clip = _row("a:2", "clip", h, content=5.0, windows=wins, window_frames=[0, 1])
    crop = _row("b:2", "clip", [_flip(wins[7], tight + 2), _flip(wins[nw + 7], tight + 2)], content=5.0)
    assert _verdicts([clip, crop])["b:2"][1] == "a:2"


def test_real_stills_group_with_their_copies_and_not_with_each_other(realclips, tmp_path):
    """JPEG stills of real frames as image samples: a smaller low-quality re-encode, an 8 % corner
    crop, a 5 % trim of every side and a letterboxed copy each join their still; stills of
    different clips never group."""
    import decord
    from PIL import Image

    rows, origin = [], {}
    for clip in ("hl09", "zs01", "hl06", "st02", "hl10"):
        rgb = decord.VideoReader(str(realclips / "videos" / f"{clip}_source.mp4")).get_batch([12]).asnumpy()[0]
        h, w = rgb.shape[:2]
        boxed = np.zeros_like(rgb)
        boxed[h // 8:h // 8 + h * 3 // 4] = np.asarray(Image.fromarray(rgb).resize((w, h * 3 // 4)))
        copies = {"still": (rgb, 90), "small": (np.asarray(Image.fromarray(rgb).resize((w * 2 // 3, h * 2 // 3))), 35),
                  "crop": (rgb[int(h * 0.08):, int(w * 0.08):], 90), "boxed": (boxed, 90),
                  "trim": (rgb[int(h * 0.05):h - int(h * 0.05), int(w * 0.05):w - int(w * 0.05)], 90)}
        for name, (img, quality) in copies.items():
            path = tmp_path / f"{clip}_{name}.jpg"
            Image.fromarray(np.ascontiguousarray(img)).save(path, quality=quality)
            rows.append({"sample_id": f"{clip}:{name}", "dataset": clip, "modality": "image", "task": "edit",
                         "source_uri": None, "target_uri": str(path)})
            origin[f"{clip}:{name}"] = clip
    screens = screen_table(pa.Table.from_pylist(rows), {}, Settings())
    assert screens["error_kind"].null_count == len(rows)
    weak = screens["target_weak"][0].as_py()[0] & ((1 << 64) - 1)
    assert bin(weak).count("1") == 14  # one frame: 7 weak bits a half
    v = _verdicts(screens.to_pylist())
    for sid, clip in origin.items():
        assert v[sid][1] in (None, f"{clip}:boxed", f"{clip}:crop", f"{clip}:small", f"{clip}:still", f"{clip}:trim"), sid
        assert v[sid][1] is not None or v[sid][2] == 5, (sid, v[sid])  # the keeper heads its group of 5


def _synthetic_rows(n: int, seed: int) -> list[dict]:
    """n clips of 8 random frames (windows on 4): every 10th a re-encode of another (2 bits off in
    each half, its weak bits marked), every 15th a crop (its 4 window frames one window of another)."""
    rng = np.random.default_rng(seed)
    nw, wf = len(WINDOWS), [0, 2, 4, 6]
    h = rng.integers(-2**63, 2**63 - 1, (n, 8), dtype=np.int64)
    wins = rng.integers(-2**63, 2**63 - 1, (n, 4 * nw), dtype=np.int64)
    weak = np.zeros((n, 8), np.int64)
    flip = np.int64((1 << 3) | (1 << 9) | (1 << 37) | (1 << 50))
    for i in range(10, n, 10):
        h[i], weak[i] = h[i - 7] ^ flip, flip
    for i in range(15, n, 30):
        h[i, wf] = wins[i - 11, [5 + nw * j for j in range(4)]]
    return [_row(f"s:{i:05d}", "clip", h[i].tolist(), content=5.0, weak=weak[i].tolist(),
                 windows=wins[i].tolist(), window_frames=wf) for i in range(n)]


def test_the_partitioned_candidate_join_finds_what_one_join_finds(tmp_path):
    """Past PART_SAMPLES the exact side is joined partition by partition: same verdicts."""
    rows = _synthetic_rows(600, 3)
    con = duckdb.connect()
    con.execute(f"SET temp_directory = '{tmp_path}'")
    con.register("screens", pa.Table.from_pylist(rows, schema=SCREENS))
    query = "SELECT sample_id, duplicate_of FROM verdict ORDER BY sample_id"
    found = {}
    for part_samples in (10_000, 64):  # one join; 16 partitions
        build(con, "screens", ScreenConfig(), part_samples=part_samples)
        found[part_samples] = (con.execute(query).fetchall(), con.execute("SELECT * FROM cand ORDER BY ALL").fetchall())
    assert found[64] == found[10_000]
    dups = {sid for sid, of in found[64][0] if of is not None}
    assert len(dups) == len(range(10, 600, 10)) + len(range(15, 600, 30))
    assert list(tmp_path.iterdir()) == []  # the partitions are removed


def test_a_partitions_probes_are_the_probes_with_its_low_bits():
    """Probes made for one partition of the join (its low bits set, not enumerated) are exactly the
    probes of every frame whose band value falls in it: 4, 7 and 9 weak bits a band (9: only the
    lowest 7 are flipped), weak bits in and out of the partition bits, no weak bits at all."""
    rng = np.random.default_rng(5)
    h = rng.integers(-2**63, 2**63 - 1, 40, dtype=np.int64)
    weak = []
    for i in range(40):
        n = (4, 7, 9, 0)[i % 4]
        bits = [int(b) for b in rng.choice(np.arange(16), 3, replace=False)] if i % 5 == 0 else []
        bits += [int(b) for b in rng.choice(np.arange(64), 2 * n, replace=False)]
        weak.append(int(np.bitwise_or.reduce(np.left_shift(np.uint64(1), np.array(bits, np.uint64)))
                        .astype(np.uint64).view(np.int64)) if bits else None)
    con = duckdb.connect()
    con.register("f", pa.table({"i": np.arange(40), "h": h, "weak": pa.array(weak, pa.int64())}))
    low = 15
    for band_bits in (16, 32):
        whole = con.execute(f"SELECT band, i, v FROM ({_probes_sql('f', 'i', band_bits)}) ORDER BY ALL").fetchall()
        assert len(whole) > 40 * 64 // band_bits
        for p in (0, 5, 15):
            part = con.execute(f"SELECT band, i, v FROM ({_probes_sql('f', 'i', band_bits, part=(low, p))}) "
                               "ORDER BY ALL").fetchall()
            assert part == [r for r in whole if r[2] & low == p]


def test_multi_frame_samples_need_band_hits_on_two_frames_to_be_a_candidate():
    h, other = _random_hashes(31, 8), _random_hashes(32, 8)
    one = list(other)
    one[3] = h[3]  # one frame in common: a coincidence at corpus scale, never a duplicate
    two = list(other)
    two[3], two[6] = h[3], h[6]

    def candidates(rows) -> int:
        con = duckdb.connect()
        con.register("screens", pa.Table.from_pylist(rows, schema=SCREENS))
        build(con, "screens", ScreenConfig())
        return con.execute("SELECT count(*) FROM cand").fetchone()[0]

    assert candidates([_row("a:1", "clip", h, content=5.0), _row("b:1", "clip", one, content=5.0)]) == 0
    assert candidates([_row("a:1", "clip", h, content=5.0), _row("b:1", "clip", two, content=5.0)]) == 1
    # a one-frame sample has one frame to meet with
    assert candidates([_row("a:1", "image_edit", h[3:4]), _row("b:1", "image_edit", h[3:4])]) == 1
