"""`sama train`: one loop for Stage 0 (factorized pre-training) and Stage 1 (SFT) on the shards.

Everything that varies is in the config (configs/train/*.yaml, sama/config.py); the loop is:

    batches (sama.data) -> flow-matching + Semantic Anchoring loss (sama.flow) -> backward over
    grad_accum micro-batches -> grad clip -> NaN/inf guard -> AdamW step -> EMA -> log -> checkpoint

Run alone (one process, CPU or one GPU) or under torchrun (DDP or FSDP2, sama.dist). Every random
draw is a function of the data position (batch order, the noise of each batch), so a run resumed
from a checkpoint repeats the uninterrupted run's losses bit for bit.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from manifests.io import atomic_write_bytes, atomic_write_json
from sama import checkpoint, dist
from sama.batch_memory import handed_over
from sama.config import ConfigError, OptimConfig, TrainerConfig
from sama.data import LoaderPosition, ShardBatches, batch_noise_seed, loader_prefetch
from sama.ema import EMA
from sama.flow import training_loss
from sama.model import SamaTransformer

TENSOR_KEYS = ("target", "source", "semantic", "text", "text_mask")


def lr_at(step: int, optim: OptimConfig, max_steps: int) -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up, then constant or cosine."""
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return optim.lr
    progress = (step - optim.warmup_steps) / max(1, max_steps - optim.warmup_steps)
    floor = optim.min_lr_ratio
    return optim.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def batch_tokens(batch: dict, patch: tuple[int, int, int]) -> int:
    """Tokens the transformer sees for one batch: target (+ source) patches + semantic tokens."""
    b, _, t, h, w = batch["target"].shape
    per_latent = (t // patch[0]) * (h // patch[1]) * (w // patch[2])
    per_sample = per_latent * (2 if batch["source"] is not None else 1)
    if batch["semantic"] is not None:
        per_sample += batch["semantic"].shape[1]
    return b * per_sample


def check_batch_fits(batch: dict, model: SamaTransformer) -> None:
    """The shards' tensor widths against the model config, with the field to fix (first batch)."""
    wan = model.wan.config
    problems = []
    if batch["target"].shape[1] != wan.in_channels:
        problems.append(f"model: the transformer takes {wan.in_channels} latent channels, the shards hold "
                        f"{batch['target'].shape[1]}")
    if batch["text"].shape[-1] != wan.text_dim:
        problems.append(f"model: the transformer's text_dim is {wan.text_dim}, the shards' text embeddings are "
                        f"{batch['text'].shape[-1]} wide (another text encoder?)")
    if batch["semantic"] is not None:
        try:
            model.check_semantic(batch["semantic"])
        except ValueError as e:
            problems.append(str(e))
    if problems:
        raise ConfigError("the shards do not fit the model:\n  " + "\n  ".join(problems))


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: (batch[k].to(device, non_blocking=True) if batch[k] is not None else None) for k in TENSOR_KEYS}


