"""Flow matching in Wan's convention, the SAMA training loss and an Euler sampler.

Convention (Wan2.1 / diffusers FlowMatchEulerDiscreteScheduler): ``x_t = (1 - sigma) x0 + sigma
noise``; sigma = 1 is pure noise, sigma = 0 the data; the model predicts the velocity
``noise - x0`` and sees the timestep ``sigma * num_train_timesteps``. The timestep shift
``sigma' = shift s / (1 + (shift - 1) s)`` moves sampling toward the noisy end for large inputs.

Semantic Anchoring: the SigLIP tokens are noised with the target's sigma (their own noise), fed as
the semantic slice, and the head's output is compared with ``flow.sem_target`` by L1. The source
latents stay clean. ``L = L_FM + lambda_sem * L_sem``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sama.config import FlowConfig


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """Wan's timestep shift; maps [0, 1] onto itself monotonically, fixes 0 and 1."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def _device(generator: torch.Generator | None, fallback: torch.device | str = "cpu") -> torch.device:
    return generator.device if generator is not None else torch.device(fallback)


def sample_sigmas(batch: int, flow_cfg: FlowConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """One training sigma per sample [B] (float32, on the generator's device), shifted."""
    dev = _device(generator)
    if flow_cfg.timestep_sampling == "grid":  # DiffSynth: one of its 1000 shifted training sigmas
        grid = official_sigmas(flow_cfg.num_train_timesteps, flow_cfg.shift)[:-1].to(dev)
        return grid[torch.randint(0, grid.numel(), (batch,), generator=generator, device=dev)]
    if flow_cfg.timestep_sampling == "uniform":
        s = torch.rand(batch, generator=generator, device=dev)
    else:
        s = torch.sigmoid(torch.randn(batch, generator=generator, device=dev) * flow_cfg.logit_std
                          + flow_cfg.logit_mean)
    return shift_sigmas(s, flow_cfg.shift)


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Noise drawn on the generator's device (reproducible whatever device x is on)."""
    return torch.randn(x.shape, generator=generator, device=_device(generator, x.device),
                       dtype=torch.float32).to(x.device)


def semantic_space(tokens: torch.Tensor, sem_target: str) -> torch.Tensor:
    """The space the semantic tokens are noised and predicted in (float32)."""
    tokens = tokens.float()
    if sem_target == "normalized_tokens":
        return F.layer_norm(tokens, tokens.shape[-1:])
    return tokens


def training_loss(model, batch: dict, flow_cfg: FlowConfig,
                  generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Flow-matching + Semantic Anchoring loss of one batch.

    ``batch``: target [B,16,T,h,w], source same or None, semantic [B,S,Dsem] or None, text
    [B,L,Dt], text_mask [B,L] bool. Returns loss (with grad), l_fm, l_sem (detached) and sigma.
    Random draws, in order: sigmas, target noise, semantic noise, all from ``generator``.
    """
    x0 = batch["target"].float()
    b = x0.shape[0]
    sigma = sample_sigmas(b, flow_cfg, generator).to(x0.device)
    noise = _randn_like(x0, generator)
    s = sigma.view(b, 1, 1, 1, 1)
    x_t = (1 - s) * x0 + s * noise
    v_target = noise - x0

    sem_t = sem_goal = None
    semantic = batch.get("semantic")
    if semantic is not None:
        sem0 = semantic_space(semantic, flow_cfg.sem_target)
        sem_noise = _randn_like(sem0, generator)
        s3 = sigma.view(b, 1, 1)
        sem_t = (1 - s3) * sem0 + s3 * sem_noise
        sem_goal = sem_noise - sem0 if flow_cfg.sem_target == "velocity" else sem0

    source = batch.get("source")
    v_pred, sem_pred = model(x_t, sigma * flow_cfg.num_train_timesteps, batch["text"], batch["text_mask"],
                             source.float() if source is not None else None, sem_t)
    if flow_cfg.loss_weighting == "diffsynth":
        per_sample = F.mse_loss(v_pred.float(), v_target, reduction="none").flatten(1).mean(1)
        l_fm = (per_sample * diffsynth_weight(sigma, flow_cfg)).mean()
    else:
        l_fm = F.mse_loss(v_pred.float(), v_target)
    if sem_pred is not None:
        l_sem = F.l1_loss(sem_pred.float(), sem_goal)
        loss = l_fm + flow_cfg.lambda_sem * l_sem
    else:
        l_sem = torch.zeros((), device=l_fm.device)
        loss = l_fm
    return {"loss": loss, "l_fm": l_fm.detach(), "l_sem": l_sem.detach(), "sigma": sigma.detach()}


def sampling_sigmas(steps: int, shift: float) -> torch.Tensor:
    """steps + 1 shifted sigmas from 1 (noise) down to 0, float64."""
    return shift_sigmas(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift)


def official_sigmas(steps: int, shift: float) -> torch.Tensor:
    """steps + 1 sigmas as the official sampler computes them (DiffSynth ``FlowMatchScheduler``
    with sigma_min 0 and extra_one_step: ``linspace(1, 0, steps + 1)[:-1]`` shifted, all in
    float32), then the final 0 its ``step`` uses after the last step."""
    s = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float32)[:-1]
    s = shift * s / (1 + (shift - 1) * s)
    return torch.cat([s, torch.zeros(1)])


def diffsynth_training_weights(shift: float, num_train_timesteps: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps, weights) of DiffSynth's training grid: ``set_timesteps(1000, training=True)`` of
    the Wan scheduler (shifted sigmas * 1000) and its weight exp(-2((t - 500)/1000)^2), shifted to
    a minimum of 0 and scaled to a mean of 1 over the grid."""
    t = official_sigmas(num_train_timesteps, shift)[:-1] * num_train_timesteps
    y = torch.exp(-2 * ((t - num_train_timesteps / 2) / num_train_timesteps) ** 2)
    y = y - y.min()
    return t, y * (num_train_timesteps / y.sum())


def diffsynth_weight(sigma: torch.Tensor, flow_cfg: FlowConfig) -> torch.Tensor:
    """DiffSynth's training weight of each sample: that of the grid timestep nearest sigma * T."""
    grid, weights = diffsynth_training_weights(flow_cfg.shift, flow_cfg.num_train_timesteps)
    t = (sigma.float() * flow_cfg.num_train_timesteps).cpu()
    return weights[(grid[None] - t[:, None]).abs().argmin(1)].to(sigma.device)


@torch.no_grad()
def euler_sample(model, text: torch.Tensor, text_mask: torch.Tensor, latent_shape: tuple[int, ...], *,
                 source: torch.Tensor | None = None, num_semantic_tokens: int = 0,
                 semantic_dim: int | None = None, steps: int = 50, shift: float = 5.0,
                 generator: torch.Generator | None = None, sem_target: str = "clean_tokens",
                 num_train_timesteps: int = 1000, guidance_scale: float = 1.0,
                 negative_text: torch.Tensor | None = None, negative_mask: torch.Tensor | None = None,
                 callback=None, sigmas: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                 semantic_noise: torch.Tensor | None = None,
                 round_timesteps_bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Integrate the flow from noise to data with Euler steps over the target (and semantic) tokens.

    ``latent_shape`` [B, 16, T, h, w]. The semantic tokens start as noise and follow the velocity
    implied by the head (for clean/normalized targets ``(x_t - x0_pred) / sigma``). With
    ``guidance_scale`` > 1, classifier-free guidance against ``negative_text`` (Wan's sampler uses
    5.0 and a negative prompt). ``sigmas`` (steps + 1, ending at 0) replaces the default schedule
    (``official_sigmas`` is the official one); ``noise`` / ``semantic_noise`` replace the initial
    draws; ``round_timesteps_bf16`` feeds the model bf16-rounded timesteps as the released bf16
    pipeline does (the Euler steps keep the exact sigmas). Returns (latents, semantic tokens or
    None), float32.
    """
    device = text.device
    if noise is None:
        noise = torch.randn(latent_shape, generator=generator, device=_device(generator, device))
    x = noise.float().to(device)
    sem = None
    if num_semantic_tokens:
        if semantic_noise is None:
            if semantic_dim is None:
                raise ValueError("euler_sample: semantic_dim is needed with num_semantic_tokens")
            semantic_noise = torch.randn((latent_shape[0], num_semantic_tokens, semantic_dim),
                                         generator=generator, device=_device(generator, device))
        sem = semantic_noise.float().to(device)
    if guidance_scale != 1.0 and negative_text is None:
        raise ValueError("euler_sample: guidance_scale != 1 needs negative_text / negative_mask")
    sigmas = (sampling_sigmas(steps, shift) if sigmas is None else sigmas).tolist()
    if len(sigmas) != steps + 1:
        raise ValueError(f"euler_sample: {len(sigmas)} sigmas for {steps} steps (need steps + 1)")
    for i in range(steps):
        s, s_next = sigmas[i], sigmas[i + 1]
        # sigma * 1000 in float32, as the official scheduler's timesteps are
        t = torch.full((latent_shape[0],), s, device=device, dtype=torch.float32) * num_train_timesteps
        if round_timesteps_bf16:
            t = t.bfloat16().float()
        v, sem_pred = model(x, t, text, text_mask, source, sem)
        if guidance_scale != 1.0:
            v_neg, sem_neg = model(x, t, negative_text, negative_mask, source, sem)
            v = v_neg + guidance_scale * (v - v_neg)
            if sem_pred is not None:
                sem_pred = sem_neg + guidance_scale * (sem_pred - sem_neg)
        x = x + (s_next - s) * v.float()
        if sem is not None and sem_pred is not None:
            sem_pred = sem_pred.float()
            v_sem = sem_pred if sem_target == "velocity" else (sem - sem_pred) / s
            sem = sem + (s_next - s) * v_sem
        if callback is not None:
            callback(i, steps)
    return x, sem
