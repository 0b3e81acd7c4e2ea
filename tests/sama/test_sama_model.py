"""SAMA transformer (sama.model), flow matching (sama.flow), export round trip; tiny models on CPU."""
from __future__ import annotations

import pytest
import torch
from diffusers import WanTransformer3DModel
from pydantic import ValidationError

from sama.config import FlowConfig, ModelConfig
from sama.flow import euler_sample, sample_sigmas, sampling_sigmas, shift_sigmas, training_loss
from sama.model import SEMANTIC, SOURCE, TARGET, SamaTransformer
from sama.tiny import build_tiny_checkpoint, tiny_sama_model_config

torch.set_num_threads(2)

B, C, T, H, W = 2, 16, 3, 8, 12  # latent grid 3 x 4 x 6 = 72 tokens with patch (1, 2, 2)
N_PATCH = T * (H // 2) * (W // 2)
SEM_DIM, TEXT_DIM = 32, 32


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("wan_tiny"), seed=3)


def make_model(tiny_dir, seed: int = 0, **overrides) -> SamaTransformer:
    torch.manual_seed(seed)
    return SamaTransformer.from_config(tiny_sama_model_config(tiny_dir, **overrides))


def make_batch(seed: int = 0, source: bool = True, semantic: bool = True, sem_tokens: int = 65) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, 7, dtype=torch.bool)
    mask[1, 4:] = False  # second prompt is shorter
    return {
        "target": torch.randn(B, C, T, H, W, generator=g),
        "source": torch.randn(B, C, T, H, W, generator=g) if source else None,
        "semantic": torch.randn(B, sem_tokens, SEM_DIM, generator=g) * 3 if semantic else None,
        "text": torch.randn(B, 7, TEXT_DIM, generator=g),
        "text_mask": mask,
    }


def capture_rotary(model: SamaTransformer):
    """The rotary (cos, sin) that the first block's self-attention actually receives."""
    seen = {}

    def hook(_module, args):
        seen["rotary"] = args[3]

    handle = model.blocks[0].attn1.register_forward_pre_hook(hook)
    return seen, handle


# ---------------------------------------------------------------- config
def test_model_config_needs_a_base_or_tiny():
    with pytest.raises(ValidationError, match="model.base_path"):
        ModelConfig()
    with pytest.raises(ValidationError):
        ModelConfig(tiny={}, semantic_rope="shifted")
    with pytest.raises(ValidationError, match="keep one"):
        ModelConfig(base_path="/x", tiny={"num_layers": 1})
    assert tiny_sama_model_config().semantic_tokens == 65  # 8x8 pooled + 1 global


def test_semantic_tokens_must_match_the_config(tiny_dir):
    model = make_model(tiny_dir)
    batch = make_batch(sem_tokens=64)
    with pytest.raises(ValueError, match="model.anchor_frames 1"):
        model.assemble(batch["target"], batch["source"], batch["semantic"])
    with pytest.raises(ValueError, match="model.semantic_dim"):
        model.assemble(batch["target"], None, torch.zeros(B, 65, 8))


