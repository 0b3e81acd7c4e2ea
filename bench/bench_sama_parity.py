"""Official SAMA parity and the CPU training step of the official-preset model at Wan-1.3B size.

    python bench/bench_sama_parity.py [--fixture ../shared/sama_parity] [--layers 30] [--latent 2 8 8]

(a) Parity: the fixture's weights through the import path (sama.official), every forward case
    and the sampling run against the official code's tensors: max abs error of each (what
    `sama parity` prints), plus the same forward with diffusers' float32 timestep sinusoid instead
    of the official float64 one (``model.timestep_embedding_fp64``) as the in-run baseline.
(b) Step time: one forward + backward (no optimiser) of the official-preset SamaTransformer at
    Wan-1.3B width (dim 1536, 12 heads, ffn 8960, 30 blocks, 512 text tokens, SigLIP 1152 ->
    hidden 1024) on CPU, fp32, at a small latent grid (default 2x8x8: 32 target + 32 source + 65
    semantic tokens), without and with gradient checkpointing (the baseline is the first).
    Needs ~12 GB of memory at 30 blocks (weights + gradients, fp32); ``--layers`` lowers it.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import torch  # noqa: E402

from bench_loader import WAN_1_3B  # noqa: E402
from sama.config import ModelConfig  # noqa: E402
from sama.model import SamaTransformer  # noqa: E402


def parity(fixture: Path) -> None:
    from sama.parity import run

    torch.use_deterministic_algorithms(True)
    report = run(fixture)
    print(f"(a) parity against {fixture} (float32, CPU; tolerances forward 1e-4, sampling 5e-4)")
    for name, err, tol in report["checks"]:
        print(f"    {name:34s} max abs err {err:.3e}   tol {tol:.0e}")
    print(f"    all within tolerance: {report['ok']}")

    # baseline in the same run: the same checks with the float32 (diffusers) timestep sinusoid
    fp32 = {n: e for n, e, _ in run(fixture, timestep_embedding_fp64=False)["checks"]}
    fp64 = {n: e for n, e, _ in report["checks"]}
    for k in sorted(int(m[1]) for n in fp64 if (m := re.fullmatch(r"case(\d+) pred_target", n))):
        et, es = fp32[f"case{k} pred_target"], fp32[f"case{k} pred_sem"]
        print(f"    case{k}: float32 sinusoid {et:.3e} / {es:.3e} (target / sem) vs float64 "
              f"{fp64[f'case{k} pred_target']:.3e} / {fp64[f'case{k} pred_sem']:.3e}: "
              f"x{et / max(fp64[f'case{k} pred_target'], 1e-12):.1f} on the target")
    torch.use_deterministic_algorithms(False)


def step_time(layers: int, latent: tuple[int, int, int], repeats: int) -> None:
    arch = dict(WAN_1_3B, num_layers=layers)
    t, h, w = latent
    batch = {"lat": torch.randn(1, 16, t, h, w), "src": torch.randn(1, 16, t, h, w),
             "sem": torch.randn(1, 65, 1152), "text": torch.randn(1, 20, 4096)}
    mask = torch.ones(1, 20, dtype=torch.bool)
    tokens = 2 * t * (h // 2) * (w // 2) + 65
    print(f"(b) forward+backward, official preset at Wan-1.3B width, {layers} blocks, latent {t}x{h}x{w} "
          f"({tokens} tokens + 512 text), fp32, {torch.get_num_threads()} threads")
    results = {}
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = SamaTransformer.from_config(ModelConfig(tiny=arch, preset="official", gradient_checkpointing=ckpt))
        model.train()
        n = sum(p.numel() for p in model.parameters())
        times = []
        for i in range(repeats + 1):  # the first is warm-up
            start = time.perf_counter()
            v, s = model(batch["lat"], torch.tensor([500.0]), batch["text"], mask, batch["src"], batch["sem"])
            (v.float().pow(2).mean() + s.float().abs().mean()).backward()
            times.append(time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
        results[ckpt] = min(times[1:])
        print(f"    gradient_checkpointing {str(ckpt).lower():5s}: {results[ckpt]:.2f} s/step "
              f"({n / 1e9:.2f}B parameters; warm-up {times[0]:.2f} s)")
        del model
    print(f"    checkpointing / plain: x{results[True] / results[False]:.2f} step time")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixture", type=Path, default=REPO.parent / "shared" / "sama_parity")
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--latent", type=int, nargs=3, default=(2, 8, 8), metavar=("T", "H", "W"))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--skip-step", action="store_true", help="only the parity part")
    ap.add_argument("--smoke", action="store_true", help="tiny N, seconds: the tests run it (tests/test_bench_smoke.py)")
    args = ap.parse_args()
    if args.smoke:  # a 2-layer step, one repeat
        args.layers, args.repeats = 2, 1
    if not (args.fixture / "cases.safetensors").is_file():
        alt = Path("/work/shared/sama_parity")
        args.fixture = alt if (alt / "cases.safetensors").is_file() else args.fixture
    if (args.fixture / "cases.safetensors").is_file():
        parity(args.fixture)
    else:
        print(f"(a) skipped: no fixture at {args.fixture}")
    if not args.skip_step:
        step_time(args.layers, tuple(args.latent), args.repeats)


if __name__ == "__main__":
    main()
