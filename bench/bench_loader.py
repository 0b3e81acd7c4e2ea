"""Benchmark the trainer's shard loader against what the model consumes, and (``--gpu``) the
training step of a Wan-1.3B-size SAMA transformer at 480p, 81 frames, in context.

    python bench/bench_loader.py [--workdir W] [--batches N] [--size demo|recipe]
    python bench/bench_loader.py --gpu [--steps N]          # needs a CUDA device

CPU (default): over one shard set (``--workdir``: a curation workdir with shards, e.g. runs/demo;
default: a generated contract-format set at the demo's latent size, 128x128 pixels, 9 frames, or
with ``--size recipe`` at the recipe's, 832x480 pixels, 81 frames),
  (a) raw read: plain webdataset tar -> samples, without and with the safetensors decode (the
      bare loop; it reads each sample once, while the stage-0 streams "video" and "pretext" both
      read the clip shards and keep their own variants);
  (b) ``sama.data.ShardBatches`` through a DataLoader with 0 / 1 / 2 workers: decoded, batched;
  (c) the tiny model's training step (forward, backward, AdamW, EMA) on those batches.
Prints samples/s and the ratios loader/raw and loader/consumption (> 1: the loader keeps up), and
for (b) the CPU ms per sample of the trainer's process and of its workers (/proc, user + system):
on a loaded 2-core box the wall rates follow the scheduler's share more than the code, and the
CPU per sample is what scales with free cores (a GPU node with 16+ cores per GPU).

Where a worker's time went (recipe size, 2-core box at load 4-12): a fresh shared-memory segment
per batch. Allocating a video batch's 34 MB segment and writing it cost ~48-64 ms (the kernel
zeroes and maps tmpfs pages one fault at a time), against 5-9 ms to fill reused private memory, so
a worker spent 21-30 ms per sample where the trainer's own process spends 13-20. Each worker now
keeps a few segments and reuses one once the trainer has freed the batch in it
(``sama.batch_memory.SlotPool``): 8-11 ms per sample in a worker (docs/scaling.md has the before/after table).

At the demo's size (a batch ~180 KB, ~3 ms to make) the fixed cost of handing a batch over was
left: the segment's file descriptor fetched from the worker over multiprocessing's resource sharer
(a socket connection, authenticated, per batch: ~1 ms of the two processes' CPU) and the
DataLoader's own queue round trip (~0.2 ms in each process). A segment now crosses once and later
batches in it carry its name, and ``data.batches_per_transfer`` (``--transfer``; 4 here at the
demo's size, 1 at the recipe's) hands several batches over at once, dealt out in the same order.

GPU (``--gpu``): random weights, bf16 autocast, fp32 master weights, AdamW, batch 1 of an in-context
832x480x81 pair (2 x 32,760 latent tokens + 65 semantic tokens, 512 text tokens), with and without
gradient checkpointing: step time, tokens/s, MFU against the GPU's dense bf16 peak, peak memory.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import torch  # noqa: E402

from sama.config import DataConfig, FlowConfig, ModelConfig  # noqa: E402

STREAMS = {
    "image": {"purpose": "stage0", "modality": "image", "variants": ["edit"], "weight": 1.0},
    "video": {"purpose": "stage0", "modality": "video", "variants": ["none"], "weight": 0.1},
    "pretext": {"purpose": "stage0", "modality": "video", "variants": ["cube", "speed", "tube"], "weight": 0.9},
}


# ---------------------------------------------------------------- CPU: loader vs consumption
# (image W, H), (video W, H, frames), samples per group: the demo's latent size, and the recipe's
# (480p, 81 frames: a [16, 21, 60, 104] latent per clip, ~4 MB in bf16 and 8 MB as float32).
SIZES = {"demo": ((128, 128), (128, 128, 9), (96, 160), 16),
         "recipe": ((832, 480), (832, 480, 81), (16, 24), 4)}
# data.batches_per_transfer: a demo batch (~180 KB) costs ~3 ms to make and ~0.5 ms of each
# process's CPU to hand over, so 4 share one hand-over; a recipe batch (34 MB, ~40 ms) needs none.
TRANSFER = {"demo": 4, "recipe": 1}


def make_shards(root: Path, size: str = "demo") -> Path:
    from _sama_fixtures import Group, write_shard_set

    image, video, (n_image, n_video), per_shard = SIZES[size]
    groups = [Group("nhr_edit", "stage0", "image", (*image, 1), n_image),
              Group("koala", "stage0", "video", video, n_video, ("none", "cube", "speed", "tube"))]
    return write_shard_set(root, groups, samples_per_shard=per_shard)


def data_cfg(workdir: Path, workers: int, transfer: int = 1) -> DataConfig:
    return DataConfig(workdir=workdir, streams=STREAMS, batch_size={"image": 4, "video": 2}, prefetch_factor=4,
                      shuffle_buffer={"image": 32, "video": 16}, chunk_shards=2, num_workers=workers,
                      batches_per_transfer=transfer)


def raw_read(workdir: Path, decode: bool, seconds: float = 3.0) -> float:
    """samples/s of plain webdataset reading every shard in a loop: bytes only, or bytes + the
    safetensors members decoded (the bare loop a loader cannot beat)."""
    import safetensors.torch
    import webdataset as wds

    from sama.data import read_shard_index

    urls = [s.path for s in read_shard_index(workdir)]
    stages = [wds.SimpleShardList(urls), wds.tarfile_to_samples()]
    if decode:
        stages.append(wds.decode(wds.handle_extension("safetensors", safetensors.torch.load)))
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in wds.DataPipeline(*stages):
            n += 1
    return n / (time.perf_counter() - t0)


def _cpu_s(pid: int) -> float:
    """user + system CPU seconds of one process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loader_rate(workdir: Path, workers: int, batches: int, keep: bool,
                transfer: int = 1) -> tuple[float, dict, list[dict]]:
    """samples/s through a DataLoader, the CPU ms per sample of the trainer's process and of the
    workers (summed), and (``keep``) 32 batches for the train step, taken after the timing: a
    trainer holds one or two batches, and batches kept while timing make every allocation fresh
    memory (and keep a worker's shared-memory segments busy)."""
    from sama.batch_memory import handed_over
    from sama.data import ShardBatches, loader_prefetch

    cfg = data_cfg(workdir, workers, transfer)
    loader = torch.utils.data.DataLoader(ShardBatches(cfg, seed=0), batch_size=None, num_workers=workers,
                                         prefetch_factor=loader_prefetch(cfg) if workers else None)
    items = iter(loader)
    it = handed_over(items, max(1, workers))
    for _ in range(2 * max(1, workers) * transfer):  # worker start-up is not throughput
        next(it)
    pids = [os.getpid()] + [w.pid for w in getattr(items, "_workers", [])]
    cpu0 = [_cpu_s(p) for p in pids]
    n, t0 = 0, time.perf_counter()
    for batch in itertools.islice(it, batches):
        n += batch["target"].shape[0]
        del batch
    rate = n / (time.perf_counter() - t0)
    cpu = [_cpu_s(p) - c for p, c in zip(pids, cpu0)]
    kept = [next(it) for _ in range(32)] if keep else []
    return rate, {"main": 1e3 * cpu[0] / n, "workers": 1e3 * sum(cpu[1:]) / n}, kept


