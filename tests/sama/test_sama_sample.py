"""`sama sample` and `sama export`: tiny random VAE / umT5 / SAMA transformer on CPU, end to end.

The sampler repeats the encode stage's preparation (it may not import stages/); the parity tests
here pin it to the stage's own functions so the two cannot drift apart.
"""
from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sama import checkpoint as ckpt
from sama.cli import app
from sama.config import DataConfig, FlowConfig, TrainerConfig
from sama.dist import Env
from sama.ema import EMA
from sama.export import load_trained
from sama.model import SamaTransformer, cast_weights
from sama.sample import Vae, encode_texts, fit_to_bucket, frame_plan, generate_buckets, nearest_bucket
from sama.tiny import tiny_sama_model_config

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    from pipeline.curate.demo.tiny_encoders import build_tiny_encoders

    return build_tiny_encoders(tmp_path_factory.mktemp("tiny_encoders"))


def write_video(path, frames: int = 12, size=(56, 40), fps: int = 8):
    """A small moving gradient, H.264."""
    w, h = size
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            x = np.zeros((h, w, 3), np.uint8)
            x[..., 0] = (np.arange(w)[None] * 4 + i * 10) % 256
            x[..., 1] = (np.arange(h)[:, None] * 5) % 256
            x[..., 2] = i * 20
            for p in s.encode(av.VideoFrame.from_ndarray(x, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def read_video(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        codec, rate = s.codec_context.name, s.average_rate
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
    return codec, rate, np.stack(frames)


def tiny_model(seed: int = 0) -> SamaTransformer:
    torch.manual_seed(seed)
    model = SamaTransformer.from_config(tiny_sama_model_config(text_len=64))
    with torch.no_grad():
        model.type_embedding.normal_()
    return model


@pytest.fixture(scope="module")
def train_run(tmp_path_factory):
    """A training run directory with one real checkpoint (sama.checkpoint format) whose EMA
    differs from its raw weights."""
    out = tmp_path_factory.mktemp("run")
    model = tiny_model()
    ema = EMA(model, 0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)  # the raw weights move on; the EMA keeps the old ones
    cfg = TrainerConfig(model=model.cfg, flow=FlowConfig(shift=3.0),
                        data=DataConfig(workdir=out, streams={"edit": {"purpose": "stage1", "modality": "video",
                                                                        "variants": ["edit"]}}))
    optimizer = torch.optim.AdamW(model.parameters())
    ckpt.save(out, 7, model, optimizer, ema, Env(0, 1, 0, torch.device("cpu")), per_rank={},
              meta={"config": cfg.model_dump(mode="json")}, keep_last=1)
    return out, {k: v.clone() for k, v in ema.state_dict().items()}


# ---------------------------------------------------------------- parity with the encode stage
def test_source_preparation_matches_the_encode_stage():
    from stages.media.buckets import fit_to_bucket as stage_fit
    from stages.media.buckets import generate_buckets as stage_buckets
    from stages.media.frames import frames_that_fit, largest_4n1, plan_indices

    assert (generate_buckets, fit_to_bucket) == (stage_buckets, stage_fit)  # one implementation
    assert nearest_bucket(1920, 1080, generate_buckets(832 * 480, 32, 0.5, 2.0)) == (832, 480)
    for n_native, native_fps, fps, max_frames in [(300, 30.0, 16.0, 81), (40, 24.0, 16.0, 81), (12, 8.0, 8.0, 9),
                                                  (7, 25.0, 16.0, 81), (1000, 29.97, 16.0, 49)]:
        n = min(max_frames, largest_4n1(frames_that_fit(n_native, native_fps, fps)))
        assert frame_plan(n_native, native_fps, fps, max_frames) == plan_indices(
            n_native, native_fps, fps, n, count=n)


def test_vae_and_text_encoding_match_the_encode_stage(encoders):
    from pipeline.curate.config import EncodeConfig
    from stages.encode.encoders import Encoders

    stage = Encoders(EncodeConfig(device="cpu", **{k: v for k, v in encoders.items()}))
    frames = np.random.default_rng(1).integers(0, 255, (5, 32, 64, 3), dtype=np.uint8)
    ours = Vae.load(encoders["vae_path"], torch.device("cpu"))
    torch.testing.assert_close(ours.encode(frames)[0], stage.vae_latents([frames])[0])
    text = "[Restore the video to its normal speed.] A boy plays outdoors."
    (emb, mask), = encode_texts([text], encoders["text_encoder_path"], None, 512, torch.device("cpu"))
    torch.testing.assert_close(emb[0], stage.text_embeddings([text])[0])
    assert mask.all() and mask.shape == emb.shape[:2]


# ---------------------------------------------------------------- export
def test_export_of_a_training_checkpoint_holds_its_ema_weights(train_run, tmp_path):
    run, ema = train_run
    result = CliRunner().invoke(app, ["export", "--checkpoint", str(run), "--out", str(tmp_path / "exp")])
    assert result.exit_code == 0, result.output
    exported, info = load_trained(tmp_path / "exp")
    assert info["step"] == 7 and info["weights"] == "ema" and info["flow"].shift == 3.0
    params = dict(exported.named_parameters())
    assert set(params) == set(ema)
    for name, value in ema.items():
        assert torch.equal(params[name], value), name
    # raw weights on request
    raw, _ = load_trained(run, weights="model")
    assert not torch.equal(dict(raw.named_parameters())["type_embedding"], ema["type_embedding"])
    # an existing --out is not overwritten silently
    again = CliRunner().invoke(app, ["export", "--checkpoint", str(run), "--out", str(tmp_path / "exp")])
    assert again.exit_code == 2 and "exists" in again.output


# ---------------------------------------------------------------- sample, end to end
@pytest.mark.parametrize("from_export", [False, True])
def test_sample_writes_a_decodable_h264_of_the_expected_frames(encoders, train_run, tmp_path, from_export):
    run, _ = train_run
    checkpoint = run
    if from_export:
        checkpoint = tmp_path / "export"
        tiny_model(seed=1).save_exported(checkpoint)
    source = write_video(tmp_path / "source.mp4", frames=12, size=(56, 40), fps=8)
    out = tmp_path / "edited.mp4"
    args = ["sample", "--checkpoint", str(checkpoint), "--source", str(source),
            "--instruction", "Change the style to watercolor.", "--out", str(out),
            "--vae", str(encoders["vae_path"]), "--text-encoder", str(encoders["text_encoder_path"]),
            "--steps", "3", "--frames", "9", "--fps", "8", "--area", "2048", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "9 frames at 64x32" in result.output
    codec, rate, frames = read_video(out)
    # 12 frames at 8 fps -> the longest 4n+1 <= 9; the 56x40 source goes to the 64x32 bucket
    assert codec == "h264" and rate == Fraction(8) and frames.shape == (9, 32, 64, 3)
    assert not list(tmp_path.glob(".*tmp*"))  # written under a temporary name, renamed
    if from_export:
        return
    # same seed, same bytes of pixels; another seed, another video
    out2 = tmp_path / "again.mp4"
    assert CliRunner().invoke(app, [*args[:8], str(out2), *args[9:]]).exit_code == 0
    assert np.array_equal(read_video(out2)[2], frames)
    out3 = tmp_path / "seed1.mp4"
    assert CliRunner().invoke(app, [*args[:8], str(out3), *args[9:], "--seed", "1"]).exit_code == 0
    assert not np.array_equal(read_video(out3)[2], frames)


def test_sample_of_an_image_and_bad_inputs(encoders, train_run, tmp_path):
    from PIL import Image

    run, _ = train_run
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 70, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    common = ["--vae", str(encoders["vae_path"]), "--text-encoder", str(encoders["text_encoder_path"]),
              "--steps", "2", "--area", "2048", "--device", "cpu", "--instruction", "Add a red hat."]
    result = CliRunner().invoke(app, ["sample", "--checkpoint", str(run), "--source", str(tmp_path / "a.png"),
                                      "--out", str(tmp_path / "a.mp4"), *common])
    assert result.exit_code == 0, result.output
    assert read_video(tmp_path / "a.mp4")[2].shape == (1, 32, 64, 3)
    # bf16 weights (what a GPU gets by default) run too
    bf16 = CliRunner().invoke(app, ["sample", "--checkpoint", str(run), "--source", str(tmp_path / "a.png"),
                                    "--out", str(tmp_path / "a16.mp4"), "--dtype", "bfloat16", *common])
    assert bf16.exit_code == 0, bf16.output
    assert read_video(tmp_path / "a16.mp4")[2].shape == (1, 32, 64, 3)

    missing = CliRunner().invoke(app, ["sample", "--checkpoint", str(tmp_path / "nowhere"), "--source",
                                       str(tmp_path / "a.png"), "--out", str(tmp_path / "b.mp4"), *common])
    assert missing.exit_code == 2 and "neither an export" in missing.output
    bad_frames = CliRunner().invoke(app, ["sample", "--checkpoint", str(run), "--source", str(tmp_path / "a.png"),
                                          "--out", str(tmp_path / "c.mp4"), "--frames", "8", *common])
    assert bad_frames.exit_code == 2 and "4n+1" in bad_frames.output
    (tmp_path / "cut.png").write_bytes((tmp_path / "a.png").read_bytes()[:40])
    for name in ("cut.png", "nowhere.png"):  # an unreadable or missing image: one line, exit 2
        bad_source = CliRunner().invoke(app, ["sample", "--checkpoint", str(run), "--source", str(tmp_path / name),
                                              "--out", str(tmp_path / "d.mp4"), *common])
        assert bad_source.exit_code == 2 and "not a readable image" in bad_source.output, bad_source.output
        assert "Traceback" not in bad_source.output and not (tmp_path / "d.mp4").exists()


def test_cast_weights_keeps_wans_fp32_modules():
    model = tiny_model()
    cast_weights(model, torch.bfloat16)
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert dtypes["wan.blocks.0.attn1.to_q.weight"] == torch.bfloat16
    assert dtypes["semantic_embed.1.weight"] == torch.bfloat16
    assert dtypes["wan.scale_shift_table"] == torch.float32
    assert dtypes["wan.blocks.0.scale_shift_table"] == torch.float32
    assert dtypes["wan.condition_embedder.time_embedder.linear_1.weight"] == torch.float32
    assert model.wan.rope.freqs_cos.dtype == torch.float32  # a buffer: untouched


def test_sample_preset_official_from_the_released_file(encoders, tmp_path):
    """--preset official straight from an official-format SAMA file over its base: the first 49
    native-fps frames (12 here) padded to 4n+1 with the last, output at the source's fps."""
    from _sama_fixtures import write_official_fixture

    fixture = write_official_fixture(tmp_path / "official", dim=64, heads=2, layers=2, ffn=128, text_dim=32,
                                     freq_dim=32, siglip=32, hidden=48, text_len=24, n_sem=65, steps=1)
    source = write_video(tmp_path / "src.mp4", frames=12, fps=8)
    out = tmp_path / "edit.mp4"
    args = ["sample", "--preset", "official", "--checkpoint", str(fixture / "model.safetensors"), "--base",
            str(fixture), "--source", str(source), "--instruction", "Make it snow.", "--out", str(out),
            "--vae", str(encoders["vae_path"]), "--text-encoder", str(encoders["text_encoder_path"]),
            "--steps", "2", "--area", "2048", "--device", "cpu", "--round-timesteps-bf16"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    codec, rate, frames = read_video(out)
    assert codec == "h264" and rate == 8 and len(frames) == 13
    assert "official weights of" in result.output
    # without --base the released file cannot be placed
    no_base = CliRunner().invoke(app, [a for a in args if a not in ("--base", str(fixture))])
    assert no_base.exit_code == 2 and "give --base" in no_base.output
