"""The ``encode:`` section: frames, buckets, encoders, compute."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config_base import Strict


class EncodeConfig(Strict):
    """Pre-computation (stages/encode): frames, 480p-class buckets, Wan2.1 VAE latents, SigLIP
    anchor tokens, umT5 text embeddings. Model directories are local (never downloaded)."""

    target_area: int = 832 * 480  # 399,360 pixels, 480p class
    side_multiple: int = 32  # bucket sides; >= 16 so latents (/8) split into the DiT's 2x2 patches
    min_aspect: float = 0.5
    max_aspect: float = 2.0
    # [W, H] pixel buckets; None: generated from target_area / side_multiple / the aspect range
    # (832x480, 480x832, 640x640, 896x448 ... see stages/media/buckets.py).
    buckets: list[tuple[int, int]] | None = None
    num_frames: int = 81  # of the form 4n+1
    fps: float = Field(16.0, gt=0)  # frames are resampled to Wan2.1's 16 fps
    # longest: a clip too short for num_frames gets the longest 4n+1 that fits; exact: it is too_short.
    frame_policy: Literal["longest", "exact"] = "longest"
    min_frames: int = Field(17, ge=1)  # 4n+1; shorter videos are too_short (17 = about 1 s at 16 fps)
    vae_temporal_stride: int = 4
    vae_spatial_stride: int = 8
    latent_channels: int = 16
    anchor_frames: int = Field(1, ge=1)  # N anchor frames per target, uniformly spaced
    # uniform: segment centres (the middle frame for 1); middle; first (the official SAMA code).
    anchor: Literal["uniform", "middle", "first"] = "uniform"
    # Prepended to edit instructions before umT5 ("[Video edit] " to fine-tune the released SAMA).
    instruction_prefix: str = ""
    siglip_pool_grid: int = Field(8, ge=1)  # 8x8 = 64 local tokens per anchor

    # -- models: local directories (required when the stage runs)
    vae_path: Path | None = None  # diffusers AutoencoderKLWan, e.g. Wan2.1-T2V-14B-Diffusers/vae
    siglip_path: Path | None = None  # SigLIP checkpoint + preprocessor, e.g. siglip-so400m-patch14-384
    text_encoder_path: Path | None = None  # UMT5EncoderModel, e.g. Wan2.1-T2V-14B-Diffusers/text_encoder
    tokenizer_path: Path | None = None  # None: text_encoder_path (e.g. .../Wan2.1-T2V-14B-Diffusers/tokenizer)
    text: bool = True  # pre-compute umT5 embeddings of the final instruction
    text_max_length: int = Field(512, ge=1)  # Wan's text length

    # -- compute
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when the cluster has GPUs
    # auto: bfloat16 on GPU, float32 on CPU (the VAE's 3D convolutions run ~100x slower in bfloat16 on CPU)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    store_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    batch_size: int = Field(4, ge=1, description="clips (or anchor frames, texts) per encoder call")
    vae_tiling: bool = False  # spatial tiles: less GPU memory, a little slower
    vae_slicing: bool = False  # one clip of a batch at a time through the VAE
    # -- Ray: one unit = one encoded part. A unit's decoded frames travel from the decode task to an
    # encoder actor in one piece: samples_per_unit x 2 clips x num_frames x area x 3 bytes (~0.8 GB at
    # 4 x 81 x 832x480), so keep it small at full size.
    samples_per_unit: int = Field(4, ge=1, description="samples per unit of work (one part)")
    decode_workers: int = Field(2, ge=1, description="CPU decode tasks at once")
    encoder_actors: int = Field(1, ge=1, description="encoder actors (models loaded once in each)")
    num_gpus: float = Field(1.0, gt=0, description="GPUs per encoder actor (fractions share a GPU)")
    actor_cpus: float = Field(1.0, gt=0, description="CPUs reserved per encoder actor")

    @field_validator("num_frames", "min_frames")
    @classmethod
    def _four_n_plus_one(cls, v: int) -> int:
        if v < 1 or (v - 1) % 4:
            raise ValueError(f"must be of the form 4n+1 (e.g. 81, 49), got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "EncodeConfig":
        from stages.media.buckets import check_buckets

        if self.min_frames > self.num_frames:
            raise ValueError(f"encode.min_frames ({self.min_frames}) is above num_frames ({self.num_frames})")
        if self.side_multiple % (2 * self.vae_spatial_stride):
            raise ValueError(f"encode.side_multiple: {self.side_multiple} must be a multiple of "
                             f"{2 * self.vae_spatial_stride} (the VAE's {self.vae_spatial_stride}x times the "
                             f"DiT's 2x2 patch); the paper uses 32")
        if not 0 < self.min_aspect <= self.max_aspect:
            raise ValueError("encode.min_aspect / max_aspect: need 0 < min_aspect <= max_aspect")
        check_buckets(self.bucket_list(), self.side_multiple, self.min_aspect, self.max_aspect)
        return self

    def bucket_list(self) -> list[tuple[int, int]]:
        """The [W, H] buckets: the configured list, or the generated 480p-class set."""
        from stages.media.buckets import generate_buckets

        if self.buckets is not None:
            return [tuple(b) for b in self.buckets]
        return generate_buckets(self.target_area, self.side_multiple, self.min_aspect, self.max_aspect)