def train_rate(batches: list[dict], steps: int) -> float:
    from sama.ema import EMA
    from sama.flow import training_loss
    from sama.model import SamaTransformer
    from sama.tiny import tiny_model_config

    torch.manual_seed(0)
    model = SamaTransformer.from_config(ModelConfig(tiny=tiny_model_config(), semantic_dim=32, text_len=64))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ema = EMA(model, 0.9998)
    flow = FlowConfig()
    gen = torch.Generator().manual_seed(0)

    def step(batch):
        out = training_loss(model, batch, flow, gen)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(model)
        return batch["target"].shape[0]

    for b in batches[:3]:
        step(b)
    n, t0 = 0, time.perf_counter()
    for b in itertools.islice(itertools.cycle(batches), steps):
        n += step(b)
    return n / (time.perf_counter() - t0)


def _scaling(cpu: dict) -> None:
    """What scales with cores to spare (a GPU node): a worker's CPU per sample against the in-process
    loader's, and the trainer's process's own share that the workers cannot take."""
    per_worker = cpu[0]["main"] / cpu[2]["workers"]
    print(f"CPU per sample: a worker makes a sample for x{1 / per_worker:.2f} the CPU of the trainer's "
          f"process (per-worker rate x{per_worker:.2f} of 0 workers); the trainer's process keeps "
          f"{cpu[2]['main']:.2f} ms/sample with 2 workers, so W free cores give up to "
          f"min(W x{per_worker:.2f}, x{cpu[0]['main'] / cpu[2]['main']:.0f}) the 0-worker rate")


