"""``sama parity --fixture DIR``: check our model and sampler against official-code outputs.

A fixture directory (the format of ``../shared/sama_parity/``): ``model.safetensors`` (a model's
state dict under the official key names), ``config.json`` (the official ``WanModel`` arguments
under ``wan_model``) and ``cases.safetensors`` (float32 tensors: forward cases ``caseK_*``, a
sampling run ``sample_*``, optionally the 50-step schedule ``sched50_*``; header metadata ``json``
with the sampling settings). The model is loaded through the import path (``sama.official``,
the fixture being both the base in the original Wan2.1 layout and the SAMA file), nothing is read
by hand, and every size comes from the files, so a user checks any conversion with it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

FORWARD_TOL = 1e-4
SAMPLING_TOL = 5e-4


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise ValueError(f"shape {tuple(a.shape)} against the reference's {tuple(b.shape)}")
    return (a.float() - b.float()).abs().max().item()


def _ones(text: torch.Tensor) -> torch.Tensor:
    # the fixture's contexts are already padded with zero rows (the official prompter): no mask
    return torch.ones(text.shape[:2], dtype=torch.bool)


class _Recorder(torch.nn.Module):
    """Calls the model and keeps every output (the sampler's positive/negative calls per step)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, *args):
        out = self.model(*args)
        self.calls.append(out)
        return out


def run(fixture: str | Path, forward_tol: float = FORWARD_TOL, sampling_tol: float = SAMPLING_TOL,
        **model_fields) -> dict:
    """{"checks": [(name, max abs error, tolerance)], "ok": bool} for the fixture (CPU, float32).
    ``model_fields`` override ModelConfig fields of the loaded model (a benchmark's baseline)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from sama.flow import euler_sample, official_sigmas
    from sama.official import load_official

    fixture = Path(fixture).expanduser()
    files = [fixture / n for n in ("model.safetensors", "config.json", "cases.safetensors")]
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        raise FileNotFoundError(f"--fixture {fixture}: missing {absent}")
    cases = load_file(fixture / "cases.safetensors")
    with safe_open(str(fixture / "cases.safetensors"), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("json", "{}"))
    pipeline = json.loads((fixture / "config.json").read_text()).get("pipeline", {})
    text_len = int(pipeline.get("text_len", 512))
    torch.manual_seed(0)
    model = load_official(fixture / "model.safetensors", fixture,
                          **{"text_len": text_len, **model_fields}).float().eval()
    checks = []

    def check(name, ours, ref, tol):
        checks.append((name, _max_abs(ours, ref), tol))

    ids = sorted({int(m[1]) for k in cases if (m := re.fullmatch(r"case(\d+)_pred_target", k))})
    with torch.no_grad():
        for k in ids:
            c = {n[len(f"case{k}_"):]: v for n, v in cases.items() if n.startswith(f"case{k}_")}
            _fit_semantic(model, c["sem_latents"].shape[1])
            check(f"case{k} semantic tokens", model.semantic_embed(c["sem_latents"]), c["sem_tokens_in"], forward_tol)
            v, s = model(c["target_latents"], c["timestep"], c["context"], _ones(c["context"]),
                         c["source_latents"], c["sem_latents"])
            check(f"case{k} pred_target", v, c["pred_target"], forward_tol)
            check(f"case{k} pred_sem", s, c["pred_sem"], forward_tol)

    if "sample_final_latents" in cases:
        sampling = meta.get("sampling", {})
        steps = int(sampling.get("steps", cases["sample_sigmas"].numel()))
        shift = float(sampling.get("shift", 5.0))
        sigmas = official_sigmas(steps, shift)
        check("sample sigmas", sigmas[:-1], cases["sample_sigmas"], 0.0)
        if "sched50_sigmas" in cases:
            s50 = official_sigmas(50, shift)[:-1]
            check("sched50 sigmas", s50, cases["sched50_sigmas"], 0.0)
            check("sched50 timesteps", s50 * 1000, cases["sched50_timesteps"], 0.0)
            check("sched50 timesteps bf16", (s50 * 1000).bfloat16().float(), cases["sched50_timesteps_bf16"], 0.0)
        pos, neg = cases["sample_context_pos"], cases["sample_context_neg"]
        noise_sem = cases["sample_noise_sem"]
        _fit_semantic(model, noise_sem.shape[1])
        rec = _Recorder(model)
        x, sem = euler_sample(
            rec, pos, _ones(pos), tuple(cases["sample_noise_latents"].shape),
            source=cases["sample_source_latents"], num_semantic_tokens=noise_sem.shape[1],
            semantic_dim=noise_sem.shape[2], steps=steps, sigmas=sigmas,
            guidance_scale=float(sampling.get("cfg_scale", 5.0)), negative_text=neg, negative_mask=_ones(neg),
            noise=cases["sample_noise_latents"], semantic_noise=noise_sem, sem_target="velocity")
        for i in range(steps):
            (tp, sp), (tn, sn) = rec.calls[2 * i], rec.calls[2 * i + 1]
            for name, ours in (("pred_target_pos", tp), ("pred_target_neg", tn), ("pred_sem_pos", sp),
                               ("pred_sem_neg", sn)):
                key = f"sample_step{i}_{name}"
                if key in cases:
                    check(f"sample step{i} {name}", ours, cases[key], sampling_tol)
        check("sample final_latents", x, cases["sample_final_latents"], sampling_tol)
        if "sample_final_sem_latents" in cases:
            check("sample final_sem_latents", sem, cases["sample_final_sem_latents"], sampling_tol)
    if not checks:
        raise ValueError(f"--fixture {fixture}: cases.safetensors holds no caseK_* or sample_* tensors")
    return {"checks": checks, "ok": all(err <= tol for _, err, tol in checks), "fixture": str(fixture)}


def _fit_semantic(model, n_tokens: int) -> None:
    """The semantic token count is the fixture's (the official code only fixes N = 65 at inference):
    one anchor of n_tokens - 1 pooled tokens + 1 global when that is a square, else n globals."""
    g = int(round((n_tokens - 1) ** 0.5))
    if g >= 1 and g * g + 1 == n_tokens:
        grid, extra = g, 1
    else:
        grid, extra = 1, n_tokens - 1
    model.cfg = model.cfg.model_copy(update={"semantic_grid": grid, "semantic_global_tokens": extra,
                                             "anchor_frames": 1})
