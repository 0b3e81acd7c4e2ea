"""Koala-36M demo: one ``Koala_36M_1.csv`` in the published columns, windows of three local
"YouTube" videos, plus broken rows, in both forms people download:

* whole YouTube videos, ``videos/<youtube_id>.mp4`` (bundled real clips copied), windows cut at
  decode (``download: youtube``);
* pre-cut clips, ``clips/<videoID>.mp4`` (each window decoded from the whole video and written
  again as H.264), no window (``download: clips``).

As published, ``videoID`` names one clip (``<youtube_id>_<n>``) and ``url`` is the YouTube watch
URL of the whole video. The bundled clips last 1.0-2.0 s, so the windows are sub-second slices.
"""
from __future__ import annotations

import csv
from pathlib import Path

from pipeline.curate.demo.media import CLIPS_DIR, copy_clip, write_video

COLUMNS = ["videoID", "url", "timestamp", "caption", "clarity_score", "aesthetic_score",
           "motion_score", "video_training_suitability_score"]

# YouTube id -> bundled clip (durations: hl02 1.63 s, hl07 1.85 s, zs02 2.04 s)
VIDEOS = {
    "hL02filmRol": "hl02_source.mp4",
    "hL07walkGrp": "hl07_source.mp4",
    "zS02boyPlay": "zs02_source.mp4",
}


def _ts(start: str, end: str) -> str:
    return f"['{start}', '{end}']"


# (videoID, timestamp, caption, scores); the last three rows are deliberately broken.
ROWS = [
    ("hL02filmRol_0", _ts("00:00:00.200", "00:00:01.400"),
     "Close-up of a woman's hands slowly unrolling a strip of old film under soft warm light.",
     (0.91, 5.2, 0.35, 0.88)),
    ("hL02filmRol_1", _ts("00:00:00.500", "00:00:01.500"),
     "The camera holds still while fingers trace the edge of a film strip, the reel turning gently.",
     (0.89, 5.0, 0.41, 0.86)),
    ("hL07walkGrp_0", _ts("00:00:00.000", "00:00:01.200"),
     "A group of people walks along a street, their clothes swaying as they move toward the camera.",
     (0.84, 4.8, 0.62, 0.81)),
    ("hL07walkGrp_1", _ts("00:00:00.600", "00:00:01.800"),
     "People continue walking past storefronts; one turns their head to the left.",
     (0.83, 4.7, 0.58, 0.80)),
    ("zS02boyPlay_0", _ts("00:00:00.100", "00:00:01.900"),
     "A young boy plays outdoors, moving his arms while the camera pans slightly to the right.",
     (0.87, 5.4, 0.55, 0.85)),
    # broken: the timestamp is not a pair of HH:MM:SS.fff times
    ("zS02boyPlay_1", "[00:00:00.1 to 00:00:01.0]",
     "A boy stands in a yard.", (0.80, 4.5, 0.40, 0.70)),
    # broken: end <= start
    ("hL07walkGrp_2", _ts("00:00:01.500", "00:00:00.500"),
     "People walking backwards in time.", (0.82, 4.6, 0.50, 0.79)),
    # broken: no caption
    ("hL02filmRol_2", _ts("00:00:00.100", "00:00:00.900"), "", (0.90, 5.1, 0.30, 0.87)),
]
ERRORS = 3


def youtube_id(video_id: str) -> str:
    return video_id.rsplit("_", 1)[0]


def _seconds(hms: str) -> float:
    h, m, s = hms.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def cut_clip(src: Path, dst: Path, start: float, end: float) -> Path:
    """The frames of ``src`` shown in [start, end) s, written as a new H.264 file (a pre-cut clip)."""
    import av
    import numpy as np

    if dst.exists():
        return dst
    with av.open(str(src)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 24)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)
                  if f.time is not None and start - 1e-6 <= f.time < end - 1e-6]
    tmp = dst.with_name(dst.stem + ".tmp.mp4")
    write_video(tmp, np.stack(frames), fps=fps)
    return tmp.replace(dst)


def build(root: Path) -> dict:
    root = Path(root)
    videos, clips = root / "videos", root / "clips"
    for yt, clip in VIDEOS.items():
        copy_clip(CLIPS_DIR / clip, videos / f"{yt}.mp4")
    for video_id, ts, caption, _ in ROWS[:-ERRORS]:
        start, end = (_seconds(t.strip(" '")) for t in ts.strip("[]").split(","))
        cut_clip(videos / f"{youtube_id(video_id)}.mp4", clips / f"{video_id}.mp4", start, end)
    path = root / "Koala_36M_1.csv"
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            for video_id, ts, caption, scores in ROWS:
                w.writerow([video_id, f"https://www.youtube.com/watch?v={youtube_id(video_id)}", ts,
                            caption, *scores])
        tmp.replace(path)
    # KoalaConfig.video_root is required: the caller sets it from here (video_root with
    # download: youtube, clips_root with download: clips).
    return {"rows": len(ROWS), "errors": ERRORS, "video_root": str(videos), "clips_root": str(clips),
            "csv": str(path)}


# ---------------------------------------------------------------- synthetic scale data
_WORDS = (
    "a the man woman child dog cat car camera slowly quickly walks runs turns looks smiles holds "
    "street park room kitchen field beach mountain river light shadow red blue green white black "
    "moves left right forward backward close-up wide shot pans tilts zooms while during then "
    "wearing shirt jacket hat hair hand arm face background foreground scene bright dark soft warm"
).split()


def _hms(ms: int) -> str:
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def write_synthetic_csv(path: Path, rows: int, seed: int = 0, caption_chars: int = 1100,
                        chunk: int = 50_000) -> Path:
    """A Koala-style CSV of ``rows`` valid clips (about 1.3 KB a row, like the published files,
    whose captions average ~200 words). For scale tests and the ingest benchmark."""
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    corpus = " ".join(rng.choice(_WORDS, size=400_000))
    alphabet = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", np.uint8)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for lo in range(0, rows, chunk):
            n = min(chunk, rows - lo)
            # ~4 clips per video, like the published data (videoID repeats)
            ids = alphabet[rng.integers(0, 64, size=(n // 4 + 1, 11))].view("S11").ravel()
            vids = [v.decode() for v in ids[rng.integers(0, len(ids), size=n)]]
            starts = rng.integers(0, 600_000, size=n)
            ends = starts + rng.integers(2_000, 20_000, size=n)
            offs = rng.integers(0, len(corpus) - 2 * caption_chars, size=n)
            lens = rng.integers(caption_chars // 2, caption_chars * 3 // 2, size=n)
            scores = rng.random((n, 4)).round(4)
            for i in range(n):
                vid = vids[i]
                w.writerow([
                    vid, f"https://www.youtube.com/watch?v={vid}",
                    f"['{_hms(int(starts[i]))}', '{_hms(int(ends[i]))}']",
                    corpus[offs[i]:offs[i] + lens[i]].strip().capitalize() + ".",
                    *scores[i].tolist(),
                ])
    tmp.replace(path)
    return path
