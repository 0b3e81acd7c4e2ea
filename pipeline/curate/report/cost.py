"""Per stage costs measured in this run, and what the whole corpus would cost at those rates.

Measured (``stage_costs``): per stage, the wall seconds and CPU seconds of its recorded runs
(``state/_timings``, summed since its last --overwrite), the rows and samples it wrote, and
GPU-seconds (wall x GPUs held, for a stage that computed on GPUs).

Model (``corpus_cost``): for each dataset of ``report.corpus``, the samples reaching a stage times
the stage's cost per sample, summed into core-hours and GPU-hours, then divided by
``report.finish_in_hours x report.utilisation`` for the cluster that finishes in time. A GPU stage
that ran on CPU gets core-hours at its CPU rate, flagged, and no GPU-hours: a CPU rate says
nothing about a GPU's. docs/scaling.md explains the assumptions.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.curate.report.stages import gpu_stages, stage_input, stage_order


@dataclass
class StageCost:
    stage: str
    runs: int
    wall_s: float
    cpu_s: float
    alloc_core_s: float
    gpu_s: float
    rows: int
    samples: int
    device: str
    gpu_stage: bool
    ran_on_gpu: bool
    note: str = ""

    @property
    def rows_per_s(self) -> float | None:
        return self.rows / self.wall_s if self.wall_s > 0 else None

    def per_1000(self, seconds: float) -> float | None:
        return 1000 * seconds / self.samples if self.samples else None


def stage_costs(runs: dict[str, list[dict]], rows: dict[str, tuple[int, int]], judge_server_gpus: int | None) -> list[StageCost]:
    out = []
    gpu_stage_names = gpu_stages()
    for stage in stage_order():
        recs = runs.get(stage, [])
        if not recs:
            continue
        wall = sum(r["wall_s"] for r in recs)
        gpu = sum(r["gpu_s"] for r in recs)
        device = recs[-1]["device"]
        note = ""
        if device.startswith("external") and judge_server_gpus:
            gpu = wall * judge_server_gpus
            note = f"GPU-seconds = wall x report.judge_server_gpus ({judge_server_gpus})"
        elif device.startswith("external"):
            note = "external judge server: its hardware is not visible here (set report.judge_server_gpus)"
        ran_on_gpu = gpu > 0
        if stage in gpu_stage_names and not ran_on_gpu and not device.startswith("external"):
            note = "GPU stage that ran on CPU: CPU rate only, no GPU-hours extrapolated"
        cpu, alloc = sum(r["cpu_s"] for r in recs), sum(r["wall_s"] * r["cpus"] for r in recs)
        if recs[-1].get("cpu_scope", "").startswith("driver"):
            # The workers of a remote cluster are not visible: price what was allocated instead.
            note = (note + "; " if note else "") + "remote cluster: priced at allocated core-s (workers' CPU not visible)"
            cpu = alloc
        n_rows, n_samples = rows.get(stage, (0, 0))
        out.append(StageCost(stage, len(recs), wall, cpu, alloc, gpu, n_rows, n_samples, device,
                             stage in gpu_stage_names, ran_on_gpu, note))
    return out


@dataclass
class CorpusCost:
    stage: str
    samples: float
    core_hours: float
    gpu_hours: float | None  # None: not measured (a GPU stage that ran on CPU, or an external judge)
    flag: str


def reach_fractions(funnel: dict[str, list], stage: str) -> dict[str, float]:
    """Per dataset of this run: the share of its records that reached ``stage``."""
    out = {}
    step = stage_input()[stage]
    for ds, steps in funnel.items():
        counts = {s.name: s.count for s in steps}
        records = counts.get("records") or 0
        out[ds] = counts.get(step, 0) / records if records else 0.0
    return out


def corpus_cost(costs: list[StageCost], corpus: dict[str, int], funnel: dict[str, list], reach: str) -> list[CorpusCost]:
    """Core-hours and GPU-hours per stage for the corpus; ``reach`` 'all' sends every sample
    through every stage (an upper bound), 'measured' uses this run's per-dataset funnel."""
    rows = []
    for c in costs:
        if not c.samples:
            continue
        frac = reach_fractions(funnel, c.stage) if reach == "measured" else {}
        n = sum(size * (frac.get(ds, 1.0) if reach == "measured" else 1.0) for ds, size in corpus.items())
        core_h = n * c.cpu_s / c.samples / 3600
        flag = "measured on CPU" if not c.ran_on_gpu else "measured on GPU"
        gpu_h = n * c.gpu_s / c.samples / 3600 if c.ran_on_gpu else None
        if c.gpu_stage and not c.ran_on_gpu:
            flag = "GPU stage run on CPU: core-hours at the CPU rate, GPU-hours not extrapolated"
        rows.append(CorpusCost(c.stage, n, core_h, gpu_h, flag))
    return rows


