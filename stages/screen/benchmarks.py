"""Fingerprints of the evaluation benchmarks named in ``screen.benchmarks`` (name -> folder or glob).

Every video and image under a benchmark root is fingerprinted like a sample (same time grid, same
hash); only informative frames are kept, so a black or title-card frame never makes a match. Every
kept frame is hashed on the windows too (``w`` >= 0; ``w`` = -1 is the whole frame, with its weak
bits): benchmarks are few, so a training clip cropped from one is found on any of its frames.
"""
from __future__ import annotations

import glob
from pathlib import Path

import pyarrow as pa

from pipeline.config_base import ConfigError
from stages.media.locate import MediaError
from stages.screen.core import Settings
from stages.screen.frames import read_media
from stages.screen.phash import ONE_FRAME_WEAK_PER_HALF, WEAK_PER_HALF, frame_fingerprint, window_hashes

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
BENCHMARK_FRAMES = pa.schema([("benchmark", pa.string()), ("clip", pa.string()), ("k", pa.int64()),
                              ("w", pa.int16()), ("h", pa.int64()), ("weak", pa.int64()), ("t", pa.float32())])


def benchmark_files(name: str, where: str) -> list[Path]:
    """The media files of one benchmark root (a folder, searched recursively, or a glob), sorted."""
    root = Path(where).expanduser()
    paths = root.rglob("*") if root.is_dir() else (Path(p) for p in glob.glob(str(root), recursive=True))
    files = sorted(p.absolute() for p in paths if p.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"screen.benchmarks.{name}: {where} holds no video or image files; point it at "
                          f"the benchmark's clips (a folder or a glob such as /data/vie-bench/**/*.mp4)")
    return files


def check_benchmarks(benchmarks: dict[str, str]) -> None:
    for name, where in benchmarks.items():
        benchmark_files(name, where)


# Benchmarks are few next to the corpus, so their frames are taken DENSER times as often: a
# training clip cut at another offset, or sped up, then still has a benchmark frame within a few
# hundredths of a second of each of its own frames (and so a hash a few bits away).
DENSER = 4


def benchmark_table(benchmarks: dict[str, str], settings: Settings) -> tuple[pa.Table, list[str]]:
    """(informative frames of every benchmark clip, the clips that could not be read)."""
    settings = Settings(settings.step_s / DENSER, settings.max_frames * DENSER)
    cols: dict[str, list] = {f.name: [] for f in BENCHMARK_FRAMES}
    unreadable = []
    for name in sorted(benchmarks):
        for path in benchmark_files(name, benchmarks[name]):
            modality = "image" if path.suffix.lower() in IMAGE_SUFFIXES else "video"
            try:
                frames = read_media(str(path), modality, None, settings.step_s, settings.max_frames)
            except MediaError as e:
                unreadable.append(f"{name}: {path}: {e}")
                continue
            per_half = ONE_FRAME_WEAK_PER_HALF if len(frames.gray) == 1 else WEAK_PER_HALF
            for k, (gray, t) in enumerate(zip(frames.gray, frames.times.tolist())):
                h, weak, keep = frame_fingerprint(gray, per_half)
                if not keep:
                    continue
                rows = [(-1, h, weak)] + [(w, x, None) for w, x in enumerate(window_hashes(gray)) if x is not None]
                for w, x, weak_bits in rows:
                    for col, v in zip(cols, (name, str(path), k, w, x, weak_bits, t)):
                        cols[col].append(v)
    return pa.table(cols, schema=BENCHMARK_FRAMES), unreadable