class RunLog:
    """Rank 0's outputs: metrics.jsonl (one line per step), TensorBoard, the progress line."""

    def __init__(self, out_dir: Path, env: dist.Env, start_step: int, tensorboard: bool):
        self.enabled = env.is_main
        self.metrics = out_dir / "metrics.jsonl"
        self.writer = None
        if not self.enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        # steps after the checkpoint we resume from were logged by the interrupted run: drop them
        # (a kill can tear the last line: keep what parses up to the first line that does not)
        lines = self.metrics.read_text(errors="replace").splitlines() if self.metrics.exists() else []
        kept = []
        for ln in lines:
            try:
                record = json.loads(ln)
                step = record["step"]
            except (ValueError, TypeError, KeyError):
                break
            if step <= start_step:
                kept.append(ln)
        atomic_write_bytes(self.metrics, "".join(ln + "\n" for ln in kept).encode())
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out_dir / "tb"), purge_step=start_step + 1)

    def step(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k in ("loss", "l_fm", "l_sem", "grad_norm", "lr", "samples_per_s", "tokens_per_s"):
                if record.get(k) is not None:
                    self.writer.add_scalar(f"train/{k}", record[k], record["step"])

    def print(self, text: str) -> None:
        if self.enabled:
            print(text, flush=True)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _init_weights(model: SamaTransformer, cfg: TrainerConfig) -> None:
    """train.init_from into the freshly built model: a sama checkpoint's weights, or the released
    SAMA .safetensors (official names) laid over the base the model was built from."""
    init = Path(cfg.train.init_from)
    if init.suffix == ".safetensors":
        from sama.official import official_state

        try:
            weights = official_state(init, model)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    else:
        weights = checkpoint.load_weights(init, cfg.train.init_weights)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or (init.suffix != ".safetensors" and [k for k in missing if k in dict(model.named_parameters())]):
        raise ConfigError(f"train.init_from: {init} does not fit this model "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def train(cfg: TrainerConfig) -> dict:
    """Run (or resume) training to ``train.max_steps``; returns the summary (also summary.json)."""
    threads = torch.get_num_threads()
    if cfg.train.cpu_threads:
        torch.set_num_threads(cfg.train.cpu_threads)
    env = dist.setup(cfg.train.device)
    try:
        return _train(cfg, env)
    finally:
        torch.set_num_threads(threads)
        dist.cleanup()


def _train(cfg: TrainerConfig, env: dist.Env) -> dict:
    out_dir = Path(cfg.train.out_dir)
    device = env.device
    use_bf16 = device.type == "cuda" and cfg.train.precision == "bf16"
    accum = cfg.optim.grad_accum

    # ---- model, wrapped for DDP/FSDP2; EMA after wrapping so it shares the sharding
    resume_from = checkpoint.find_resume(out_dir, cfg.checkpoint.resume)
    if resume_from is not None:  # later checkpoints of an abandoned continuation must not outrank ours
        checkpoint.discard_after(out_dir, resume_from, env)
    parallel = dist.resolve_parallel(cfg.train.parallel, env)
    mp_policy = dist.mixed_precision(use_bf16 and parallel == "fsdp" and cfg.train.fsdp_mixed_precision)
    load_stats = None
    if cfg.train.load == "sharded":
        if parallel != "fsdp":
            raise ConfigError(f"train.load: sharded needs train.parallel fsdp (got {parallel}); run under "
                              "torchrun with more than one process, or use train.load: full")
        from sama.load import build_sharded

        model, load_stats = build_sharded(cfg, dist.mesh_for(env), mp_policy)
    else:
        torch.manual_seed(cfg.train.seed)  # new modules start identical on every rank (FSDP2 needs it)
        model = SamaTransformer.from_config(cfg.model)
        if cfg.train.init_from is not None and resume_from is None:
            _init_weights(model, cfg)
        model = model.to(device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    wrapped = dist.parallelize(model, parallel, env, find_unused=not cfg.data.semantic, mp_policy=mp_policy,
                               already_sharded=load_stats is not None)
    ema = EMA(model, cfg.ema.decay) if cfg.ema.enabled else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                                  eps=cfg.optim.eps, weight_decay=cfg.optim.weight_decay)

    # ---- resume
    step, skipped, samples_seen, tokens_seen = 0, 0, 0, 0
    position = None
    if resume_from is not None:
        meta, per_rank = checkpoint.load(resume_from, model, optimizer, ema, env)
        step, skipped = meta["step"], meta["skipped"]
        samples_seen, tokens_seen = meta["samples"], meta["tokens"]
        position = per_rank["data"]
        checkpoint.restore_rng(per_rank["rng"], device)

    # ---- data
    dataset = ShardBatches(cfg.data, cfg.train.seed, env.rank, env.world, position=position)
    tracker = LoaderPosition(env.rank, env.world, cfg.data.num_workers, start=position)
    workers = cfg.data.num_workers
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=workers, pin_memory=device.type == "cuda",
        prefetch_factor=loader_prefetch(cfg.data) if workers else None, persistent_workers=workers > 0)
    batches = handed_over(iter(loader), max(1, workers))

    log = RunLog(out_dir, env, step, cfg.train.tensorboard)
    log.print(f"sama train: {n_params:,} parameters | {env.world} process(es), parallel {parallel}, "
              f"{device.type}{', bf16 autocast' if use_bf16 else ''} | grad_accum {accum} | steps "
              f"{step} -> {cfg.train.max_steps}" + (f" | resumed from {resume_from}" if resume_from else ""))
    if load_stats is not None:  # every rank reports its own weight memory
        print(f"sama train: {load_stats.line(env.rank)}", flush=True)
    for name, info in dataset.describe().items():
        log.print(f"  stream {name}: {info['purpose']}/{info['modality']} {info['variants']} weight "
                  f"{info['weight']} batch {cfg.data.batch_size[info['modality']]}, {info['shards']} shards")

    start_step = step
    params = [p for p in model.parameters() if p.requires_grad]
    clip = cfg.optim.grad_clip if cfg.optim.grad_clip is not None else float("inf")
    bad_in_row = 0
    first_loss = last_loss = None
    saved = resume_from
    t_start = t_window = time.perf_counter()
    window = torch.zeros(2, dtype=torch.float64)  # samples, tokens since the last progress line
    run_samples = run_tokens = 0

    while step < cfg.train.max_steps:
        lr = lr_at(step, cfg.optim, cfg.train.max_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr

        # ---- forward/backward over the micro-batches of this step
        losses = torch.zeros(3, dtype=torch.float64, device=device)  # loss, l_fm, l_sem (no sync per micro-batch)
        counts = torch.zeros(3, dtype=torch.float64)  # samples, tokens, bad
        for micro in range(accum):
            batch = next(batches)
            if step == start_step and micro == 0:
                check_batch_fits(batch, model)
            tracker.observe(batch["meta"])
            gen = torch.Generator(device=device)
            gen.manual_seed(batch_noise_seed(cfg.train.seed, batch["meta"]["logical"], batch["meta"]["index"]))
            inputs = _to_device(batch, device)
            with dist.gradient_sync(wrapped, parallel, sync=micro == accum - 1):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    out = training_loss(wrapped, inputs, cfg.flow, gen)
                (out["loss"] / accum).backward()
            losses += torch.stack([out["loss"].detach(), out["l_fm"], out["l_sem"]]).double()
            counts[0] += batch["target"].shape[0]
            counts[1] += batch_tokens(batch, model.patch_size)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor
            grad_norm = grad_norm.full_tensor()
        grad_norm = float(grad_norm)
        losses = losses.cpu()
        counts[2] = float(not (math.isfinite(losses[0].item()) and math.isfinite(grad_norm)))
        sums = dist.all_reduce_sum(torch.cat([losses, counts]).to(device)).cpu()

        # ---- NaN/inf guard, update, EMA
        bad = sums[5].item() > 0
        if bad:
            optimizer.zero_grad(set_to_none=True)
            skipped += 1
            bad_in_row += 1
            log.print(f"step {step + 1}: non-finite loss or gradient (loss {sums[0].item() / (accum * env.world)}, "
                      f"grad norm {grad_norm}); step skipped, weights unchanged")
            if bad_in_row >= cfg.train.max_bad_steps:
                raise RuntimeError(f"{bad_in_row} steps in a row had a non-finite loss or gradient "
                                   f"(train.max_bad_steps); lower optim.lr or check the data")
        else:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            bad_in_row = 0
            if ema is not None:
                ema.update(model)
        step += 1

        # ---- log
        n_micro = accum * env.world
        loss, l_fm, l_sem = (sums[i].item() / n_micro for i in range(3))
        samples_seen += int(sums[3])
        tokens_seen += int(sums[4])
        run_samples += int(sums[3])
        run_tokens += int(sums[4])
        window += sums[3:5]
        if not bad:
            first_loss = loss if first_loss is None else first_loss
            last_loss = loss
        record = {"step": step, "loss": loss, "l_fm": l_fm, "l_sem": l_sem, "grad_norm": grad_norm, "lr": lr,
                  "skipped": bad, "samples": samples_seen, "tokens": tokens_seen}
        if step % cfg.train.log_every == 0 or step == cfg.train.max_steps:
            now = time.perf_counter()
            record["samples_per_s"] = window[0].item() / (now - t_window)
            record["tokens_per_s"] = window[1].item() / (now - t_window)
            log.print(f"step {step:>7}/{cfg.train.max_steps} | loss {loss:.4f} (fm {l_fm:.4f} sem {l_sem:.4f}) | "
                      f"grad {grad_norm:.3f} | lr {lr:.2e} | {record['samples_per_s']:.1f} samples/s "
                      f"{record['tokens_per_s']:,.0f} tok/s | skipped {skipped}")
            t_window, window = now, torch.zeros(2, dtype=torch.float64)
        log.step(record)

        # ---- checkpoint
        if step % cfg.checkpoint.every == 0 or step == cfg.train.max_steps:
            saved = checkpoint.save(
                out_dir, step, model, optimizer, ema, env,
                per_rank={"data": tracker.state_dict(), "rng": checkpoint.rng_states(device)},
                meta={"skipped": skipped, "samples": samples_seen, "tokens": tokens_seen,
                      "data_workers": cfg.data.num_workers, "config": cfg.model_dump(mode="json")},
                keep_last=cfg.checkpoint.keep_last)

    wall = time.perf_counter() - t_start
    summary = {"steps": step, "skipped": skipped, "wall_s": round(wall, 3), "samples": samples_seen,
               "tokens": tokens_seen, "samples_per_s": run_samples / wall if wall else None,
               "tokens_per_s": run_tokens / wall if wall else None, "first_loss": first_loss,
               "last_loss": last_loss, "checkpoint": str(saved) if saved else None, "out_dir": str(out_dir),
               "world": env.world, "parallel": parallel}
    if env.is_main:
        atomic_write_json(out_dir / "summary.json", summary)
        losses_run = f"{first_loss:.4f} -> {last_loss:.4f}" if first_loss is not None else "n/a"
        log.print(f"done: {step} steps ({skipped} skipped) in {wall:.1f}s this run | {samples_seen:,} samples, "
                  f"{tokens_seen:,} tokens in total | loss {losses_run} (first -> last step of this run) | "
                  f"checkpoint {saved}")
    log.close()
    return summary
