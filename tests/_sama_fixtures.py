"""Shard sets for the trainer tests, written in the shard contract's format (see the contract in the
shard stage): plain tars of ``K.json`` + single-tensor safetensors members, the ``shards`` and
``shard_keys`` index tables as Parquet. Tensors are seeded random (bf16, as encode stores them) so
the trainer's tests run without the curation pipeline and its models."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import safetensors.torch
import torch

TEXT_DIM = 32  # tiny umT5 d_model
SEMANTIC_DIM = 32  # tiny SigLIP hidden size
SEMANTIC_TOKENS = 8 * 8 + 1  # 8x8 pooled + 1 global, one anchor frame

TASK_TOKENS = {"cube": "[Complete the missing regions in the video.]",
               "speed": "[Restore the video to its normal speed.]",
               "tube": "[Restore the shuffled video to its original order.]"}


@dataclass
class Group:
    """``count`` samples of one dataset in one (purpose, modality, bucket); variants cycle."""

    dataset: str
    purpose: str
    modality: str
    size: tuple[int, int, int]  # W, H, frames
    count: int
    variants: tuple[str, ...] = ("edit",)
    poison: set[int] = field(default_factory=set)  # sample numbers whose target is inf


STAGE0 = [
    Group("nhr_edit", "stage0", "image", (32, 32, 1), 12),
    Group("koala", "stage0", "video", (32, 32, 9), 12, ("none", "cube", "speed", "tube")),
    Group("motionbench", "stage0", "video", (48, 32, 5), 8, ("none", "cube", "speed", "tube")),
]
STAGE1 = [
    Group("ditto", "stage1", "video", (32, 32, 9), 8),
    Group("openve", "stage1", "video", (48, 32, 5), 8),
]


def _tensor_bytes(name: str, tensor: torch.Tensor) -> bytes:
    return safetensors.torch.save({name: tensor.contiguous()})


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _sample(group: Group, n: int, seed: int) -> tuple[str, dict, dict[str, tuple[str, torch.Tensor]]]:
    hexid = hashlib.sha1(f"{group.dataset}/{n}".encode()).hexdigest()[:16]
    variant = group.variants[n % len(group.variants)]
    key = f"{group.dataset}-{hexid}-{variant}"
    w, h, frames = group.size
    latent = [16, (frames - 1) // 4 + 1, h // 8, w // 8]
    gen = torch.Generator().manual_seed(int(hashlib.sha1(f"{seed}/{key}".encode()).hexdigest()[:12], 16))
    # A learnable structure: the target is a smooth per-sample pattern, the source a noisy copy.
    base = torch.randn(latent[0], 1, 1, 1, generator=gen) + 0.3 * torch.randn(latent, generator=gen)
    target = base.expand(latent).clone()
    if n in group.poison:
        target.fill_(float("inf"))
    tensors = {"target.safetensors": ("target_latents", target.bfloat16())}
    if variant != "none":
        tensors["source.safetensors"] = ("source_latents",
                                         (target + 0.1 * torch.randn(latent, generator=gen)).bfloat16())
    else:  # the contract: no source is a zero-size member (0 latent frames), "has_source": false
        tensors["source.safetensors"] = ("source_latents", torch.empty([latent[0], 0, *latent[2:]]).bfloat16())
    tensors["semantic.safetensors"] = ("semantic_tokens",
                                       torch.randn(1, SEMANTIC_TOKENS, SEMANTIC_DIM, generator=gen).bfloat16())
    length = 3 + n % 6
    tensors["text.safetensors"] = ("text_embedding", torch.randn(length, TEXT_DIM, generator=gen).bfloat16())
    task = {"edit": "edit", "none": "t2v"}.get(variant, variant)
    token = TASK_TOKENS.get(variant)
    caption = f"sample {n} of {group.dataset}"
    meta = {
        "key": key, "sample_id": f"{group.dataset}:{hexid}", "dataset": group.dataset,
        "purpose": group.purpose, "modality": group.modality, "variant": variant, "task": task,
        "instruction": f"{token} {caption}" if token else caption, "task_token": token or "",
        "bucket": f"{w}x{h}", "num_frames": frames, "fps": 0.0 if frames == 1 else 8.0,
        "latent_shape": latent, "anchor_indices": [0], "target_indices": list(range(frames)),
        "source_indices": [] if variant == "none" else list(range(frames)), "has_source": variant != "none",
        "pretext": "{}", "scores": [{"metric": "visual_quality", "score": 9, "expected": 9.0}],
        "lineage": {"manifest": "fixture"},
        "models": {"vae": {"path": "fixture", "random_init": True}},
        "members": {m: {"tensor": t, "dtype": "bfloat16", "shape": list(x.shape)} for m, (t, x) in tensors.items()},
    }
    return key, meta, tensors


def write_shard_set(workdir: str | Path, groups=STAGE0 + STAGE1, samples_per_shard: int = 4,
                    seed: int = 0) -> Path:
    """Write shards + index tables under ``workdir``; returns the workdir."""
    workdir = Path(workdir)
    by_dir: dict[tuple[str, str, str], list] = {}
    for group in groups:
        w, h, frames = group.size
        bucket = f"{w}x{h}x{frames}"
        by_dir.setdefault((group.purpose, group.modality, bucket), []).extend(
            _sample(group, n, seed) for n in range(group.count))
    index_rows, key_rows = [], []
    for (purpose, modality, bucket), samples in sorted(by_dir.items()):
        samples.sort(key=lambda s: s[0])
        for i in range(0, len(samples), samples_per_shard):
            rel = Path("shards") / purpose / modality / bucket / f"shard-{i // samples_per_shard:06d}.tar"
            path = workdir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                for key, meta, tensors in samples[i:i + samples_per_shard]:
                    _add(tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode())
                    for member, (name, tensor) in sorted(tensors.items()):
                        _add(tar, f"{key}.{member}", _tensor_bytes(name, tensor))
                    key_rows.append({"key": key, "sample_id": meta["sample_id"], "shard": str(rel)})
            data = buf.getvalue()
            path.write_bytes(data)
            index_rows.append({"shard": str(rel), "purpose": purpose, "modality": modality, "bucket": bucket,
                               "samples": len(samples[i:i + samples_per_shard]), "bytes": len(data),
                               "sha256": hashlib.sha256(data).hexdigest()})
    for table, rows in (("shards", index_rows), ("shard_keys", key_rows)):
        out = workdir / "tables" / table / "part-00000.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), out)
    return workdir


def count_variants(groups=STAGE0 + STAGE1) -> dict[tuple[str, str], int]:
    """(purpose, variant) -> number of samples, for checking what a loader covers."""
    out: dict[tuple[str, str], int] = {}
    for g in groups:
        for n in range(g.count):
            v = g.variants[n % len(g.variants)]
            out[(g.purpose, v)] = out.get((g.purpose, v), 0) + 1
    return out



# ---------------------------------------------------------------- shards made by the pipeline
PIPELINE_DATASETS = ("koala", "nhr_edit", "ditto")
_JUDGE_FAST = ["judge.max_frames=4", "judge.min_frames=2", "judge.video_min_pixels=3136",
               "judge.video_max_pixels=12544", "judge.image_min_pixels=3136", "judge.image_max_pixels=12544"]
# every judged sample kept (the fake judge's scores are not the point); every pretext variant
_KEEP_ALL = ["filter.image.at_least={}", "filter.video.at_least={}", "filter.video.greater_than={}",
             "filter.clip.at_least={}", "filter.clip.greater_than={}", "pretext.mode=all"]


def pipeline_shards(workdir: Path, corpus: Path, scratch: Path, datasets=PIPELINE_DATASETS) -> Path:
    """Shards made by the curation pipeline itself on (part of) the demo corpus: ingest, probe,
    vlm-filter (fake judge server), filter, encode (tiny random encoders), shard. Needs Ray up."""
    from conftest import demo_config_file
    from pipeline.curate import runner
    from pipeline.curate.config import load_config
    from pipeline.curate.demo.tiny_encoders import build_tiny_encoders
    from fake_judge import FakeJudgeServer

    scratch.mkdir(parents=True, exist_ok=True)
    models = [f"encode.{k}={v}" for k, v in build_tiny_encoders(scratch / "encoders").items()]
    config = demo_config_file(corpus, scratch)
    off = [f"datasets.{d}.enabled=false" for d in load_config(config).datasets.enabled() if d not in datasets]
    with FakeJudgeServer() as judge:
        cfg = load_config(config,
                          [f"judge.urls=[{judge.url}]", *_JUDGE_FAST, *_KEEP_ALL, *models, *off,
                           "shard.target_bytes=100000"])
        runner.run(cfg, "all", workdir)
    return workdir


# ---------------------------------------------------------------- official-format parity fixtures
def write_official_fixture(directory: str | Path, *, dim: int = 72, heads: int = 3, layers: int = 3,
                           ffn: int = 96, text_dim: int = 24, freq_dim: int = 16, siglip: int = 40,
                           hidden: int = 56, text_len: int = 20, latent=(1, 16, 2, 6, 8), n_sem: int = 17,
                           steps: int = 3, seed: int = 0) -> Path:
    """A fixture in the format of ../shared/sama_parity, made by OUR model (random weights saved
    under the official names via the inverse key map) and OUR sampler: it checks that the import
    and parity paths handle other sizes, not that we match the official code (the shared one does)."""
    from safetensors.torch import save_file

    from sama.config import ModelConfig
    from sama.flow import euler_sample, official_sigmas
    from sama.model import SamaTransformer
    from sama.official import official_name

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    wan_model = {"dim": dim, "in_dim": 16, "ffn_dim": ffn, "out_dim": 16, "text_dim": text_dim,
                 "freq_dim": freq_dim, "eps": 1e-6, "patch_size": [1, 2, 2], "num_heads": heads,
                 "num_layers": layers, "has_image_input": False}
    from sama.official import diffusers_config

    cfg = ModelConfig(preset="official", tiny=diffusers_config(wan_model), semantic_dim=siglip,
                      semantic_mlp_hidden=hidden, text_len=text_len, semantic_grid=int((n_sem - 1) ** 0.5))
    gen = torch.Generator().manual_seed(seed)
    model = SamaTransformer.from_config(cfg).eval()
    with torch.no_grad():  # every parameter random (zero-initialised ones too), as the shared fixture
        for name, p in sorted(model.named_parameters()):
            scale = 0.05 if name.endswith("bias") else (1 / p.shape[-1] ** 0.5 if p.ndim > 1 else 0.1)
            p.copy_((1.0 if p.ndim == 1 and not name.endswith("bias") else 0.0)
                    + scale * torch.randn(p.shape, generator=gen))
    save_file({official_name(k): v.contiguous() for k, v in model.state_dict().items()},
              directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps(
        {"wan_model": wan_model, "siglip_feat_mlp": {"in_dim": siglip, "hidden_dim": hidden, "out_dim": dim},
         "pipeline": {"text_len": text_len}}, indent=2))

    def context(valid: int) -> torch.Tensor:
        c = torch.randn(1, text_len, text_dim, generator=gen)
        c[:, valid:] = 0
        return c

    ones = torch.ones(1, text_len, dtype=torch.bool)
    cases = {}
    with torch.no_grad():
        for k, t in enumerate((500.0, 937.5)):
            c = {"source_latents": torch.randn(latent, generator=gen), "target_latents": torch.randn(latent, generator=gen),
                 "sem_latents": torch.randn(1, n_sem, siglip, generator=gen), "context": context(5),
                 "timestep": torch.tensor([t])}
            c["sem_tokens_in"] = model.semantic_embed(c["sem_latents"])
            c["pred_target"], c["pred_sem"] = model(c["target_latents"], c["timestep"], c["context"], ones,
                                                    c["source_latents"], c["sem_latents"])
            cases.update({f"case{k}_{n}": v for n, v in c.items()})
        s = {"source_latents": torch.randn(latent, generator=gen), "context_pos": context(7),
             "context_neg": context(2), "noise_latents": torch.randn(latent, generator=gen),
             "noise_sem": torch.randn(1, n_sem, siglip, generator=gen)}
        sigmas = official_sigmas(steps, 5.0)
        x, sem = euler_sample(model, s["context_pos"], ones, latent, source=s["source_latents"],
                              num_semantic_tokens=n_sem, steps=steps, sigmas=sigmas, guidance_scale=5.0,
                              negative_text=s["context_neg"], negative_mask=ones, noise=s["noise_latents"],
                              semantic_noise=s["noise_sem"], sem_target="velocity")
    cases.update({f"sample_{n}": v for n, v in s.items()})
    cases.update(sample_sigmas=sigmas[:-1], sample_timesteps=sigmas[:-1] * 1000, sample_final_latents=x,
                 sample_final_sem_latents=sem)
    meta = {"sampling": {"steps": steps, "cfg_scale": 5.0, "shift": 5.0}}
    save_file({k: v.contiguous().float() for k, v in cases.items()}, directory / "cases.safetensors",
              metadata={"json": json.dumps(meta)})
    return directory
