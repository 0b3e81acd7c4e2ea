"""The released SAMA weights: import (official / original-Wan2.1 / diffusers names), the official
preset, `sama parity` on the shared official-code fixture and on a fixture of other sizes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from _sama_fixtures import write_official_fixture
from sama.cli import app
from sama.config import ModelConfig, TrainerConfig
from sama.flow import diffsynth_training_weights, official_sigmas
from sama.model import SamaTransformer
from sama.official import load_official, our_name, official_name
from sama.tiny import tiny_model_config

torch.set_num_threads(2)
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "sama_parity"
SHARED = SHARED if SHARED.is_dir() else Path("/work/shared/sama_parity")


@pytest.fixture(scope="module")
def sized_fixture(tmp_path_factory):
    return write_official_fixture(tmp_path_factory.mktemp("fixture_other_size"))


def _parity(fixture) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["parity", "--fixture", str(fixture)])
    return result.exit_code, result.output


# ---------------------------------------------------------------- parity
@pytest.mark.skipif(not (SHARED / "cases.safetensors").is_file(),
                    reason="../shared/sama_parity (official-code outputs) is not present in this checkout")
def test_parity_on_the_official_fixture():
    code, out = _parity(SHARED)
    assert code == 0, out
    lines = {ln.split(" max abs err ")[0].strip(): float(ln.split(" max abs err ")[1].split()[0])
             for ln in out.splitlines() if " max abs err " in ln}
    assert {"case0 pred_target", "case2 pred_sem", "sample final_latents", "sched50 timesteps bf16"} <= set(lines)
    assert max(v for k, v in lines.items() if k.startswith("case")) < 1e-5  # README: correct lands near 1e-5
    assert lines["sample final_latents"] < 5e-5


def test_parity_handles_other_sizes_and_fails_loudly(sized_fixture, tmp_path):
    code, out = _parity(sized_fixture)
    assert code == 0, out
    assert "case1 pred_sem" in out and "sample final_sem_latents" in out and "sample sigmas" in out
    bad = tmp_path / "bad"
    shutil.copytree(sized_fixture, bad)
    cases = load_file(bad / "cases.safetensors")
    cases["case0_pred_target"][0, 0, 0, 0, 0] += 1e-3  # above 1e-4
    save_file(cases, bad / "cases.safetensors", metadata={"json": json.dumps({"sampling": {"steps": 3}})})
    code, out = _parity(bad)
    assert code == 1 and "case0 pred_target" in out and "FAIL" in out and "parity: FAILED" in out


# ---------------------------------------------------------------- import
def _as_diffusers_base(sized_fixture, directory: Path) -> tuple[Path, Path]:
    """Split the sized fixture into a diffusers-layout base (Wan keys) and a SAMA file (SAMA keys
    plus a few Wan keys the fine-tune changed, as a full-DiT checkpoint would)."""
    from diffusers import WanTransformer3DModel

    from sama.official import diffusers_config

    official = load_file(sized_fixture / "model.safetensors")
    wan_cfg = json.loads((sized_fixture / "config.json").read_text())["wan_model"]
    wan = WanTransformer3DModel(**diffusers_config(wan_cfg))
    base_sd = {our_name(k)[len("wan."):]: v for k, v in official.items() if our_name(k).startswith("wan.")}
    changed = "blocks.0.self_attn.q.weight"
    base_sd["blocks.0.attn1.to_q.weight"] = torch.zeros_like(base_sd["blocks.0.attn1.to_q.weight"])
    wan.load_state_dict(base_sd)
    wan.save_pretrained(directory / "base")
    sama = {k: v for k, v in official.items() if not our_name(k).startswith("wan.") or k == changed}
    save_file(sama, directory / "sama.safetensors")
    return directory / "base", directory / "sama.safetensors"


def _forward(model, seed=0, n_sem=17, text_len=20):
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(1, 16, 2, 6, 8, generator=g)
    text = torch.randn(1, text_len, 24, generator=g)
    with torch.no_grad():
        return model(lat, torch.tensor([700.0]), text, torch.ones(1, text_len, dtype=torch.bool),
                     torch.randn(1, 16, 2, 6, 8, generator=g), torch.randn(1, n_sem, 40, generator=g))


def test_import_over_a_diffusers_base_equals_the_official_file(sized_fixture, tmp_path):
    base, sama = _as_diffusers_base(sized_fixture, tmp_path)
    reference = load_official(sized_fixture / "model.safetensors", sized_fixture, text_len=20,
                              semantic_grid=4).eval()
    result = CliRunner().invoke(app, ["import", "--weights", str(sama), "--base", str(base),
                                      "--out", str(tmp_path / "export")])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "export" / "sama_config.json").read_text())
    assert meta["model"]["preset"] == "official" and meta["flow"]["sem_target"] == "velocity"
    assert meta["model"]["semantic_mlp_hidden"] == 56 and meta["model"]["semantic_dim"] == 40
    imported = SamaTransformer.from_exported(tmp_path / "export").eval()
    imported.cfg = imported.cfg.model_copy(update={"text_len": 20, "semantic_grid": 4})
    # the SAMA file's q weight replaced the base's zeros
    assert torch.equal(imported.wan.blocks[0].attn1.to_q.weight, reference.wan.blocks[0].attn1.to_q.weight)
    assert imported.wan.blocks[0].attn1.to_q.weight.abs().sum() > 0
    assert all(torch.equal(a, b) for a, b in zip(imported.state_dict().values(), reference.state_dict().values()))
    for a, b in zip(_forward(reference), _forward(imported)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)  # same weights; kernels may differ in order
    # the export's transformer/ is a plain diffusers model
    from diffusers import WanTransformer3DModel

    assert WanTransformer3DModel.from_pretrained(tmp_path / "export" / "transformer").config.num_layers == 3


def test_import_over_the_original_sharded_layout(sized_fixture, tmp_path):
    """Wan2.1's own layout: config.json of WanModel, diffusion_pytorch_model-0000k-of-0000n shards
    under the original names, an index json; the SAMA file carries only the SAMA modules."""
    official = load_file(sized_fixture / "model.safetensors")
    wan_keys = sorted(k for k in official if our_name(k).startswith("wan."))
    base = tmp_path / "Wan2.1-T2V"
    base.mkdir()
    halves = [wan_keys[: len(wan_keys) // 2], wan_keys[len(wan_keys) // 2:]]
    weight_map = {}
    for i, keys in enumerate(halves, 1):
        name = f"diffusion_pytorch_model-{i:05d}-of-00002.safetensors"
        save_file({k: official[k] for k in keys}, base / name)
        weight_map.update({k: name for k in keys})
    (base / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    wan_model = json.loads((sized_fixture / "config.json").read_text())["wan_model"]
    (base / "config.json").write_text(json.dumps({"_class_name": "WanModel", "model_type": "t2v", **wan_model}))
    save_file({k: official[k] for k in official if k not in weight_map}, tmp_path / "sama.safetensors")
    model = load_official(tmp_path / "sama.safetensors", base, text_len=20, semantic_grid=4).eval()
    reference = load_official(sized_fixture / "model.safetensors", sized_fixture, text_len=20,
                              semantic_grid=4).eval()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    for a, b in zip(_forward(reference), _forward(model)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_import_names_unknown_missing_and_misshaped_keys(sized_fixture, tmp_path):
    official = load_file(sized_fixture / "model.safetensors")

    def attempt(sd, own_base: bool = False) -> str:
        """``sd`` as the SAMA file over the good base (or as its own base too)."""
        d = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        d.mkdir()
        shutil.copy(sized_fixture / "config.json", d / "config.json")
        save_file(sd, d / "model.safetensors")
        with pytest.raises(ValueError) as e:
            load_official(d / "model.safetensors", d if own_base else sized_fixture, text_len=20)
        return str(e.value)

    msg = attempt({**official, "blocks.0.self_attn.extra.weight": torch.zeros(2), "vace_blocks.0.x": torch.zeros(1)})
    assert "unknown keys (2)" in msg and "blocks.0.self_attn.extra.weight" in msg and "vace_blocks.0.x" in msg
    msg = attempt({k: v for k, v in official.items() if k != "blocks.2.ffn.2.bias"}, own_base=True)
    assert "missing keys (1)" in msg and "wan.blocks.2.ffn.net.2.bias" in msg
    msg = attempt({**official, "head.modulation": torch.zeros(1, 3, 72)})
    assert "mis-shaped keys" in msg and "head.modulation (1, 3, 72) (model (1, 2, 72))" in msg


def test_import_of_a_file_that_is_not_safetensors_is_one_line(sized_fixture, tmp_path):
    """A cut download or a Git LFS pointer as --weights: one line naming the file, exit 2, no --out."""
    pointer = tmp_path / "sama.safetensors"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")
    result = CliRunner().invoke(app, ["import", "--weights", str(pointer), "--base", str(sized_fixture),
                                      "--out", str(tmp_path / "export")])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {pointer}: not a readable safetensors file")
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "export").exists()


def test_key_map_round_trips_every_parameter():
    cfg = ModelConfig(preset="official", tiny=tiny_model_config(), semantic_dim=32, semantic_mlp_hidden=48)
    model = SamaTransformer.from_config(cfg)
    names = list(model.state_dict())
    assert all(our_name(official_name(n)) == n for n in names)
    assert len({official_name(n) for n in names}) == len(names)
    assert official_name("wan.blocks.1.norm2.weight") == "blocks.1.norm3.weight"
    assert our_name("time_projection.1.weight") == "wan.condition_embedder.time_proj.weight"


# ---------------------------------------------------------------- preset, schedule, weighting
def test_official_preset_sets_its_fields_and_leaves_defaults_alone():
    tiny = tiny_model_config()
    default = ModelConfig(tiny=tiny)
    assert (default.semantic_rope, default.semantic_mlp_affine, default.semantic_mlp_act,
            default.semantic_head_affine, default.timestep_embedding_fp64) == ("identity", False, "gelu_tanh",
                                                                               False, False)
    official = ModelConfig(tiny=tiny, preset="official", semantic_dim=32)
    assert (official.semantic_rope, official.semantic_mlp_hidden, official.semantic_mlp_act,
            official.text_len, official.semantic_dim) == ("zero", 1024, "gelu", 512, 32)
    model = SamaTransformer.from_config(official)
    assert model.semantic_embed[0].weight.shape == (32,) and model.semantic_head[0].weight.shape == (32,)
    assert model.semantic_embed[2].approximate == "none"
    trainer = TrainerConfig.model_validate({"model": {"tiny": tiny, "preset": "official"},
                                            "data": {"workdir": "w", "streams": {"a": {
                                                "purpose": "stage1", "modality": "video", "variants": ["edit"]}}},
                                            "flow": {"lambda_sem": 0.5}})
    assert (trainer.flow.sem_target, trainer.flow.loss_weighting, trainer.flow.lambda_sem) == ("velocity", "diffsynth", 0.5)


def test_zero_semantic_rope_makes_semantic_tokens_positionless():
    """cos = sin = 0: semantic queries/keys are 0, so permuting the semantic tokens permutes the
    semantic prediction and leaves the target's untouched."""
    cfg = ModelConfig(preset="official", tiny=tiny_model_config(), semantic_dim=32, semantic_mlp_hidden=48,
                      text_len=16)
    torch.manual_seed(0)
    model = SamaTransformer.from_config(cfg).eval()
    g = torch.Generator().manual_seed(1)
    lat, src = torch.randn(1, 16, 2, 4, 4, generator=g), torch.randn(1, 16, 2, 4, 4, generator=g)
    sem, text = torch.randn(1, 65, 32, generator=g), torch.randn(1, 5, 32, generator=g)
    mask = torch.ones(1, 5, dtype=torch.bool)
    perm = torch.randperm(65, generator=g)
    with torch.no_grad():
        v, s = model(lat, torch.tensor([300.0]), text, mask, src, sem)
        v2, s2 = model(lat, torch.tensor([300.0]), text, mask, src, sem[:, perm])
    torch.testing.assert_close(v2, v, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s2, s[:, perm], atol=1e-5, rtol=1e-5)


