"""Encode stage benchmarks; every figure is a ratio against a baseline measured in the same run.

CPU (default):
  1. decode + resize vs decode only, on the same real clips and frame plans (16 fps grid, up to 81
     frames, the 480p buckets): the resize to the bucket must not cost much (target >= 0.7x).
  2. the tiny random-weight encoders (tests / demo sizes): decoded samples -> encoded rows per
     second, and the VAE's share of it.
GPU (``--gpu``): the real-size Wan2.1 VAE (random weights: timing only) at 832x480x81, batched in
  bfloat16 vs a naive per-sample float32 call: frames/s and peak memory of each.

    python bench/bench_encode.py [--clips DIR] [--repeat 3]
    python bench/bench_encode.py --gpu [--batch 4] [--samples 4]
    python bench/bench_encode.py --gpu --device cpu --size 64x32 --frames 5 --fast-dtype float32  # smoke test
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _clips(arg: str | None) -> list[Path]:
    shared = REPO.parent / "shared" / "realclips" / "videos"
    root = Path(arg) if arg else (shared if shared.exists() else REPO / "demo" / "clips")
    return sorted(root.glob("*.mp4"))


def bench_decode_resize(clips: list[Path], repeat: int) -> dict:
    from pipeline.curate.config import EncodeConfig
    from stages.media.buckets import fit_to_bucket, nearest_bucket
    from stages.encode.decode import Video
    from stages.media.frames import frames_that_fit, plan_indices

    cfg = EncodeConfig()  # paper defaults: 81 frames at 16 fps, 480p buckets
    buckets = cfg.bucket_list()
    plans = []
    for path in clips:
        v = Video(str(path))
        fit = frames_that_fit(v.frames, v.fps, cfg.fps)
        n = min(cfg.num_frames, 4 * ((fit - 1) // 4) + 1)
        plans.append((path, plan_indices(v.frames, v.fps, cfg.fps, n, count=n)))

    def run(resize: bool) -> tuple[float, int]:
        t0, frames = time.perf_counter(), 0
        for path, idx in plans:
            got = Video(str(path)).read(idx)
            if resize:
                got = fit_to_bucket(got, nearest_bucket(got.shape[2], got.shape[1], buckets))
            frames += len(got)
        return time.perf_counter() - t0, frames

    run(True)  # warm the file cache and torchvision
    decode, both = [], []
    for _ in range(repeat):  # interleaved, so load on the machine hits both alike
        decode.append(run(False))
        both.append(run(True))
    frames = decode[0][1]
    d = frames / min(t for t, _ in decode)
    b = frames / min(t for t, _ in both)
    return {"clips": len(plans), "frames": frames, "decode_fps": d, "decode_resize_fps": b, "ratio": b / d}


def bench_tiny_encode(clips: list[Path], repeat: int) -> dict:
    import torch

    from pipeline.curate.config import load_config
    from stages.encode.core import encode_samples
    from stages.encode.decode import decode_sample
    from stages.encode.encoders import Encoders
    from pipeline.curate.demo.tiny_encoders import build_tiny_encoders

    with tempfile.TemporaryDirectory() as tmp:
        models = build_tiny_encoders(tmp)
        cfg = load_config(None, [f"encode.{k}={v}" for k, v in models.items()] + [
            "encode.target_area=16384", "encode.num_frames=9", "encode.fps=8", "encode.min_frames=5",
            "encode.device=cpu", "encode.batch_size=4"])
        enc = Encoders(cfg.encode)
        rows = [{"sample_id": f"ditto:{i:016x}", "dataset": "ditto", "modality": "video", "task": "edit",
                 "target_uri": str(p), "source_uri": str(p), "instruction": "Turn it into a watercolor."}
                for i, p in enumerate(clips[:4])]
        decoded = [decode_sample(r, cfg.encode, cfg.pretext, 0) for r in rows]
        decoded = [d for d in decoded if d.clips]
        encode_samples(decoded[:1], enc, cfg.encode, cfg.pretext, 0)  # warm-up
        clips_ = [c for d in decoded for c in d.clips.values()]
        anchors = [d.clips["target"][len(d.clips["target"]) // 2] for d in decoded]
        texts = [r["instruction"] for r in rows[:len(decoded)]]
        parts = {"whole": lambda: encode_samples(decoded, enc, cfg.encode, cfg.pretext, 0),
                 "vae": lambda: enc.vae_latents(clips_), "siglip": lambda: enc.semantic_tokens(anchors),
                 "text": lambda: enc.text_embeddings(texts)}
        best = {k: float("inf") for k in parts}
        for _ in range(repeat):
            for name, fn in parts.items():
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)
        frames = sum(len(c) for c in clips_)
        return {"samples": len(decoded), "frames": frames, "threads": torch.get_num_threads(),
                "samples_per_s": len(decoded) / best["whole"], "vae_frames_per_s": frames / best["vae"],
                "siglip_frames_per_s": len(anchors) / best["siglip"], "texts_per_s": len(texts) / best["text"]}


def bench_gpu_vae(device: str, size: str, frames: int, samples: int, batch: int, repeat: int,
                  fast_dtype: str = "bfloat16") -> dict:
    """Real-size Wan2.1 VAE (random weights): batched bf16 vs per-sample fp32."""
    import torch
    from diffusers import AutoencoderKLWan

    w, h = map(int, size.split("x"))
    dev = torch.device(device)
    torch.manual_seed(0)
    vae = AutoencoderKLWan().eval()  # Wan2.1's architecture (the class defaults), random weights
    x = torch.rand(samples, 3, frames, h, w) * 2 - 1

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def timed(model, dtype, bs):
        runs = []
        for r in range(repeat + 1):  # the first run warms up (cuDNN plans, allocator)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sync()
            t0 = time.perf_counter()
            with torch.inference_mode():
                for i in range(0, samples, bs):
                    model.encode(x[i:i + bs].to(dev, dtype)).latent_dist.mode()
            sync()
            if r:
                runs.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
        return samples * frames / statistics.median(runs), peak

    naive_fps, naive_mem = timed(vae.to(dev, torch.float32), torch.float32, 1)
    fast = getattr(torch, fast_dtype)
    fast_fps, fast_mem = timed(vae.to(dev, fast), fast, batch)
    return {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "size": f"{w}x{h}x{frames}",
            "samples": samples, "batch": batch, "naive_fp32_fps": naive_fps, "naive_peak_gib": naive_mem,
            "batched_bf16_fps": fast_fps, "batched_peak_gib": fast_mem, "speedup": fast_fps / naive_fps,
            "fast_dtype": fast_dtype}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", help="folder of .mp4 clips (default: ../shared/realclips/videos or demo/clips)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--gpu", action="store_true", help="the real-size VAE timing instead of the CPU benches")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", default="832x480")
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    # bfloat16 3D convolutions are ~100x slower than float32 on CPU: smoke-test there with float32
    ap.add_argument("--fast-dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--smoke", action="store_true", help="tiny N, seconds: the tests run it (tests/test_bench_smoke.py)")
    a = ap.parse_args()
    if a.smoke:  # one pass over two clips, CPU benches only
        a.repeat, a.gpu = 1, False
    if a.gpu:
        r = bench_gpu_vae(a.device, a.size, a.frames, a.samples, a.batch, a.repeat, a.fast_dtype)
        print(f"Wan2.1 VAE encode, random weights, {r['size']} on {r['device']}, {r['samples']} clips")
        print(f"  naive per-sample float32 : {r['naive_fp32_fps']:8.1f} frames/s, peak {r['naive_peak_gib']:.1f} GiB")
        print(f"  batched ({r['batch']}) {r['fast_dtype']:<9}: {r['batched_bf16_fps']:8.1f} frames/s, "
              f"peak {r['batched_peak_gib']:.1f} GiB")
        print(f"  speed-up {r['speedup']:.2f}x")
        return
    clips = _clips(a.clips)[:2] if a.smoke else _clips(a.clips)
    r = bench_decode_resize(clips, a.repeat)
    print(f"decode vs decode + resize to the 480p buckets: {r['clips']} clips, {r['frames']} frames "
          f"(16 fps grid, up to 81 frames)")
    print(f"  decode only     : {r['decode_fps']:7.1f} frames/s")
    print(f"  decode + resize : {r['decode_resize_fps']:7.1f} frames/s")
    print(f"  ratio {r['ratio']:.2f}x (target >= 0.70x) {'OK' if r['ratio'] >= 0.7 else 'BELOW TARGET'}")
    t = bench_tiny_encode(clips, a.repeat)
    print(f"tiny random encoders (demo size, {t['threads']} torch threads): {t['samples']} video pairs, "
          f"{t['frames']} frames")
    print(f"  encode_samples  : {t['samples_per_s']:7.2f} samples/s")
    print(f"  VAE alone       : {t['vae_frames_per_s']:7.1f} frames/s")
    print(f"  SigLIP alone    : {t['siglip_frames_per_s']:7.1f} anchor frames/s")
    print(f"  umT5 alone      : {t['texts_per_s']:7.1f} texts/s")


if __name__ == "__main__":
    main()