def cpu_bench(args) -> None:
    torch.set_num_threads(1)  # the trainer's tiny configs pin one thread; the loader has the other core
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir) if args.workdir else make_shards(Path(tmp), args.size)
        print(f"shards: {workdir} | data.batches_per_transfer {args.transfer}")
        print(f"(a) webdataset read, no decode:           {raw_read(workdir, False):8.1f} samples/s")
        raw = raw_read(workdir, True)
        print(f"(a') webdataset read + safetensors decode: {raw:8.1f} samples/s (bare loop)")
        rates, cpu, kept = {}, {}, None
        for workers in (0, 1, 2):
            rates[workers], cpu[workers], got = loader_rate(workdir, workers, args.batches, keep=workers == 0,
                                                            transfer=args.transfer)
            kept = kept or got
            print(f"(b) ShardBatches, {workers} worker(s):            {rates[workers]:8.1f} samples/s "
                  f"(x{rates[workers] / raw:.2f} of (a')) | CPU ms/sample: trainer's process "
                  f"{cpu[workers]['main']:.2f}, workers {cpu[workers]['workers']:.2f}")
        print(f"workers: 2 workers / 0 workers x{rates[2] / rates[0]:.2f} (issue: >= 1.5), best / bare loop "
              f"x{max(rates.values()) / raw:.2f} (issue: >= 0.8) | load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores")
        if not (cpu[2]["workers"] and cpu[2]["main"]):
            print("CPU per sample: too few batches to measure (clock ticks)")
        else:
            _scaling(cpu)
        if args.size != "demo":
            return  # the tiny model trains at the demo's size only
        consume = train_rate(kept, args.steps)
        print(f"(c) tiny model train step (1 thread):     {consume:8.1f} samples/s")
        best = max(rates.values())
        print(f"loader / consumption: 0 workers x{rates[0] / consume:.1f}, 1 worker x{rates[1] / consume:.1f}, "
              f"2 workers x{rates[2] / consume:.1f} (best {best:.0f} vs {consume:.0f} samples/s)")


# ---------------------------------------------------------------- GPU: Wan-1.3B-size step
WAN_1_3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}  # dense, SXM figures


def step_flops(cfg: dict, tokens: int, text: int) -> float:
    """Model FLOPs of one training step (forward + backward = 3x forward), recomputation excluded."""
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    per_block = (2 * tokens * d * d * 4            # self-attention q, k, v, out
                 + 2 * 2 * tokens * tokens * d       # QK^T and AV
                 + 2 * tokens * d * d * 2            # cross-attention q, out
                 + 2 * text * d * d * 2              # cross-attention k, v over the text
                 + 2 * 2 * tokens * text * d         # cross-attention scores and values
                 + 2 * tokens * d * cfg["ffn_dim"] * 2)  # FFN in and out
    return 3 * cfg["num_layers"] * per_block