def test_official_schedule_and_diffsynth_weights():
    s = official_sigmas(4, 5.0)
    assert s.tolist() == pytest.approx([1.0, 0.9375, 0.8333333, 0.625, 0.0], abs=1e-6)
    t, w = diffsynth_training_weights(5.0)
    assert t.shape == w.shape == (1000,) and w.mean().item() == pytest.approx(1.0, abs=1e-5)
    assert w.min().item() == 0.0 and t[0].item() == 1000.0
    # the bump peaks where the (shifted) timestep is near 500
    assert abs(t[w.argmax()].item() - 500) < 5


def test_bf16_timestep_rounding_feeds_what_the_released_pipeline_feeds():
    """--round-timesteps-bf16: the model sees 1000, 936, 832, 624 for the 4-step schedule (the
    fixture's sample_timesteps_bf16); the Euler steps keep the exact sigmas."""
    from sama.flow import euler_sample

    seen = []

    class Zero(torch.nn.Module):  # velocity 0: x stays the noise, only the timesteps matter
        def forward(self, x, t, *rest):
            seen.append(t.item())
            return torch.zeros_like(x), None

    text, mask = torch.zeros(1, 4, 8), torch.ones(1, 4, dtype=torch.bool)
    for rounded in (True, False):
        seen.clear()
        euler_sample(Zero(), text, mask, (1, 16, 1, 2, 2), steps=4, sigmas=official_sigmas(4, 5.0),
                     round_timesteps_bf16=rounded)
        expected = [1000.0, 936.0, 832.0, 624.0] if rounded else [1000.0, 937.5, 833.3333, 625.0]
        assert seen == pytest.approx(expected, abs=1e-3)


def test_sharded_load_refuses_what_it_cannot_stream(tmp_path):
    from sama.config import ConfigError
    from sama.load import _sources

    cfg = TrainerConfig.model_validate({
        "model": {"tiny": tiny_model_config()}, "train": {"load": "sharded"},
        "data": {"workdir": "w", "streams": {"a": {"purpose": "stage1", "modality": "video", "variants": ["edit"]}}}})
    with pytest.raises(ConfigError, match="model.base_path"):
        _sources(cfg)
    from sama.tiny import build_tiny_checkpoint

    base = build_tiny_checkpoint(tmp_path / "wan")
    cfg = cfg.model_copy(update={"model": ModelConfig(base_path=str(base)),
                                 "train": cfg.train.model_copy(update={"init_from": tmp_path / "run"})})
    with pytest.raises(ConfigError, match="streams only .safetensors"):
        _sources(cfg)
