"""The encode stage without Ray: buckets, frame plans on real clips, decode errors, and the tiny
real-architecture encoders (Wan VAE, SigLIP, umT5) loaded from save_pretrained directories."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline.curate.config import Config, EncodeConfig, PretextConfig, load_config
from pipeline.config_base import ConfigError
from pipeline.curate.demo.media import CLIPS_DIR, write_image
from stages.media.buckets import fit_to_bucket, generate_buckets, nearest_bucket
from stages.encode.core import encode_samples, encode_table
from stages.encode.decode import DecodedSample, KeySpec, anchor_indices, decode_sample
from stages.encode.encoders import Encoders, model_dirs
from stages.encode.schema import ENCODED, unpack_tensors

from _encode_fixtures import encode_config, tiny_models  # noqa: F401 (fixture)

SEED = 0


def _row(sid: str, target: Path | str, source: Path | str | None = None, *, modality="video", task="edit",
         **extra) -> dict:
    dataset = sid.split(":")[0]
    return {"sample_id": sid, "dataset": dataset, "modality": modality, "task": task,
            "target_uri": str(target), "source_uri": None if source is None else str(source),
            "instruction": "Make it snow." if task == "edit" else None,
            "caption": "A clip." if task == "t2v" else None, **extra}


# ---------------------------------------------------------------- buckets
def test_default_buckets_are_480p_class_and_symmetric():
    cfg = EncodeConfig()
    buckets = cfg.bucket_list()
    for needed in [(832, 480), (480, 832), (640, 640), (896, 448), (448, 896)]:
        assert needed in buckets
    for w, h in buckets:
        assert w % 32 == 0 and h % 32 == 0 and 0.5 <= w / h <= 2.0
        assert abs(w * h / 399_360 - 1) < 0.06, (w, h)
        assert (h, w) in buckets  # portrait and landscape alike
    assert len({round(w / h, 6) for w, h in buckets}) == len(buckets)  # one bucket per aspect ratio


def test_nearest_bucket_in_log_aspect():
    b = EncodeConfig().bucket_list()
    assert nearest_bucket(1280, 720, b) == (832, 480)
    assert nearest_bucket(832, 464, b) == (832, 480)
    assert nearest_bucket(720, 1280, b) == (480, 832)
    assert nearest_bucket(1000, 1000, b) == (640, 640)
    assert nearest_bucket(4000, 1000, b) == (896, 448)  # beyond the range: the widest bucket
    assert generate_buckets(128 * 128, 32, 0.5, 2.0) == [(96, 160), (128, 128), (160, 96)]


def test_fit_to_bucket_covers_then_centre_crops():
    frames = np.zeros((2, 720, 1280, 3), np.uint8)
    frames[:, :, :160] = 255  # a white band on the left, wider than the crop's overhang
    out = fit_to_bucket(frames, (832, 480))
    assert out.shape == (2, 480, 832, 3) and out.dtype == np.uint8
    # 1280x720 scales to 854x480 (cover); 11 px are cut on the left, 11 on the right
    assert out[0, :, :90].min() == 255 and out[0, :, 100:].max() == 0


def test_bucket_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"encode\.buckets: 100x64: sides must be positive multiples"):
        load_config(None, ["encode.buckets=[[100, 64]]"])
    with pytest.raises(ConfigError, match=r"encode\.buckets: 96x32 has aspect 3\.000"):
        load_config(None, ["encode.buckets=[[96, 32]]"])
    with pytest.raises(ConfigError, match=r"encode\.min_frames: must be of the form 4n\+1"):
        load_config(None, ["encode.min_frames=16"])
    with pytest.raises(ConfigError, match=r"encode\.side_multiple: 8 must be a multiple of 16"):
        load_config(None, ["encode.side_multiple=8", "encode.buckets=[[64, 64]]"])


# ---------------------------------------------------------------- decoding real clips
@pytest.mark.parametrize("clip,bucket", [
    ("hl02_source.mp4", (480, 832)),  # portrait 480x832
    ("zs02_source.mp4", (896, 448)),  # 896x448, aspect 2
    ("hl01_source.mp4", (832, 480)),  # 1280x720
])
def test_bucket_choice_and_frames_of_bundled_clips(clip, bucket):
    cfg = EncodeConfig(num_frames=17, min_frames=5)
    d = decode_sample(_row("koala:" + "0" * 16, CLIPS_DIR / clip, task="t2v"), cfg, PretextConfig(mode="all"),
                      SEED)
    assert d.bucket == bucket and all(k.error is None for k in d.keys), d.keys
    w, h = bucket
    target = d.clips["target"]
    assert target.shape == (17, h, w, 3) and target.dtype == np.uint8
    plain = next(k for k in d.keys if k.variant == "none")
    assert len(plain.target_indices) == 17 and plain.source is None
    assert sorted(plain.target_indices) == plain.target_indices  # forward in time


def test_realclips_buckets_and_16fps_plans(realclips):
    """Every shared real clip: the bucket its shape asks for, and frames on the 16 fps grid."""
    import av

    cfg = EncodeConfig()  # paper defaults: 81 frames, 16 fps, policy longest, min 17
    buckets = cfg.bucket_list()
    for path in sorted((realclips / "videos").glob("*.mp4")):
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            w, h, fps, n = s.codec_context.width, s.codec_context.height, float(s.average_rate), s.frames
        d = decode_sample(_row("ditto:" + "1" * 16, path), cfg, PretextConfig(), SEED)
        (spec,) = d.keys
        assert spec.error is None, (path.name, spec.error)
        assert d.bucket == nearest_bucket(w, h, buckets)
        fit = math.floor((n - 1) / fps * 16 + 1e-9) + 1
        expect = min(81, 4 * ((fit - 1) // 4) + 1)
        assert len(spec.target_indices) == expect, path.name
        assert spec.target_indices == [math.floor(i / 16 * fps + 1e-6) for i in range(expect)]
        assert d.clips["target"].shape == (expect, d.bucket[1], d.bucket[0], 3)
    assert nearest_bucket(480, 832, buckets) == (480, 832) and nearest_bucket(896, 448, buckets) == (896, 448)


def test_edit_pair_of_different_sizes_shares_bucket_and_indices():
    cfg = EncodeConfig(num_frames=17, min_frames=5)
    d = decode_sample(_row("ditto:" + "2" * 16, CLIPS_DIR / "hl01_edited.mp4", CLIPS_DIR / "hl01_source.mp4"),
                      cfg, PretextConfig(), SEED)
    (spec,) = d.keys
    assert d.bucket == (832, 480)  # target 832x464; source 1280x720 is cropped to the same bucket
    assert d.clips["source"].shape == d.clips["target"].shape == (17, 480, 832, 3)
    assert spec.source_indices == spec.target_indices


def test_koala_window_and_speed_source():
    # hl07_source: 37 frames at 20 fps (1.85 s); window [0.6, 1.8) s at 8 fps -> 9 frames
    cfg = EncodeConfig(num_frames=9, fps=8, min_frames=5, buckets=[(64, 32), (32, 64), (64, 64)])
    row = _row("koala:" + "3" * 16, CLIPS_DIR / "hl07_source.mp4", task="t2v", clip_start_s=0.6, clip_end_s=1.8)
    d = decode_sample(row, cfg, PretextConfig(mode="all"), SEED)
    specs = {k.variant: k for k in d.keys}
    assert list(specs) == ["none", "cube", "speed", "tube"]
    assert specs["none"].target_indices == [math.floor((0.6 + i / 8) * 20 + 1e-6) for i in range(9)]
    speed = specs["speed"]  # 2x: 1.2 s hold 5 frames at 4 per second
    assert speed.error is None and len(speed.target_indices) == len(speed.source_indices) == 5
    assert speed.source_indices == [math.floor((0.6 + i * 2 / 8) * 20 + 1e-6) for i in range(5)]
    assert speed.target_indices == specs["none"].target_indices[:5] and speed.target == "speed_target"
    assert d.clips["speed_target"].shape[0] == d.clips["speed_source"].shape[0] == 5
    assert speed.pretext["op"] == "speed" and speed.pretext["source_indices"] == speed.source_indices
    # too short for the speed source at num_frames with policy exact: only that key fails
    d = decode_sample(row, cfg.model_copy(update={"frame_policy": "exact"}), PretextConfig(mode="all"), SEED)
    errors = {k.variant: k.error for k in d.keys}
    assert errors["speed"].startswith("too_short:") and errors["none"] is None


def test_bad_media_become_error_keys(tmp_path):
    cfg = EncodeConfig(num_frames=9, fps=8, min_frames=5, buckets=[(64, 32), (32, 64), (64, 64)])
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    d = decode_sample(_row("ditto:" + "4" * 16, junk, junk), cfg, PretextConfig(), SEED)
    assert d.keys[0].error.startswith("undecodable:") and not d.clips
    d = decode_sample(_row("ditto:" + "5" * 16, tmp_path / "gone.mp4"), cfg, PretextConfig(), SEED)
    assert d.keys[0].error.startswith("missing:")
    # hl10: 21 frames at 20 fps = 1.0 s; at 8 fps 9 frames fit, but min_frames 13 asks for more
    short = cfg.model_copy(update={"num_frames": 17, "min_frames": 13})
    d = decode_sample(_row("koala:" + "6" * 16, CLIPS_DIR / "hl10_source.mp4", task="t2v"), short,
                      PretextConfig(mode="all"), SEED)
    assert {k.variant for k in d.keys} == {"none", "cube", "speed", "tube"}
    assert all(k.error.startswith("too_short: the clip holds 9 frames at 8 fps") for k in d.keys)


def test_anchor_indices_are_uniform():
    assert anchor_indices(81, 1) == [40] and anchor_indices(1, 1) == [0] and anchor_indices(9, 3) == [1, 4, 7]
    assert anchor_indices(9, 2) == [2, 6]


# ---------------------------------------------------------------- the tiny encoders
@pytest.fixture(scope="module")
def encoders(tiny_models):
    return Encoders(encode_config(tiny_models).encode)


def _decoded(tmp_path: Path, cfg: Config) -> list[DecodedSample]:
    """A raw Koala-like clip (all four variants), a video pair and an image pair."""
    img_t = write_image(tmp_path / "t.jpg", 96, 64, seed=1)
    img_s = write_image(tmp_path / "s.jpg", 96, 64, seed=2)
    rows = [
        _row("koala:" + "a" * 16, CLIPS_DIR / "zs02_source.mp4", task="t2v", clip_start_s=0.1, clip_end_s=1.9),
        _row("reco:" + "b" * 16, CLIPS_DIR / "hl07_edited.mp4", CLIPS_DIR / "hl07_source.mp4"),
        _row("nhr_edit:" + "c" * 16, img_t, img_s, modality="image"),
    ]
    return [decode_sample(r, cfg.encode, cfg.pretext, SEED) for r in rows]


def test_encoded_rows_shapes_dtypes_and_records(tmp_path, tiny_models, encoders):
    cfg = encode_config(tiny_models, ["pretext.mode=all"])
    decoded = _decoded(tmp_path, cfg)
    table = encode_table(decoded, encoders, cfg.encode, cfg.pretext, SEED)
    assert table.schema.equals(ENCODED)
    rows = {r["key"]: r for r in table.to_pylist()}
    assert sorted(rows) == sorted(["koala-" + "a" * 16 + f"-{v}" for v in ("none", "cube", "speed", "tube")]
                                  + ["reco-" + "b" * 16 + "-edit", "nhr_edit-" + "c" * 16 + "-edit"])
    tokenizer_lens = {}
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["tokenizer_path"])
    for key, r in rows.items():
        assert r["error"] is None, (key, r["error"])
        tensors = unpack_tensors(r["tensors"])
        meta = json.loads(r["tensor_meta"])
        assert {k: (str(v.dtype).removeprefix("torch."), list(v.shape)) for k, v in tensors.items()} == \
            {k: (m["dtype"], m["shape"]) for k, m in meta.items()}
        assert all(v.dtype == torch.bfloat16 for v in tensors.values())
        w, h = map(int, r["bucket"].split("x"))
        t = r["num_frames"]
        assert (t - 1) % 4 == 0 and len(r["target_indices"]) == t
        assert r["latent_shape"] == [16, (t - 1) // 4 + 1, h // 8, w // 8] == list(tensors["target_latents"].shape)
        assert ("source_latents" in tensors) == (r["variant"] != "none")
        if "source_latents" in tensors:
            assert tensors["source_latents"].shape == tensors["target_latents"].shape
        assert list(tensors["semantic_tokens"].shape) == [1, 64 + 1, 32]
        assert r["anchor_indices"] == [t // 2]
        ids = tok(r["instruction"])["input_ids"]
        assert list(tensors["text_embedding"].shape) == [len(ids), 32]  # unpadded, eos included
        tokenizer_lens[key] = len(ids)
        models = json.loads(r["models"])
        assert models["vae"]["random_init"] and models["siglip"]["random_init"] and models["text"]["random_init"]
        assert models["vae"]["path"] == str(tiny_models["vae_path"])
    koala = {v: rows["koala-" + "a" * 16 + f"-{v}"] for v in ("none", "cube", "speed", "tube")}
    assert koala["none"]["instruction"] == "A clip." and koala["none"]["task_token"] is None
    assert koala["cube"]["instruction"] == cfg.pretext.task_tokens["cube"] + " A clip."
    assert json.loads(koala["cube"]["pretext"])["op"] == "cube" and json.loads(koala["none"]["pretext"]) == {}
    assert json.loads(koala["tube"]["pretext"])["permutation"]
    assert all(r["purpose"] == "stage0" for r in koala.values())
    assert rows["reco-" + "b" * 16 + "-edit"]["purpose"] == "stage1"
    image = rows["nhr_edit-" + "c" * 16 + "-edit"]
    assert image["purpose"] == "stage0" and image["num_frames"] == 1 and image["fps"] is None
    assert image["latent_shape"][1] == 1 and image["target_indices"] == image["source_indices"] == [0]
    # the raw clip's target is shared: none / cube / tube carry the same target latents
    lat = [unpack_tensors(koala[v]["tensors"])["target_latents"] for v in ("none", "cube", "tube")]
    assert torch.equal(lat[0], lat[1]) and torch.equal(lat[0], lat[2])
    # the perturbed sources differ from the target
    src = unpack_tensors(koala["cube"]["tensors"])["source_latents"]
    assert not torch.equal(src, lat[0])


def test_semantic_tokens_pool_the_anchor_frame(tmp_path, tiny_models, encoders):
    cfg = encode_config(tiny_models, ["encode.anchor_frames=3"])
    (d,) = [decode_sample(_row("reco:" + "d" * 16, CLIPS_DIR / "hl07_edited.mp4", CLIPS_DIR / "hl07_source.mp4"),
                          cfg.encode, cfg.pretext, SEED)]
    (row,) = encode_samples([d], encoders, cfg.encode, cfg.pretext, SEED)
    assert row["anchor_indices"] == [1, 4, 7]
    stored = unpack_tensors(row["tensors"])["semantic_tokens"]
    assert list(stored.shape) == [3, 65, 32]
    target = d.clips["target"]
    again = encoders.semantic_tokens([target[i] for i in (1, 4, 7)])
    torch.testing.assert_close(stored.float(), again, atol=0.05, rtol=0.02)  # bf16 storage
    # the 64 local tokens are the 8x8 pool of the tiny SigLIP's 8x8 patch grid (identity here)
    from transformers import AutoImageProcessor

    proc = AutoImageProcessor.from_pretrained(tiny_models["siglip_path"])
    with torch.inference_mode():
        out = encoders.siglip(pixel_values=proc(images=[target[4]], return_tensors="pt")["pixel_values"])
    torch.testing.assert_close(again[1, :64], out.last_hidden_state[0])
    torch.testing.assert_close(again[1, 64], out.pooler_output[0])


def test_vae_roundtrip_has_the_input_shape(tmp_path, tiny_models, encoders):
    cfg = encode_config(tiny_models)
    d = decode_sample(_row("reco:" + "e" * 16, CLIPS_DIR / "hl07_edited.mp4", CLIPS_DIR / "hl07_source.mp4"),
                      cfg.encode, cfg.pretext, SEED)
    (row,) = encode_samples([d], encoders, cfg.encode, cfg.pretext, SEED)
    latents = unpack_tensors(row["tensors"])["target_latents"].float()[None]
    pixels = encoders.vae_decode(latents)
    t, h, w, c = d.clips["target"].shape
    assert list(pixels.shape) == [1, c, t, h, w]
    # normalised latents: the stored values are (mu - mean) / std of the VAE's config
    mu = encoders.vae.encode(encoders._to_pixels([d.clips["target"]])).latent_dist.mode()
    torch.testing.assert_close(latents[0], ((mu - encoders.latents_mean) / encoders.latents_std)[0].detach(),
                               atol=0.05, rtol=0.02)


def test_determinism_same_bytes_from_fresh_encoders(tmp_path, tiny_models, encoders):
    cfg = encode_config(tiny_models, ["pretext.mode=all"])
    a = encode_table(_decoded(tmp_path, cfg), encoders, cfg.encode, cfg.pretext, SEED)
    other = Encoders(cfg.encode)  # loaded again from disk
    b = encode_table(_decoded(tmp_path, cfg), other, cfg.encode, cfg.pretext, SEED)
    assert a.equals(b)
    # another run seed draws other cube boxes / tube orders
    from stages.encode.core import prepare

    records = lambda seed: [k.spec.pretext for k in prepare(_decoded(tmp_path, cfg), cfg.pretext, seed)[0]]  # noqa: E731
    assert records(SEED) == records(SEED) != records(SEED + 1)


def test_a_keys_bytes_do_not_depend_on_its_unit_mates(tmp_path, tiny_models, encoders):
    """A sample encoded with others gives the rows it gives alone: a re-curation that encodes the
    newly kept samples in units of their own writes what a fresh run writes."""
    cfg = encode_config(tiny_models, ["pretext.mode=all"])
    together = encode_table(_decoded(tmp_path, cfg), encoders, cfg.encode, cfg.pretext, SEED)
    for i in range(len(_decoded(tmp_path, cfg))):
        alone = encode_table(_decoded(tmp_path, cfg)[i:i + 1], encoders, cfg.encode, cfg.pretext, SEED)
        sid = alone["sample_id"][0].as_py()
        mask = pa.array([s == sid for s in together["sample_id"].to_pylist()])
        assert together.filter(mask).equals(alone), sid


def test_a_bad_sample_is_isolated(tmp_path, tiny_models, encoders):
    """One sample the VAE cannot take (frames with 2 channels): samples are encoded one at a time,
    the bad one becomes an encoder_error row, the others are encoded."""
    cfg = encode_config(tiny_models)
    good = _decoded(tmp_path, cfg)[1:]
    bad = DecodedSample({"sample_id": "reco:" + "f" * 16, "dataset": "reco", "modality": "video", "task": "edit",
                         "instruction": "x"}, bucket=(64, 32), fps=8.0,
                        clips={"target": np.zeros((5, 32, 64, 2), np.uint8)},
                        keys=[KeySpec("edit", target="target", target_indices=list(range(5)))])
    rows = encode_samples([good[0], bad, good[1]], encoders, cfg.encode, cfg.pretext, SEED)
    errors = {r["sample_id"]: r["error"] for r in rows}
    assert errors["reco:" + "f" * 16].startswith("encoder_error: RuntimeError")
    assert [e for s, e in errors.items() if s != "reco:" + "f" * 16] == [None, None]
    failed = next(r for r in rows if r["error"])
    assert failed["tensors"] is None and failed["tensor_meta"] is None and failed["instruction"] == "x"


def test_text_off_stores_no_text(tmp_path, tiny_models):
    cfg = encode_config(tiny_models, ["encode.text=false", "encode.text_encoder_path=null",
                                      "encode.tokenizer_path=null"])
    enc = Encoders(cfg.encode)
    (row,) = encode_samples(_decoded(tmp_path, cfg)[2:], enc, cfg.encode, cfg.pretext, SEED)
    assert "text_embedding" not in unpack_tensors(row["tensors"])
    assert json.loads(row["models"])["text"] is None


def test_missing_model_dirs_name_the_field(tmp_path, tiny_models):
    with pytest.raises(ConfigError, match=r"encode\.vae_path: not set"):
        model_dirs(EncodeConfig())
    cfg = encode_config(tiny_models, [f"encode.siglip_path={tmp_path / 'nope'}"]).encode
    with pytest.raises(ConfigError, match=r"encode\.siglip_path: .*nope is not a directory"):
        model_dirs(cfg)
    with pytest.raises(ConfigError, match=r"encode\.text_encoder_path: .* has no config\.json"):
        model_dirs(encode_config(tiny_models, [f"encode.text_encoder_path={tmp_path}"]).encode)
    # text off: the text model is not needed
    assert set(model_dirs(encode_config(tiny_models, ["encode.text=false"]).encode)) == {"vae_path", "siglip_path"}


def test_full_siglip_checkpoint_loads_its_vision_tower(tmp_path, tiny_models):
    """A real SigLIP release is a full SiglipModel (text + vision); the vision tower loads from it."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    torch.manual_seed(0)
    full = SiglipModel(SiglipConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=64, max_position_embeddings=16),
        vision_config=dict(hidden_size=48, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=56, patch_size=14)))
    full.save_pretrained(tmp_path / "siglip_full")
    SiglipImageProcessor(size={"height": 56, "width": 56}).save_pretrained(tmp_path / "siglip_full")
    cfg = encode_config(tiny_models, [f"encode.siglip_path={tmp_path / 'siglip_full'}", "encode.siglip_pool_grid=2"])
    enc = Encoders(cfg.encode)
    tokens = enc.semantic_tokens([np.zeros((32, 64, 3), np.uint8)])
    assert list(tokens.shape) == [1, 2 * 2 + 1, 48]  # 4x4 patches pooled to 2x2, plus the global token
    loaded = {k.split("vision_model.")[-1]: v for k, v in enc.siglip.state_dict().items()}
    for name, v in full.state_dict().items():
        if name.startswith("vision_model."):
            torch.testing.assert_close(loaded[name.removeprefix("vision_model.")], v)


@pytest.mark.parametrize("field,other,message", [
    ("siglip_path", "text_encoder_path", r"lacks \d+ weights of SiglipVisionModel"),
    ("text_encoder_path", "siglip_path", r"lacks \d+ weights of UMT5EncoderModel"),
    ("vae_path", "siglip_path", r"does not load as AutoencoderKLWan"),
])
def test_a_checkpoint_of_another_model_is_refused(tiny_models, field, other, message):
    cfg = encode_config(tiny_models, [f"encode.{field}={tiny_models[other]}"])
    with pytest.raises(ConfigError, match=rf"encode\.{field}: .*{message}"):
        Encoders(cfg.encode)