def cluster_needed(rows: list[CorpusCost], hours: float, utilisation: float) -> tuple[float, float | None]:
    """(cores, GPUs) that finish every stage's work in ``hours`` at ``utilisation``."""
    cores = sum(r.core_hours for r in rows) / (hours * utilisation)
    gpu = [r.gpu_hours for r in rows if r.gpu_hours is not None]
    return cores, (sum(gpu) / (hours * utilisation) if gpu else None)


# Bytes of one shard key at the recipe's sizes (../shared/RECIPE.md): 480p-class bucket 832x480,
# 81 frames; Wan VAE latents 16 channels x 21 x 60 x 104 in bf16; one anchor frame of SigLIP
# tokens (64 local + 1 global, width 1152, bf16); the umT5-XXL embedding of the instruction kept
# unpadded (width 4096, bf16; TEXT_TOKENS is an assumed average prompt length).
BF16 = 2
VIDEO_LATENT = 16 * 21 * 60 * 104 * BF16  # 4,193,280 B
IMAGE_LATENT = 16 * 1 * 60 * 104 * BF16  # 199,680 B
SIGLIP = 65 * 1152 * BF16  # 149,760 B
TEXT_TOKENS = 50
TEXT = TEXT_TOKENS * 4096 * BF16  # 409,600 B
# Raw clips: variant none has no source, cube/speed/tube one; weights 1:2:3:4 (pretext.weights).
RAW_SOURCE_SHARE = 0.9
KEY_BYTES = {
    "video_edit": 2 * VIDEO_LATENT + SIGLIP + TEXT,
    "image_edit": 2 * IMAGE_LATENT + SIGLIP + TEXT,
    "clip": VIDEO_LATENT * (1 + RAW_SOURCE_SHARE) + SIGLIP + TEXT,
}
DATASET_KIND = {"koala": "clip", "motionbench": "clip", "ditto": "video_edit", "openve": "video_edit",
                "reco": "video_edit", "x2edit": "image_edit", "gpt_image_edit": "image_edit",
                "pico_banana": "image_edit", "nhr_edit": "image_edit"}


def storage_model(corpus: dict[str, int]) -> list[tuple[str, str, int, int, float]]:
    """(dataset, kind, bytes per key, keys, TB) of the ``encoded`` table if every corpus sample
    were kept with one key; the shards hold the same tensors again (tar headers add ~1 KB a key)."""
    rows = []
    for ds, n in corpus.items():
        kind = DATASET_KIND.get(ds, "video_edit")
        rows.append((ds, kind, int(KEY_BYTES[kind]), n, KEY_BYTES[kind] * n / 1e12))
    return rows


# An ``encoded`` row once `curate prune --sharded` dropped its blob: its metadata columns plus its
# share of the part's footer; measured 3.5 KB a key on the demo and 3.7-4.0 KB on
# bench/bench_storage.py's parts of two keys (docs/scaling.md, Storage). Larger parts cost less.
PRUNED_ROW_BYTES = 4_000
# Tar headers and the K.json document of one shard key (bench/bench_storage.py: ~1 KB).
SHARD_KEY_OVERHEAD = 1_000


def storage_totals(corpus: dict[str, int]) -> dict[str, float]:
    """TB at rest if every corpus sample were kept with one key: the ``encoded`` table, the shards,
    both, and both once `curate prune --sharded` kept the shards' copy only (the table keeps each
    row's metadata)."""
    rows = storage_model(corpus)
    table = sum(r[4] for r in rows)
    keys = sum(r[3] for r in rows)
    shards = table + keys * SHARD_KEY_OVERHEAD / 1e12
    return {"table": table, "shards": shards, "both": table + shards,
            "pruned": shards + keys * PRUNED_ROW_BYTES / 1e12}
