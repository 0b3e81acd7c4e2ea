"""The trainer config (``sama train --config ...``): pydantic models validated on load.

Every number of the SAMA recipe (../shared/RECIPE.md, "Trainer") is a field whose default is the
paper's value. Models are strict: an unknown key or a wrong type fails at once with the dotted
field name.

Sections: ``model`` (the transformer and the new SAMA modules), ``flow`` (flow matching and the
Semantic Anchoring loss); the training-loop sections follow below them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config_base import ConfigError, read_document, validate  # noqa: F401  (ConfigError: sama.config.ConfigError)
from pipeline.config_base import Strict as _Strict


# ---------------------------------------------------------------- model / flow (sama.model, sama.flow)
# model.preset official (ModelConfig): what the released SAMA code computes
OFFICIAL_MODEL = {
    "semantic_rope": "zero", "semantic_mlp_affine": True, "semantic_mlp_act": "gelu",
    "semantic_mlp_hidden": 1024, "semantic_head_affine": True, "semantic_dim": 1152,
    "semantic_grid": 8, "semantic_global_tokens": 1, "anchor_frames": 1, "type_embedding": True,
    "semantic_head": True, "text_len": 512, "timestep_embedding_fp64": True,
}
# ... and the training conventions it implies (flow.*; TrainerConfig)
OFFICIAL_FLOW = {"sem_target": "velocity", "loss_weighting": "diffsynth", "timestep_sampling": "grid",
                 "shift": 5.0}


class ModelConfig(_Strict):
    # A local diffusers-format WanTransformer3DModel directory (the `transformer/` folder of
    # Wan2.1-T2V-14B-Diffusers, or the model folder itself). null: build a randomly initialised
    # transformer from `tiny` (tests, benchmarks of an architecture without its weights).
    base_path: str | None = None
    # WanTransformer3DModel keyword arguments used when base_path is null (see sama/tiny.py).
    tiny: dict[str, Any] | None = None
    # Width of the SigLIP tokens (so400m-patch14-384: 1152).
    semantic_dim: int = Field(1152, ge=1)
    # Semantic tokens per anchor frame: semantic_grid**2 pooled patch tokens + semantic_global_tokens.
    semantic_grid: int = Field(8, ge=1)
    semantic_global_tokens: int = Field(1, ge=0)
    anchor_frames: int = Field(1, ge=1)  # N anchor frames (paper: 1)
    # Learned type embedding (0 source, 1 semantic, 2 target) added to every token; zero-initialised.
    type_embedding: bool = True
    # identity: semantic tokens are not rotated (paper). shared: the pooled tokens take the spatial
    # RoPE of the target patch at the centre of the cell they pooled (time axis unrotated);
    # global tokens stay unrotated.
    # zero: cos = sin = 0 rows, so semantic queries/keys are 0 in every block (the official code).
    semantic_rope: Literal["identity", "shared", "zero"] = "identity"
    # Build the semantic head (last block's semantic slice -> semantic_dim); off = no L_sem.
    semantic_head: bool = True
    # Hidden width of the semantic projection MLP; null = the transformer's width.
    semantic_mlp_hidden: int | None = None
    # The semantic MLP's input LayerNorm with a learned affine, and its activation (official SAMA:
    # affine, exact-erf GELU, hidden 1024); the semantic head's LayerNorm with a learned affine.
    semantic_mlp_affine: bool = False
    semantic_mlp_act: Literal["gelu_tanh", "gelu"] = "gelu_tanh"
    semantic_head_affine: bool = False
    # The timestep sinusoid in float64 (the official code) or float32 (diffusers).
    timestep_embedding_fp64: bool = False
    # Wan pads the umT5 embeddings with zeros to 512 tokens and never masks cross-attention; we do
    # the same so the pretrained text path sees what it was trained on.
    text_len: int = Field(512, ge=1)
    gradient_checkpointing: bool = False
    # official: the released SAMA code's architecture (OFFICIAL_MODEL above) for every field
    # of it not given explicitly; sama (default): each field's own default.
    preset: Literal["sama", "official"] = "sama"

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") == "official":
            data = {**OFFICIAL_MODEL, **data}
        return data

    @model_validator(mode="after")
    def _source(self) -> "ModelConfig":
        if self.base_path is None and not self.tiny:
            raise ValueError("model.base_path: set it to a local diffusers WanTransformer3DModel "
                             "directory, or give model.tiny (WanTransformer3DModel kwargs)")
        if self.base_path is not None and self.tiny:
            raise ValueError("model.tiny: given together with model.base_path; keep one (base_path "
                             "loads pretrained weights, tiny builds a random model)")
        return self

    @property
    def semantic_tokens(self) -> int:
        """Semantic tokens per sample: anchor_frames * (grid**2 + global tokens)."""
        return self.anchor_frames * (self.semantic_grid ** 2 + self.semantic_global_tokens)


class FlowConfig(_Strict):
    # Wan's timestep shift: sigma' = shift*s / (1 + (shift-1)*s); about 5 at 480p.
    shift: float = Field(5.0, gt=0)
    # grid: uniform over DiffSynth's 1000 shifted training timesteps (the official trainer).
    timestep_sampling: Literal["uniform", "logit_normal", "grid"] = "uniform"
    logit_mean: float = 0.0  # logit_normal: s = sigmoid(N(logit_mean, logit_std))
    logit_std: float = Field(1.0, gt=0)
    num_train_timesteps: int = Field(1000, ge=1)  # the model's timestep = sigma * this
    lambda_sem: float = Field(0.1, ge=0)  # L = L_FM + lambda_sem * L_sem
    # What the semantic head predicts (L1):
    #   clean_tokens: the clean SigLIP tokens (paper); the raw tokens are noised with the target's sigma.
    #   normalized_tokens: each token layer-normalised (no affine) first, so its scale matches the
    #     unit Gaussian noise; noised and predicted in that space.
    #   velocity: noise - tokens, the flow-matching target applied to the semantic tokens.
    sem_target: Literal["clean_tokens", "normalized_tokens", "velocity"] = "clean_tokens"
    # none: plain MSE. diffsynth: DiffSynth-Studio's FlowMatchScheduler training weight (a Gaussian
    # bump in the timestep, mean 1 over its 1000-step grid) on L_FM, as the official code trains.
    loss_weighting: Literal["none", "diffsynth"] = "none"


# ---------------------------------------------------------------- training loop (sama.data, sama.train)
# Owned by the trainer loop: data streams, optimiser, EMA, run/checkpoint settings, and the
# top-level TrainerConfig that loads a YAML file (configs/train/*.yaml).

class DataStreamConfig(_Strict):
    """One stream of batches: the shards of one (purpose, modality) and the variants it keeps."""

    purpose: Literal["stage0", "stage1"]
    modality: Literal["image", "video"]
    # Shard keys end in their variant; others are skipped while reading (no bytes decoded).
    variants: list[Literal["edit", "none", "cube", "speed", "tube"]] = Field(min_length=1)
    # Share of batches drawn from this stream (normalised over the streams with weight > 0).
    weight: float = Field(1.0, ge=0)


class DataConfig(_Strict):
    # The curation workdir holding shards/ and tables/shards/ (what `curate run --stage shard` wrote).
    workdir: Path
    streams: dict[str, DataStreamConfig]
    # Micro-batch per rank, per modality (a batch never mixes latent shapes). Global batch =
    # batch_size x optim.grad_accum x world size; the paper's 448 images / 112 videos.
    batch_size: dict[Literal["image", "video"], int] = {"image": 4, "video": 1}
    # Samples held (raw bytes) by each stream's shuffle buffer in each loader worker; a 480p
    # 81-frame pair is ~9 MB, so the video buffer is small; shard order is shuffled per epoch too.
    shuffle_buffer: dict[Literal["image", "video"], int] = {"image": 512, "video": 32}
    # Shards read as one unit: the shuffle buffer is drained at a unit's end, so a resume replays
    # (reads without decoding) at most chunk_shards shards per stream to find its place.
    chunk_shards: int = Field(4, ge=1)
    num_workers: int = Field(4, ge=0)  # DataLoader workers per rank (0: in the training process)
    # Batches each worker has ready ahead of the trainer (at least two transfers, below).
    prefetch_factor: int = Field(2, ge=1)
    # Batches a DataLoader worker hands over at once (the trainer deals them out in the order one
    # at a time gives). A hand-over costs a fixed ~0.6 ms of CPU across the two processes, a fifth
    # of making a demo-size batch (~180 KB, ~3 ms): 4 there; a recipe-size batch (34 MB) needs 1.
    batches_per_transfer: int = Field(1, ge=1)
    # Load the SigLIP tokens (Semantic Anchoring). Off: no semantic tokens, no L_sem.
    semantic: bool = True

    @field_validator("batch_size", "shuffle_buffer")
    @classmethod
    def _positive(cls, v: dict) -> dict:
        for k, n in v.items():
            if n < 1:
                raise ValueError(f"{k}: must be >= 1, got {n}")
        return v

    @model_validator(mode="after")
    def _streams(self) -> "DataConfig":
        if not any(s.weight > 0 for s in self.streams.values()):
            raise ValueError("data.streams: no stream has weight > 0; give at least one a positive weight")
        for name, s in self.streams.items():
            if s.modality not in self.batch_size or s.modality not in self.shuffle_buffer:
                raise ValueError(f"data.streams.{name}: modality {s.modality} needs an entry in "
                                 f"data.batch_size and data.shuffle_buffer")
            if "-" in name or "." in name:
                raise ValueError(f"data.streams.{name}: use letters, digits and _ in stream names")
        return self


class OptimConfig(_Strict):
    lr: float = Field(2e-5, gt=0)  # paper: 2e-5 in both stages
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.01, ge=0)  # torch's AdamW default; the paper does not say
    warmup_steps: int = Field(100, ge=0)  # linear warm-up from 0 (not in the paper)
    schedule: Literal["constant", "cosine"] = "constant"  # after warm-up
    min_lr_ratio: float = Field(0.0, ge=0, le=1)  # cosine floor, as a fraction of lr
    grad_clip: float | None = Field(1.0, gt=0)  # max global grad norm; null: no clipping
    grad_accum: int = Field(1, ge=1)  # micro-batches per optimiser step and rank


class EMAConfig(_Strict):
    enabled: bool = True
    decay: float = Field(0.9998, gt=0, lt=1)  # paper: 0.9998, fp32 copy, updated every step


class TrainLoopConfig(_Strict):
    out_dir: Path = Path("runs/train/default")  # checkpoints/, tb/, metrics.jsonl, summary.json
    seed: int = Field(0, ge=0)
    max_steps: int = Field(100_000, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # bf16 autocast applies on GPU only; on CPU the loop always runs fp32.
    precision: Literal["bf16", "fp32"] = "bf16"
    # auto: fsdp under torchrun with more than one process, none otherwise.
    parallel: Literal["auto", "none", "ddp", "fsdp"] = "auto"
    log_every: int = Field(10, ge=1)  # progress line
    tensorboard: bool = True
    # A step whose loss or gradient is NaN/inf is skipped (no update) and logged; this many in a
    # row stop the run, since the model will not recover by itself.
    max_bad_steps: int = Field(20, ge=1)
    cpu_threads: int | None = Field(None, ge=1)  # torch intra-op threads; null: torch's default
    # Start from another run's weights (Stage 1 from Stage 0): a checkpoint directory, its EMA or
    # raw weights (a run's out_dir means its latest checkpoint), or the released SAMA .safetensors
    # (official key names, laid over model.base_path; use model.preset official). Only the weights: optimiser, data
    # position and step start afresh. A resume
    # (checkpoint.resume) takes precedence once this run has a checkpoint of its own.
    init_from: Path | None = None
    init_weights: Literal["ema", "model"] = "ema"
    # full: every rank builds and loads the whole model (fp32) before wrapping. sharded (FSDP2, for
    # 14B): build on the meta device, shard, then stream each weight from model.base_path (and an
    # official init_from .safetensors) into the local shards; no rank holds the model (sama.load).
    load: Literal["full", "sharded"] = "full"
    # FSDP2 with precision bf16 on GPU: MixedPrecisionPolicy(param bf16, reduce fp32) on the shards.
    fsdp_mixed_precision: bool = True


class CheckpointConfig(_Strict):
    every: int = Field(1000, ge=1)  # steps; the last step is always saved
    keep_last: int = Field(3, ge=1)
    # auto: continue from out_dir/checkpoints/latest when there is one; never: start fresh (fails
    # if checkpoints exist, so a run is never overwritten silently); or a checkpoint directory.
    resume: str = "auto"


class TrainerConfig(_Strict):
    model: ModelConfig
    flow: FlowConfig = FlowConfig()
    data: DataConfig
    optim: OptimConfig = OptimConfig()
    ema: EMAConfig = EMAConfig()
    train: TrainLoopConfig = TrainLoopConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        """model.preset official also sets the official training conventions (flow.*) not given."""
        if isinstance(data, dict) and isinstance(data.get("model"), dict) \
                and data["model"].get("preset") == "official" and isinstance(data.get("flow", {}), dict):
            data = {**data, "flow": {**OFFICIAL_FLOW, **data.get("flow", {})}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "TrainerConfig":
        if self.data.semantic and not self.model.semantic_head and self.flow.lambda_sem > 0:
            raise ValueError("model.semantic_head: off while data.semantic is on and flow.lambda_sem > 0; "
                             "turn the head on, or set data.semantic: false")
        return self


_SECTIONS = tuple(f"{name}." for name in TrainerConfig.model_fields)


def load_trainer_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainerConfig:
    """Read a YAML trainer config, apply ``a.b=value`` overrides (values parsed as YAML), validate."""
    doc = read_document(path, overrides, example_file="configs/train/tiny_stage0.yaml",
                        sections_hint="model, data, ...", example_set="optim.lr=1e-4")
    return validate(TrainerConfig, doc, f"invalid trainer config {path or ''}",
                    "configs/train/stage0.yaml", named=_SECTIONS)