def gpu_step(model_cfg: ModelConfig, latent: tuple[int, ...], text_len: int, steps: int, device: str,
             dtype=torch.bfloat16) -> dict:
    from sama.flow import training_loss
    from sama.model import SamaTransformer

    torch.manual_seed(0)
    model = SamaTransformer.from_config(model_cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=device.startswith("cuda"))
    tiny = model_cfg.tiny
    batch = {"target": torch.randn(latent, device=device), "source": torch.randn(latent, device=device),
             "semantic": torch.randn(latent[0], model_cfg.semantic_tokens, model_cfg.semantic_dim, device=device),
             "text": torch.randn(latent[0], text_len, tiny["text_dim"], device=device),
             "text_mask": torch.ones(latent[0], text_len, dtype=torch.bool, device=device)}
    gen = torch.Generator(device=device).manual_seed(0)
    cuda = device.startswith("cuda")

    def step():
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=cuda):
            out = training_loss(model, batch, FlowConfig(), gen)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    step()  # warm-up (allocations, kernels)
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    pt, ph, pw = tiny["patch_size"]
    per_latent = latent[2] // pt * (latent[3] // ph) * (latent[4] // pw)
    tokens = latent[0] * (2 * per_latent + model_cfg.semantic_tokens)
    flops = step_flops(tiny, tokens // latent[0], model_cfg.text_len) * latent[0]
    return {"step_s": dt, "tokens": tokens, "tokens_per_s": tokens / dt, "tflops": flops / dt / 1e12,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
            "params": sum(p.numel() for p in model.parameters())}


def gpu_bench(args) -> None:
    if not torch.cuda.is_available():
        sys.exit("--gpu: no CUDA device visible")
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    print(f"device: {name} (dense bf16 peak {peak / 1e12 if peak else '?'} TFLOP/s)")
    latent = (1, 16, 21, 60, 104)  # 832x480, 81 frames
    for ckpt in (True, False):
        cfg = ModelConfig(tiny=WAN_1_3B, semantic_dim=1152, text_len=512, gradient_checkpointing=ckpt)
        try:
            r = gpu_step(cfg, latent, 512, args.steps, "cuda")
        except torch.OutOfMemoryError:
            print(f"gradient checkpointing {ckpt!s:5}: out of memory")
            torch.cuda.empty_cache()
            continue
        mfu = f"{r['tflops'] * 1e12 / peak:.1%}" if peak else "?"
        print(f"gradient checkpointing {ckpt!s:5}: {r['step_s']:.2f} s/step | {r['tokens']:,} tokens | "
              f"{r['tokens_per_s']:,.0f} tok/s | {r['tflops']:.0f} TFLOP/s model, MFU {mfu} | peak "
              f"{r['peak_gib']:.1f} GiB | {r['params'] / 1e9:.2f}B params")
        torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", help="curation workdir with shards (default: a generated set)")
    ap.add_argument("--batches", type=int, default=60, help="loader batches timed")
    ap.add_argument("--steps", type=int, default=None, help="train steps timed (CPU 40, GPU 5)")
    ap.add_argument("--size", choices=sorted(SIZES), default="demo",
                    help="tensor sizes of the generated shards: the demo's or the recipe's (480p, 81 frames)")
    ap.add_argument("--transfer", type=int, default=None,
                    help="data.batches_per_transfer (default: 4 at the demo's size, 1 at the recipe's)")
    ap.add_argument("--gpu", action="store_true", help="the Wan-1.3B-size GPU step instead")
    ap.add_argument("--smoke", action="store_true", help="tiny N, seconds: the tests run it (tests/test_bench_smoke.py)")
    args = ap.parse_args()
    args.transfer = args.transfer or TRANSFER[args.size]
    if args.smoke:  # CPU, a handful of batches and steps
        args.gpu, args.batches, args.steps = False, 3, 2
    if args.gpu:
        args.steps = args.steps or 5
        gpu_bench(args)
    else:
        args.steps = args.steps or 40
        cpu_bench(args)


if __name__ == "__main__":
    main()
