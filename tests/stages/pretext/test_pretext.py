"""Pretext operators: the variant mix, cube masking ratio, tube permutation, speed frames, seeding."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config_base import ConfigError
from pipeline.curate.config import PretextConfig, load_config
from stages.media.frames import plan_indices
from stages.pretext import (VARIANTS, PretextError, apply_record, draw_variants, mask_from_boxes,
                            perturb_source, pretext_rng, speed_plan, task_text)
from stages.pretext.cube import cube_extent, place_boxes
from stages.pretext.tube import apply_tube

CFG = PretextConfig()
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _clip(seed: int, shape=(9, 32, 48), low: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, 256, (*shape, 3), dtype=np.uint8)


def _ids(n: int) -> list[str]:
    return [f"koala:{i:016x}" for i in range(n)]


# ---------------------------------------------------------------- the variant mix
def test_variant_mix_matches_weights_chi_square():
    n = 4000
    counts = {v: 0 for v in VARIANTS}
    for sid in _ids(n):
        (v,) = draw_variants(sid, 7, CFG)
        counts[v] += 1
    total = sum(CFG.weights.values())
    expected = {v: n * CFG.weights[v] / total for v in VARIANTS}
    chi2 = sum((counts[v] - expected[v]) ** 2 / expected[v] for v in VARIANTS)
    assert chi2 < 16.27, (counts, chi2)  # chi-square, 3 degrees of freedom, p = 0.001


def test_variant_mix_respects_zero_weight_per_clip_and_all_mode():
    cfg = PretextConfig(weights={"none": 0, "cube": 1, "speed": 1, "tube": 2}, per_clip=2)
    for sid in _ids(300):
        got = draw_variants(sid, 0, cfg)
        assert len(got) == 2 and len(set(got)) == 2 and "none" not in got
        assert got == sorted(got, key=VARIANTS.index)
    assert draw_variants("koala:0", 0, PretextConfig(mode="all")) == list(VARIANTS)
    assert draw_variants("koala:0", 0, cfg.model_copy(update={"mode": "all"})) == ["cube", "speed", "tube"]


def test_variant_draw_is_seeded_by_run_seed_and_sample():
    ids = _ids(200)
    a = [draw_variants(s, 3, CFG) for s in ids]
    assert a == [draw_variants(s, 3, CFG) for s in ids]
    assert a != [draw_variants(s, 4, CFG) for s in ids]


# ---------------------------------------------------------------- cube inpainting
@FAST
@given(seed=st.integers(0, 2**32), t=st.integers(1, 13), h=st.integers(4, 40), w=st.integers(4, 40),
       ratio=st.floats(0.05, 0.9), size=st.floats(0.1, 0.6))
def test_cube_masked_fraction_matches_ratio(seed, t, h, w, ratio, size):
    cfg = PretextConfig(cube_mask_ratio=ratio, cube_size=(size, size, size))
    frames = _clip(seed, (t, h, w), low=1)  # no zero pixels: masked == zero after a zero fill
    out, rec = perturb_source("cube", frames, cfg, pretext_rng(seed, "koala:x", "cube"))
    zero = np.all(out == 0, axis=-1)
    achieved = zero.mean()
    ct, ch, cw = cube_extent(cfg, (t, h, w))
    assert ratio <= achieved < ratio + ct * ch / (t * h * w) + 1e-9  # overshoot < one column of a cube
    assert rec["mask_ratio"] == pytest.approx(achieved, abs=1e-6)
    assert np.array_equal(zero, mask_from_boxes(rec["boxes"], (t, h, w)))
    assert np.array_equal(out[~zero], frames[~zero])  # the rest is untouched


def test_cube_ratio_over_many_seeded_samples_and_fills():
    frames = _clip(0, (17, 64, 96))
    for fill, value in (("zero", [0, 0, 0]), ("grey", [128, 128, 128])):
        cfg = PretextConfig(cube_fill=fill)
        ratios = []
        for sid in _ids(50):
            out, rec = perturb_source("cube", frames, cfg, pretext_rng(0, sid, "cube"))
            assert rec["fill_value"] == value
            mask = mask_from_boxes(rec["boxes"], frames.shape[:3])
            assert np.all(out[mask] == value)
            ratios.append(rec["mask_ratio"])
        assert 0.3 <= min(ratios) and max(ratios) < 0.3 + 1 / 64 + 1e-9
    out, rec = perturb_source("cube", frames, PretextConfig(cube_fill="mean"), pretext_rng(0, "a", "cube"))
    assert rec["fill_value"] == [int(v) for v in np.rint(frames.reshape(-1, 3).mean(0))]


def test_cube_coverage_is_flat_over_frames_rows_and_columns():
    """Every frame, row and column is masked equally often (origins over [-(c-1), D-1], clipped).

    Bound: each draw's masked fraction of one frame/row/column lies in [0, 1], so by Hoeffding the
    mean of N = 3000 independent draws strays from its expectation by more than eps = 0.045 with
    probability <= 2 exp(-2 N eps^2) = 1.1e-5 per position, ~1e-3 over all 13 + 32 + 48 positions.
    Origins over [0, D-c] (the old placement) cover the first/last frame ~11% and the first/last
    row ~3% against ~37% in the middle: far outside the bound.
    """
    shape, n = (13, 32, 48), 3000
    per_axis = [np.zeros(d) for d in shape]
    ratios = []
    for sid in _ids(n):
        boxes, masked = place_boxes(CFG, shape, pretext_rng(0, sid, "cube"))
        mask = mask_from_boxes(boxes, shape)
        ratios.append(masked / mask.size)
        for axis, acc in enumerate(per_axis):
            acc += mask.mean(axis=tuple(a for a in range(3) if a != axis))
    mean_ratio = float(np.mean(ratios))
    assert 0.30 <= min(ratios) and max(ratios) < 0.31  # every clip is 30% (+ < 1%)
    for acc in per_axis:
        coverage = acc / n
        assert np.abs(coverage - mean_ratio).max() < 0.045, coverage.round(3)


def test_cube_sizes_in_pixels_and_temporal_block_never_touches_frame0():
    frames = _clip(1, (13, 32, 32))
    cfg = PretextConfig(cube_size=(3, 8, 100), cube_size_unit="pixels")
    _, rec = perturb_source("cube", frames, cfg, pretext_rng(0, "a", "cube"))
    assert rec["cube_size"] == [3, 8, 32]  # clipped to the clip
    for i, (t0, t1, h0, h1, w0, w1) in enumerate(rec["boxes"]):
        for lo, hi, size, dim in ((t0, t1, 3, 13), (h0, h1, 8, 32), (w0, w1, 32, 32)):
            assert 0 <= lo < hi <= dim and hi - lo <= size
            last_width = i == len(rec["boxes"]) - 1 and size == 32  # the last box is narrowed
            assert hi - lo == size or lo == 0 or hi == dim or last_width  # else only an edge cuts
    block = PretextConfig(cube_layout="temporal_block")
    for sid in _ids(100):
        out, rec = perturb_source("cube", frames, block, pretext_rng(0, sid, "cube"))
        ((t0, t1, h0, h1, w0, w1),) = rec["boxes"]
        assert t0 >= 1 and t1 - t0 == 4 and (h0, h1, w0, w1) == (0, 32, 0, 32)  # round(0.3 * 13)
        assert np.array_equal(out[0], frames[0]) and not out[t0:t1].any()
    with pytest.raises(PretextError):
        perturb_source("cube", frames[:1], block, pretext_rng(0, "a", "cube"))


# ---------------------------------------------------------------- tube shuffle
@FAST
@given(seed=st.integers(0, 2**32), t=st.integers(2, 11), h=st.integers(2, 30), w=st.integers(2, 30),
       grid=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)).filter(lambda g: g[0] * g[1] * g[2] >= 2))
def test_tube_shuffle_is_a_non_identity_permutation(seed, t, h, w, grid):
    if t < grid[0] or h < grid[1] or w < grid[2]:
        with pytest.raises(PretextError):
            perturb_source("tube", _clip(seed, (t, h, w)), PretextConfig(tube_grid=grid), pretext_rng(seed, "a", "tube"))
        return
    frames = _clip(seed, (t, h, w))
    out, rec = perturb_source("tube", frames, PretextConfig(tube_grid=grid), pretext_rng(seed, "a", "tube"))
    perm = rec["permutation"]
    assert sorted(perm) == list(range(grid[0] * grid[1] * grid[2])) and perm != sorted(perm)
    # same pixel multiset; the inverse restores the clip; the undivided remainder is untouched
    assert np.array_equal(np.sort(out.reshape(-1, 3), axis=0), np.sort(frames.reshape(-1, 3), axis=0))
    assert np.array_equal(apply_tube(out, rec, inverse=True), frames)
    rt, rh, rw = rec["region"]
    assert [rt, rh, rw] == [d - d % g for d, g in zip((t, h, w), grid)]
    keep = np.ones((t, h, w), bool)
    keep[:rt, :rh, :rw] = False
    assert np.array_equal(out[keep], frames[keep])


def test_tube_moves_whole_tubes_to_their_recorded_place():
    frames = _clip(3, (9, 32, 48))
    out, rec = perturb_source("tube", frames, CFG, pretext_rng(0, "koala:a", "tube"))
    assert rec["tube_size"] == [4, 16, 24] and rec["region"] == [8, 32, 48]
    assert np.array_equal(out[8], frames[8])  # frame 8 of 4n+1 = 9 stays
    tt, th, tw = rec["tube_size"]
    for i, src in enumerate(rec["permutation"]):
        ti, hi, wi = np.unravel_index(i, (2, 2, 2))
        ts, hs, ws = np.unravel_index(src, (2, 2, 2))
        assert np.array_equal(out[ti * tt:(ti + 1) * tt, hi * th:(hi + 1) * th, wi * tw:(wi + 1) * tw],
                              frames[ts * tt:(ts + 1) * tt, hs * th:(hs + 1) * th, ws * tw:(ws + 1) * tw])


# ---------------------------------------------------------------- speed perturbation
@FAST
@given(n_native=st.integers(1, 400), native_fps=st.sampled_from([12.0, 23.976, 24.0, 25.0, 30.0, 60.0]),
       fps=st.sampled_from([8.0, 16.0]), max_frames=st.sampled_from([1, 5, 9, 17, 81]),
       factor=st.sampled_from([1.5, 2.0, 3.0]), start=st.one_of(st.none(), st.floats(0, 5)),
       length=st.one_of(st.none(), st.floats(0, 10)), policy=st.sampled_from(["longest", "exact"]))
def test_speed_takes_exactly_the_documented_frames(n_native, native_fps, fps, max_frames, factor, start, length,
                                                    policy):
    end = None if length is None or start is None else start + length
    target, source = speed_plan(n_native, native_fps, fps, max_frames, factor, start_s=start, end_s=end, policy=policy)
    assert len(target) == len(source)
    if not target:
        return
    n = len(target)
    assert (n - 1) % 4 == 0 and n <= max_frames and (policy == "longest" or n == max_frames)
    first = start or 0.0
    last = min((n_native - 1) / native_fps, end if end is not None else float("inf"))
    for i in range(n):  # the documented formula
        assert target[i] == min(n_native - 1, int(np.floor((first + i / fps) * native_fps + 1e-6)))
        assert source[i] == min(n_native - 1, int(np.floor((first + i * factor / fps) * native_fps + 1e-6)))
    assert first + (n - 1) * factor / fps <= last + 1e-6  # the fast source stays inside the window
    if factor == int(factor):  # same time grid: source frame i is target frame factor * i
        for i in range(n):
            if int(factor) * i < n:
                assert source[i] == target[int(factor) * i]
    # the same indices the encode stage's planner gives
    assert target == plan_indices(n_native, native_fps, fps, max_frames, start_s=start, end_s=end, count=n)


def test_speed_short_clip_gets_shorter_target_or_nothing():
    # 3 s at 30 fps, fps 8: 2x covers 0.25 s per frame, so 12 source frames fit -> 9 (4n+1)
    target, source = speed_plan(90, 30.0, 8.0, 81, 2.0)
    assert len(target) == len(source) == 9 and source[-1] == 60 and target[-1] == 30
    assert speed_plan(90, 30.0, 8.0, 81, 2.0, policy="exact") == ([], [])
    assert speed_plan(0, 30.0, 8.0, 81, 2.0) == ([], [])
    frames = _clip(0, (9, 8, 8))
    out, rec = perturb_source("speed", frames, CFG, pretext_rng(0, "a", "speed"))
    assert out is frames and rec == {"op": "speed", "factor": 2.0}


# ---------------------------------------------------------------- determinism, text, records
def test_same_seed_same_bytes_and_records_reapply():
    frames = _clip(5, (9, 32, 32))
    for variant in ("cube", "tube"):
        a, ra = perturb_source(variant, frames, CFG, pretext_rng(11, "koala:abc", variant))
        b, rb = perturb_source(variant, frames, CFG, pretext_rng(11, "koala:abc", variant))
        c, _ = perturb_source(variant, frames, CFG, pretext_rng(11, "koala:abd", variant))
        assert a.tobytes() == b.tobytes() and ra == rb and a.tobytes() != c.tobytes()
        assert np.array_equal(apply_record(frames, ra), a)
    with pytest.raises(ValueError, match="no source"):
        perturb_source("none", frames, CFG, pretext_rng(0, "a", "none"))


def test_task_text_prepends_the_token():
    assert task_text("none", " a dog runs ", CFG) == ("a dog runs", None)
    inst, token = task_text("tube", "a dog runs", CFG)
    assert token == CFG.task_tokens["tube"] and inst == f"{token} a dog runs"
    assert task_text("cube", None, CFG) == (CFG.task_tokens["cube"], CFG.task_tokens["cube"])


@pytest.mark.parametrize("override, field", [
    ("pretext.tube_grid=[1, 1, 1]", "pretext.tube_grid"),
    ("pretext.cube_size=[0.5, 2, 0.5]", "pretext.cube_size"),
    ("pretext.per_clip=4", "pretext.per_clip"),  # with none's weight 0 only three remain
    ("pretext.mode=some", "pretext.mode"),
])
def test_bad_pretext_config_names_the_field(override, field):
    extra = ["pretext.weights={none: 0, cube: 2, speed: 3, tube: 4}"] if "per_clip" in override else []
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(None, [override, *extra])
