"""The ``datasets:`` section: one entry per published dataset layout (stages/ingest/<name>.py)."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from pipeline.config_base import Strict


class DatasetConfig(Strict):
    enabled: bool = True
    root: Path
    license: str = ""

    # The fields naming directories a sample's media may lie in (locate's allowed roots).
    MEDIA_ROOTS: ClassVar[tuple[str, ...]] = ("root", "video_root", "image_root", "output_root")

    @property
    def resolved_root(self) -> Path:
        return self.root.expanduser().resolve()

    def paths(self) -> dict[str, Path]:
        """Every path field that is set: each must exist when a stage that reads the data starts."""
        return {name: value for name, value in self if isinstance(value, Path)}

    def media_roots(self) -> list[Path]:
        """Every directory the config names (``root``, ``video_root``, ``part2_root``,
        ``annotations_root``, ``output_root`` ...), and the folders of GPT-Image-Edit's
        ``image_roots``: samples may point into any of them, so probe, judge and encode allow them all."""
        named = [p for f in self.MEDIA_ROOTS if (p := getattr(self, f, None)) is not None]
        every_path = [p for p in self.paths().values() if not p.is_file()]  # folders, not a CSV it names
        image_dir = getattr(self, "image_dir", None)
        folders = [self.root / image_dir / rel for rel in (getattr(self, "image_roots", None) or {}).values()
                   if isinstance(image_dir, str)]
        return list(dict.fromkeys([*named, *every_path, *folders]))


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
    # A CSV larger than this is read as several units of about this many MB (byte ranges that
    # start on record boundaries): the ten ~4.9 GB files use every core, and a unit killed
    # half-way re-reads its range, not its file. Sample ids do not depend on it.
    unit_mb: int = Field(256, ge=1, description="byte-range unit size for large CSVs")

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


class DatasetsConfig(Strict):
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