# ---------------------------------------------------------------- sequence assembly
def test_sequence_layout_token_counts_type_ids_and_target_slice(tiny_dir):
    model = make_model(tiny_dir)
    batch = make_batch()
    seq = model.assemble(batch["target"], batch["source"], batch["semantic"])
    S = 65
    assert seq.hidden.shape == (B, 2 * N_PATCH + S, model.inner_dim)
    assert seq.slices == {"source": slice(0, N_PATCH), "semantic": slice(N_PATCH, N_PATCH + S),
                          "target": slice(N_PATCH + S, 2 * N_PATCH + S)}
    expected_ids = [SOURCE] * N_PATCH + [SEMANTIC] * S + [TARGET] * N_PATCH
    assert seq.type_ids.tolist() == expected_ids
    assert seq.target_grid == (T, H // 2, W // 2)

    # each part is its own embedding plus its type row: the target slice is the target's patches
    with torch.no_grad():
        model.type_embedding.copy_(torch.randn_like(model.type_embedding))
        seq = model.assemble(batch["target"], batch["source"], batch["semantic"])
        tgt = model.patchify(batch["target"]) + model.type_embedding[TARGET]
        src = model.patchify(batch["source"]) + model.type_embedding[SOURCE]
        sem = model.semantic_embed(batch["semantic"]) + model.type_embedding[SEMANTIC]
    torch.testing.assert_close(seq.hidden[:, seq.slices["target"]], tgt)
    torch.testing.assert_close(seq.hidden[:, seq.slices["source"]], src)
    torch.testing.assert_close(seq.hidden[:, seq.slices["semantic"]], sem)

    # optional parts drop out of the sequence
    only_target = model.assemble(batch["target"])
    assert list(only_target.slices) == ["target"] and only_target.hidden.shape[1] == N_PATCH
    no_sem = model.assemble(batch["target"], batch["source"])
    assert no_sem.type_ids.tolist() == [SOURCE] * N_PATCH + [TARGET] * N_PATCH

    velocity, sem_pred = model(batch["target"], torch.tensor([500.0, 20.0]), batch["text"],
                               batch["text_mask"], batch["source"], batch["semantic"])
    assert velocity.shape == batch["target"].shape
    assert sem_pred.shape == batch["semantic"].shape


def test_rope_source_shares_target_grid_and_semantic_is_identity(tiny_dir):
    model = make_model(tiny_dir)
    batch = make_batch()
    seen, handle = capture_rotary(model)
    with torch.no_grad():
        model(batch["target"], torch.tensor([900.0, 100.0]), batch["text"], batch["text_mask"],
              batch["source"], batch["semantic"])
    handle.remove()
    cos, sin = seen["rotary"]
    S = 65
    assert cos.shape == sin.shape == (1, 2 * N_PATCH + S, 1, 16)
    src, sem, tgt = slice(0, N_PATCH), slice(N_PATCH, N_PATCH + S), slice(N_PATCH + S, None)
    # same grid for source and target (no shift), and it is Wan's own RoPE of the target latents
    wan_cos, wan_sin = model.wan.rope(batch["target"])
    torch.testing.assert_close(cos[:, tgt], wan_cos)
    torch.testing.assert_close(sin[:, tgt], wan_sin)
    assert torch.equal(cos[:, src], cos[:, tgt]) and torch.equal(sin[:, src], sin[:, tgt])
    # the grid really varies over the target (so the equalities above are not vacuous)
    assert not torch.allclose(cos[0, N_PATCH + S], cos[0, -1])
    # identity rotation on the semantic tokens
    assert torch.equal(cos[:, sem], torch.ones_like(cos[:, sem]))
    assert torch.equal(sin[:, sem], torch.zeros_like(sin[:, sem]))


def test_shared_semantic_rope_takes_the_target_patch_positions(tiny_dir):
    model = make_model(tiny_dir, semantic_rope="shared", semantic_grid=2, semantic_global_tokens=1,
                       anchor_frames=2)
    target = torch.randn(1, C, T, H, W)  # patch grid h 4, w 6
    per_anchor = 2 * 2 + 1
    cos, sin = model.semantic_rotary(2 * per_anchor, (T, H // 2, W // 2), model.wan.rope(target)[0])
    wan_cos, wan_sin = model.wan.rope(target)
    grid = wan_cos.view(T, H // 2, W // 2, 16)
    grid_sin = wan_sin.view(T, H // 2, W // 2, 16)
    rows, cols = [1, 3], [1, 4]  # centres of the 2x2 cells on a 4x6 grid
    for a in range(2):
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                k = a * per_anchor + i * 2 + j
                torch.testing.assert_close(cos[0, k, 0], grid[0, r, c])  # frame 0: time unrotated
                torch.testing.assert_close(sin[0, k, 0], grid_sin[0, r, c])
        glob = a * per_anchor + 4
        assert torch.equal(cos[0, glob], torch.ones_like(cos[0, glob]))
        assert torch.equal(sin[0, glob], torch.zeros_like(sin[0, glob]))
    with pytest.raises(ValueError, match="multiple of 5"):
        model.semantic_rotary(7, (T, H // 2, W // 2), wan_cos)


# ---------------------------------------------------------------- pretrained function at step 0
def test_target_only_matches_wan_forward_at_init(tiny_dir):
    model = make_model(tiny_dir)
    wan = WanTransformer3DModel.from_pretrained(tiny_dir)  # the base, untouched
    batch = make_batch()
    t = torch.tensor([999.0, 250.0])
    with torch.no_grad():
        ours, sem = model(batch["target"], t, batch["text"], batch["text_mask"])
        # Wan's pipeline: zero the padding, pad to the text length (here 16 instead of 512)
        text = model.pad_text(batch["text"], batch["text_mask"])
        assert text.shape == (B, 16, TEXT_DIM) and torch.all(text[1, 4:] == 0)
        theirs = wan(batch["target"], t, text, return_dict=False)[0]
    assert sem is None
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    # the type embedding is what breaks the equality once it is trained
    with torch.no_grad():
        # (a random vector: a constant one would vanish in Wan's LayerNorms)
        model.type_embedding[TARGET] += torch.randn(model.inner_dim, generator=torch.Generator().manual_seed(0))
        moved, _ = model(batch["target"], t, batch["text"], batch["text_mask"])
    assert (moved - theirs).abs().max() > 1e-3


def test_text_padding_is_invisible(tiny_dir):
    model = make_model(tiny_dir)
    batch = make_batch()
    t = torch.tensor([400.0, 400.0])
    garbage = batch["text"].clone()
    garbage[1, 4:] = 1e3  # masked positions
    with torch.no_grad():
        a, _ = model(batch["target"], t, batch["text"], batch["text_mask"], batch["source"], batch["semantic"])
        b, _ = model(batch["target"], t, garbage, batch["text_mask"], batch["source"], batch["semantic"])
        c, _ = model(batch["target"], t, batch["text"][:, :4], batch["text_mask"][:, :4],
                     batch["source"], batch["semantic"])
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a[1], c[1], rtol=0, atol=1e-6)  # sample 1 only had 4 real tokens


# ---------------------------------------------------------------- loss and training
def test_loss_finite_and_gradients_reach_every_module(tiny_dir):
    model = make_model(tiny_dir)
    out = training_loss(model, make_batch(), FlowConfig(), torch.Generator().manual_seed(0))
    assert set(out) >= {"loss", "l_fm", "l_sem"}
    assert all(torch.isfinite(out[k]) for k in ("loss", "l_fm", "l_sem"))
    torch.testing.assert_close(out["loss"].detach(), out["l_fm"] + 0.1 * out["l_sem"])
    out["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    for name in ("type_embedding", "semantic_embed.3.weight", "semantic_head.1.weight",
                 "wan.patch_embedding.weight", "wan.proj_out.weight", "wan.blocks.1.ffn.net.2.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name


def test_loss_without_source_or_semantic(tiny_dir):
    model = make_model(tiny_dir)
    out = training_loss(model, make_batch(source=False, semantic=False), FlowConfig(),
                        torch.Generator().manual_seed(0))
    assert out["l_sem"] == 0 and torch.equal(out["loss"].detach(), out["l_fm"])


def test_loss_is_deterministic_given_the_generator(tiny_dir):
    model = make_model(tiny_dir)
    batch = make_batch()
    a = training_loss(model, batch, FlowConfig(), torch.Generator().manual_seed(5))
    b = training_loss(model, batch, FlowConfig(), torch.Generator().manual_seed(5))
    c = training_loss(model, batch, FlowConfig(), torch.Generator().manual_seed(6))
    assert torch.equal(a["loss"], b["loss"]) and not torch.equal(a["loss"], c["loss"])


@pytest.mark.parametrize(("sem_target", "steps"), [("clean_tokens", 30), ("normalized_tokens", 12),
                                                   ("velocity", 12)])
def test_optimiser_steps_reduce_the_loss(tiny_dir, sem_target, steps):
    model = make_model(tiny_dir)
    batch = make_batch()
    flow = FlowConfig(sem_target=sem_target)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(steps):
        # the same sigmas and noise every step: the loss of one fixed problem must go down
        out = training_loss(model, batch, flow, torch.Generator().manual_seed(0))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append((out["loss"].item(), out["l_fm"].item(), out["l_sem"].item()))
    first, last = losses[0], losses[-1]
    assert last[0] < (0.8 if steps >= 30 else 0.9) * first[0], losses
    assert last[1] < first[1] and last[2] < first[2], losses


def test_gradient_checkpointing_gives_the_same_gradients(tiny_dir):
    grads = []
    for ckpt in (False, True):
        model = make_model(tiny_dir, gradient_checkpointing=ckpt)
        out = training_loss(model, make_batch(), FlowConfig(), torch.Generator().manual_seed(1))
        out["loss"].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- sigmas and sampler
def test_sigma_sampling_and_shift_properties():
    s = torch.linspace(0, 1, 101)
    for shift in (1.0, 3.0, 5.0):
        out = shift_sigmas(s, shift)
        assert out[0] == 0 and out[-1] == 1 and torch.all(out[1:] > out[:-1])  # fixes ends, monotone
    torch.testing.assert_close(shift_sigmas(s, 1.0), s)
    assert torch.all(shift_sigmas(s[1:-1], 5.0) > s[1:-1])  # shift > 1 moves toward noise
    torch.testing.assert_close(shift_sigmas(torch.tensor([0.5]), 5.0), torch.tensor([5 / 6]))

    g = torch.Generator().manual_seed(0)
    uni = sample_sigmas(20000, FlowConfig(shift=1.0), g)
    assert uni.shape == (20000,) and 0 <= uni.min() and uni.max() <= 1
    assert abs(uni.mean().item() - 0.5) < 0.01
    shifted = sample_sigmas(20000, FlowConfig(shift=5.0), torch.Generator().manual_seed(0))
    torch.testing.assert_close(shifted, shift_sigmas(uni, 5.0))  # same draws, then shifted
    # median of the shifted uniform is shift(0.5) = 5/6
    assert abs(shifted.median().item() - 5 / 6) < 0.01
    ln = sample_sigmas(20000, FlowConfig(shift=1.0, timestep_sampling="logit_normal", logit_mean=1.0),
                       torch.Generator().manual_seed(0))
    assert abs(torch.logit(ln).mean().item() - 1.0) < 0.03 and abs(torch.logit(ln).std().item() - 1.0) < 0.03
    assert torch.equal(sample_sigmas(4, FlowConfig(), torch.Generator().manual_seed(9)),
                       sample_sigmas(4, FlowConfig(), torch.Generator().manual_seed(9)))
    sig = sampling_sigmas(10, 5.0)
    assert sig[0] == 1 and sig[-1] == 0 and len(sig) == 11


@pytest.mark.parametrize("sem_target", ["clean_tokens", "velocity"])
def test_euler_sampler_follows_an_exact_velocity_field_to_the_data(sem_target):
    """With the true velocity of the straight path to x0, Euler lands on x0 (any step count)."""
    x0 = torch.randn(1, C, 2, 4, 4)
    s0 = torch.randn(1, 5, 3)

    def oracle(x, t, text, mask, source, sem):
        sigma = t[0] / 1000
        v = (x - x0) / sigma  # noise - x0 on the path through x
        head = (sem - s0) / sigma if sem_target == "velocity" else s0
        return v, head

    x, sem = euler_sample(oracle, torch.zeros(1, 2, 4), torch.ones(1, 2, dtype=torch.bool), x0.shape,
                          num_semantic_tokens=5, semantic_dim=3, steps=7, shift=5.0,
                          generator=torch.Generator().manual_seed(0), sem_target=sem_target)
    torch.testing.assert_close(x, x0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(sem, s0, rtol=1e-4, atol=1e-4)


def test_euler_sample_runs_the_model_with_guidance(tiny_dir):
    model = make_model(tiny_dir).eval()
    batch = make_batch()
    common = dict(source=batch["source"], num_semantic_tokens=65, semantic_dim=SEM_DIM, steps=3,
                  shift=5.0)
    x1, s1 = euler_sample(model, batch["text"], batch["text_mask"], batch["target"].shape,
                          generator=torch.Generator().manual_seed(0), **common)
    x2, _ = euler_sample(model, batch["text"], batch["text_mask"], batch["target"].shape,
                         generator=torch.Generator().manual_seed(0), guidance_scale=5.0,
                         negative_text=torch.zeros(B, 1, TEXT_DIM),
                         negative_mask=torch.ones(B, 1, dtype=torch.bool), **common)
    assert x1.shape == batch["target"].shape and s1.shape == (B, 65, SEM_DIM)
    assert torch.isfinite(x1).all() and torch.isfinite(x2).all() and not torch.allclose(x1, x2)


# ---------------------------------------------------------------- export
def test_export_round_trip_gives_equal_outputs(tiny_dir, tmp_path):
    model = make_model(tiny_dir, semantic_rope="shared")
    with torch.no_grad():  # move the new modules off their init so the round trip is not trivial
        model.type_embedding.normal_()
        for p in model.semantic_head.parameters():
            p.add_(0.1)
    model.save_exported(tmp_path / "export")
    loaded = SamaTransformer.from_exported(tmp_path / "export")
    assert loaded.cfg.semantic_rope == "shared" and loaded.cfg.semantic_dim == SEM_DIM
    batch = make_batch()
    t = torch.tensor([300.0, 700.0])
    with torch.no_grad():
        a = model(batch["target"], t, batch["text"], batch["text_mask"], batch["source"], batch["semantic"])
        b = loaded(batch["target"], t, batch["text"], batch["text_mask"], batch["source"], batch["semantic"])
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=0)
    # diffusers loads the base transformer on its own
    base = WanTransformer3DModel.from_pretrained(tmp_path / "export" / "transformer")
    for k, v in model.wan.state_dict().items():
        assert torch.equal(base.state_dict()[k], v), k
