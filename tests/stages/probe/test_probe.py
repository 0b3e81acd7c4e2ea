"""Probe stage core on real media: the bundled clips, ../shared/realclips when present, and
generated bad inputs (cut, empty, garbage, AV1, escaping symlinks, URLs, bad windows, images in
files, tars and parquet cells)."""
from __future__ import annotations

import io
import os
import re
import tarfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from manifests.schema import PROBES, SAMPLES, empty_sample, make_sample_id
from pipeline.curate.demo import media
from stages.probe import core as probe_mod
from stages.probe import ProbeError, probe_media, probe_table

CLIPS = media.CLIPS_DIR
REALCLIPS = Path(__file__).resolve().parents[3].parent / "shared" / "realclips"

# The bundled clips' published facts: (codec, width, height, fps, frames).
BUNDLED = {
    "hl01_source.mp4": ("h264", 1280, 720, 29.97, 49),
    "hl01_edited.mp4": ("h264", 832, 464, 29.97, 49),
    "hl07_source.mp4": ("h264", 832, 480, 20.0, 37),
    "hl02_source.mp4": ("h264", 480, 832, 30.0, 49),
    "zs02_source.mp4": ("h264", 896, 448, 24.0, 49),
    "hl10_edited.mp4": ("h264", 832, 480, 20.0, 21),
}


def sample(key: str, target: str | Path | None, source: str | Path | None = None, *,
           dataset: str = "t", modality: str = "video", window: tuple | None = None,
           error: str | None = None) -> dict:
    start, end = window or (None, None)
    return empty_sample(dataset, make_sample_id(dataset, key), modality=modality,
                        source_uri=None if source is None else str(source),
                        target_uri=None if target is None else str(target),
                        clip_start_s=start, clip_end_s=end, error=error)


def samples_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SAMPLES)


def write_faststart(path: Path, n: int = 30) -> Path:
    """A moov-first mp4 (what streaming sites serve): cutting it leaves a valid index that
    promises more frames than the file holds."""
    frames = media.synthetic_frames(n, 320, 192, seed=3)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=Fraction(24))
        s.width, s.height, s.pix_fmt = 320, 192, "yuv420p"
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # the index really comes first
    return path


def cut_half(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def add_member(tar: Path, name: str, data: bytes) -> None:
    with tarfile.open(tar, "a" if tar.exists() else "w") as tf:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("probe")
    c: dict[str, Path] = {"dir": d}
    # videos
    (d / "zero.mp4").write_bytes(b"")
    c["zero"] = d / "zero.mp4"
    c["cut"] = cut_half(CLIPS / "hl07_source.mp4", d / "cut.mp4")
    c["fast"] = write_faststart(d / "fast.mp4")
    c["fast_cut"] = cut_half(c["fast"], d / "fast_cut.mp4")
    (d / "random.mp4").write_bytes(os.urandom(20_000))
    c["random"] = d / "random.mp4"
    c["av1"] = media.synthetic_video(d / "av1.mp4", codec="libsvtav1")
    # a dataset root with a symlink out of it and one that stays inside
    root, outside = d / "dsroot", d / "outside"
    root.mkdir()
    outside.mkdir()
    media.copy_clip(CLIPS / "hl10_source.mp4", outside / "clip.mp4")
    media.copy_clip(CLIPS / "hl10_source.mp4", root / "clip.mp4")
    (root / "escape.mp4").symlink_to(outside / "clip.mp4")
    (root / "inside_link.mp4").symlink_to(root / "clip.mp4")
    c.update(root=root, escape=root / "escape.mp4", inside=root / "inside_link.mp4")
    # a ReCo-style video tar shard
    c["video_tar"] = d / "add_src_video_00.tar"
    add_member(c["video_tar"], "src_videos/hl07_source.mp4", (CLIPS / "hl07_source.mp4").read_bytes())
    add_member(c["video_tar"], "src_videos/hl10_source.mp4", (CLIPS / "hl10_source.mp4").read_bytes())
    c["cut_tar"] = cut_half(c["video_tar"], d / "cut_shard.tar")  # ends inside the second member
    # images: a file, tars (plain and two tars concatenated), parquet cells, broken files
    c["jpg"] = media.write_image(d / "img.jpg", 128, 96)
    c["png_tar"] = d / "shard.tar"
    add_member(c["png_tar"], "00001.2.png", media.image_bytes(64, 48, fmt="PNG"))
    first, second = d / "a.tar", d / "b.tar"
    add_member(first, "00001.1.0.jpg", media.image_bytes(40, 30))
    add_member(second, "00002.2.png", media.image_bytes(72, 40, fmt="PNG"))
    add_member(first, "00003.2.jpg", media.image_bytes(20, 20))
    add_member(second, "00003.2.jpg", media.image_bytes(88, 20))  # a repeated name: last wins
    c["concat_tar"] = d / "concat.tar"
    c["concat_tar"].write_bytes(first.read_bytes() + second.read_bytes())
    c["parquet"] = d / "images.parquet"
    images = [media.image_bytes(32 + 8 * i, 24, seed=i) for i in range(5)]
    pq.write_table(pa.table({
        "edited_image": pa.array(images, pa.binary()),
        "source_image": pa.array([{"bytes": b, "path": f"{i}.jpg"} for i, b in enumerate(images)]),
    }), c["parquet"], row_group_size=2)
    (d / "corrupt.jpg").write_bytes(b"this is no jpeg " * 200)
    c["corrupt_jpg"] = d / "corrupt.jpg"
    jpg = media.image_bytes(128, 96)
    (d / "cut.jpg").write_bytes(jpg[: len(jpg) // 2])
    c["cut_jpg"] = d / "cut.jpg"
    return c


def by_id(table: pa.Table) -> dict[str, dict]:
    return {r["sample_id"]: r for r in table.to_pylist()}


# ------------------------------------------------------------------ good media
def test_bundled_clips_measured_values():
    rows = [sample(name, CLIPS / name) for name in BUNDLED]
    rows.append(sample("pair", CLIPS / "hl01_edited.mp4", source=CLIPS / "hl01_source.mp4"))
    out = probe_table(samples_table(rows))
    assert out.schema.equals(PROBES, check_metadata=True)
    got = out.to_pylist()
    assert [r["sample_id"] for r in got] == [r["sample_id"] for r in rows]
    for name, row in zip(BUNDLED, got):
        codec, w, h, fps, frames = BUNDLED[name]
        assert (row["target_codec"], row["target_width"], row["target_height"]) == (codec, w, h), name
        assert row["target_fps"] == pytest.approx(fps, abs=1e-6)
        assert row["target_frames"] == frames == row["window_frames"]
        assert row["target_duration_s"] == pytest.approx(frames / fps, abs=1e-3)
        assert row["source_codec"] is None and row["error_kind"] is None and row["error"] is None
        assert row["probe_backend"] == "pyav+decord"
    pair = got[-1]
    assert (pair["source_width"], pair["source_height"], pair["target_width"], pair["target_height"]) \
        == (1280, 720, 832, 464)
    assert pair["source_frames"] == pair["target_frames"] == 49 and pair["error"] is None


def _readme_table() -> list[tuple[str, str, int, int, float, int]]:
    rows = []
    for line in (REALCLIPS / "README.md").read_text().splitlines():
        m = re.match(r"\|\s*(videos/\S+\.mp4)\s*\|\s*(\w+)\s*\|\s*(\d+)x(\d+)\s*\|\s*([\d.]+)\s*\|\s*(\d+)\s*\|", line)
        if m:
            rows.append((m[1], m[2], int(m[3]), int(m[4]), float(m[5]), int(m[6])))
    return rows


@pytest.mark.skipif(not REALCLIPS.is_dir(), reason=f"{REALCLIPS} not present (shared real clips are optional)")
def test_realclips_match_their_readme():
    expected = _readme_table()
    assert len(expected) == 28
    out = probe_table(samples_table([sample(f, REALCLIPS / f) for f, *_ in expected]))
    assert out.num_rows == 28
    for (f, codec, w, h, fps, frames), row in zip(expected, out.to_pylist()):
        assert row["error"] is None, (f, row["error"])
        assert (row["target_codec"], row["target_width"], row["target_height"]) == (codec, w, h), f
        assert round(row["target_fps"], 2) == fps, f
        assert row["target_frames"] == frames == row["window_frames"], f


def test_window_frames_and_repeated_file_probed_once(monkeypatch):
    calls = []
    real = probe_mod.probe_media
    monkeypatch.setattr(probe_mod, "probe_media", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    clip = CLIPS / "zs02_source.mp4"  # 24 fps, 49 frames, 2.042 s
    rows = [sample("w1", clip, window=(0.5, 1.5)),       # frames 12..35
            sample("w2", clip, window=(1.0, 2.2)),       # ends inside the tolerance: 24..48
            sample("w3", clip, window=(0.0, None)),      # open end = to the end of the clip
            sample("w4", clip, window=(1.0, 5.0)),       # beyond the clip
            sample("w5", clip, window=(1.0, 1.0))]       # empty
    got = probe_table(samples_table(rows)).to_pylist()
    assert [r["window_frames"] for r in got[:3]] == [24, 25, 49]
    assert [r["error_kind"] for r in got] == [None, None, None, "window_out_of_range", "window_out_of_range"]
    assert got[3]["error"].startswith("target: window_out_of_range:")
    assert got[3]["target_frames"] == 49 and got[3]["window_frames"] is None  # measurements stay
    assert calls == [str(clip)]  # Koala-style windows of one video: the file is opened once


# ------------------------------------------------------------------ bad media, one table
def test_bad_inputs_each_yield_one_row_with_the_right_kind(corpus):
    c = corpus
    cases = [  # (key, row, expected error_kind)
        ("good", sample("good", CLIPS / "hl07_source.mp4"), None),
        ("zero", sample("zero", c["zero"]), "zero_byte"),
        ("cut", sample("cut", c["cut"]), "truncated"),
        ("fast_ok", sample("fast_ok", c["fast"]), None),
        ("fast_cut", sample("fast_cut", c["fast_cut"]), "truncated"),
        ("random", sample("random", c["random"]), "corrupt"),
        ("av1", sample("av1", c["av1"]), "undecodable"),
        ("missing", sample("missing", c["dir"] / "nope.mp4"), "missing"),
        ("no_target", sample("no_target", None), "missing"),
        ("source_only", sample("source_only", None, source=CLIPS / "hl07_source.mp4"), None),
        ("http", sample("http", "https://example.com/v.mp4"), "unsupported_uri"),
        ("relative", sample("relative", "videos/a.mp4"), "unsupported_uri"),
        ("src_bad", sample("src_bad", CLIPS / "hl10_edited.mp4", source=c["dir"] / "gone.mp4"), "missing"),
        ("escape", sample("escape", c["escape"], dataset="esc"), "path_escape"),
        ("inside", sample("inside", c["inside"], dataset="esc"), None),
        ("unlisted", sample("unlisted", CLIPS / "hl07_source.mp4", dataset="other"), "path_escape"),
        ("tar_video", sample("tar_video", f"tar://{c['video_tar']}#src_videos/hl10_source.mp4"), None),
        ("tar_cut", sample("tar_cut", f"tar://{c['cut_tar']}#src_videos/hl10_source.mp4"), "truncated"),
        ("tar_cut_ok", sample("tar_cut_ok", f"tar://{c['cut_tar']}#src_videos/hl07_source.mp4"), None),
        ("tar_gone", sample("tar_gone", f"tar://{c['video_tar']}#src_videos/nope.mp4"), "missing"),
        ("window", sample("window", CLIPS / "hl10_edited.mp4", window=(0.5, 9.0)), "window_out_of_range"),
        ("img_jpg", sample("img_jpg", c["jpg"], modality="image"), None),
        ("img_tar", sample("img_tar", f"tar://{c['png_tar']}#00001.2.png", modality="image"), None),
        ("img_concat", sample("img_concat", f"tar://{c['concat_tar']}#00002.2.png", modality="image"), None),
        ("img_concat_first", sample("img_concat_first", f"tar://{c['concat_tar']}#00001.1.0.jpg",
                                    modality="image"), None),
        ("img_concat_dup", sample("img_concat_dup", f"tar://{c['concat_tar']}#00003.2.jpg",
                                  modality="image"), None),
        ("img_tar_gone", sample("img_tar_gone", f"tar://{c['png_tar']}#00009.2.png", modality="image"), "missing"),
        ("img_pq", sample("img_pq", f"parquet://{c['parquet']}#3/edited_image",
                          source=f"parquet://{c['parquet']}#3/source_image", modality="image"), None),
        ("img_pq_row", sample("img_pq_row", f"parquet://{c['parquet']}#7/edited_image", modality="image"), "missing"),
        ("img_corrupt", sample("img_corrupt", c["corrupt_jpg"], modality="image"), "corrupt"),
        ("img_cut", sample("img_cut", c["cut_jpg"], modality="image"), "truncated"),
    ]
    rows = [row for _, row, _ in cases]
    # Rows ingest could not resolve are not probed at all.
    rows.insert(3, sample("ingest_err", CLIPS / "hl07_source.mp4", error="bad json line"))
    roots = {"t": [str(CLIPS), str(c["dir"])], "esc": [str(c["root"])]}
    out = probe_table(samples_table(rows), decode_check="decord", allowed_roots=roots)

    assert out.schema.equals(PROBES, check_metadata=True)
    assert out.column("sample_id").to_pylist() == [r["sample_id"] for _, r, _ in cases]
    got = by_id(out)
    for key, row, kind in cases:
        r = got[row["sample_id"]]
        assert r["error_kind"] == kind, (key, r["error"])
        assert (r["error"] is None) == (kind is None), key
        if kind:
            assert r["error"].split(":")[0] in ("source", "target"), key
            assert kind in r["error"], key

    def res(key):
        return got[make_sample_id("t" if key not in ("escape", "inside") else "esc", key)]

    # good rows carry real measurements
    assert (res("fast_ok")["target_frames"], res("fast_ok")["target_width"]) == (30, 320)
    assert (res("tar_video")["target_codec"], res("tar_video")["target_frames"],
            res("tar_video")["target_width"], res("tar_video")["target_fps"]) == ("h264", 21, 832, 20.0)
    assert res("inside")["target_frames"] == 21
    assert res("tar_cut_ok")["target_frames"] == 37  # members before the cut still read
    assert "bytes" in res("tar_cut")["error"]
    assert (res("img_jpg")["target_codec"], res("img_jpg")["target_width"], res("img_jpg")["target_height"],
            res("img_jpg")["target_frames"], res("img_jpg")["target_fps"], res("img_jpg")["window_frames"]) \
        == ("jpeg", 128, 96, 1, None, 1)
    assert res("img_jpg")["probe_backend"] == "pil"
    assert (res("img_tar")["target_codec"], res("img_tar")["target_width"]) == ("png", 64)
    assert (res("img_concat")["target_width"], res("img_concat")["target_height"]) == (72, 40)
    assert res("img_concat_first")["target_width"] == 40
    assert res("img_concat_dup")["target_width"] == 88
    pq_row = res("img_pq")  # row 3 lives in the second row group; its width is 32 + 8 * 3
    assert (pq_row["target_width"], pq_row["source_width"], pq_row["target_codec"]) == (56, 56, "jpeg")
    # failures keep what was measured before the failure
    av1 = res("av1")
    assert (av1["target_codec"], av1["target_frames"], av1["target_width"]) == ("av1", 17, 320)
    assert av1["error"].startswith("target: undecodable: decord")
    fast_cut = res("fast_cut")
    assert (fast_cut["target_codec"], fast_cut["target_width"], fast_cut["target_frames"]) == ("h264", 320, None)
    assert "of 30 declared frames" in fast_cut["error"]
    src_bad = res("src_bad")
    assert src_bad["error"].startswith("source: missing:")
    assert (src_bad["source_codec"], src_bad["target_frames"]) == (None, 21)
    assert res("window")["target_frames"] == 21 and res("window")["window_frames"] is None


def test_av1_reads_with_pyav_and_check_can_be_skipped(corpus):
    rows = [sample("av1", corpus["av1"]), sample("h264", CLIPS / "hl10_source.mp4")]
    for check, backend in (("pyav", "pyav"), ("none", "pyav-demux")):
        got = probe_table(samples_table(rows), decode_check=check).to_pylist()
        assert [r["error"] for r in got] == [None, None], check
        assert (got[0]["target_codec"], got[0]["target_frames"], got[0]["target_height"]) == ("av1", 17, 192)
        assert got[1]["target_frames"] == 21 and got[0]["probe_backend"] == backend


def test_no_roots_means_no_containment_check(corpus):
    got = probe_table(samples_table([sample("escape", corpus["escape"], dataset="esc")])).to_pylist()
    assert got[0]["error"] is None and got[0]["target_frames"] == 21


def test_probe_media_raises_probe_error(corpus):
    with pytest.raises(ProbeError) as e:
        probe_media("http://host/x.mp4", "video")
    assert e.value.kind == "unsupported_uri"
    with pytest.raises(ProbeError) as e:
        probe_media(str(corpus["escape"]), "video", "none", roots=[str(corpus["root"])])
    assert e.value.kind == "path_escape" and "outside" in e.value.message
    with pytest.raises(ProbeError) as e:
        probe_media(str(corpus["dir"] / "absent.mp4"), "video")
    assert e.value.kind == "missing"
    info = probe_media(str(CLIPS / "hl02_source.mp4"), "video", "pyav")
    assert (info.width, info.height, info.frames) == (480, 832, 49)
    with pytest.raises(ValueError):
        probe_table(samples_table([]), decode_check="opencv")


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "tone.m4a"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), dtype="float32"), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for _ in range(8):
            c.mux(s.encode(frame))
        c.mux(s.encode())
    got = probe_table(samples_table([sample("audio", path)])).to_pylist()
    assert got[0]["error_kind"] == "no_video_stream"
    assert got[0]["error"] == "target: no_video_stream: streams: ['audio']"  # its index is intact


def _garbled_moov(src: Path, dst: Path, how: str) -> Path:
    """A copy of the H.264 mp4 ``src`` whose index is damaged ``how``; the media data is intact."""
    data = bytearray(src.read_bytes())
    moov = data.index(b"moov") - 4
    end = moov + int.from_bytes(data[moov:moov + 4], "big")
    noise = np.random.default_rng(7).integers(0, 256, len(data), dtype=np.uint8).tobytes()
    if how == "payload":  # everything after moov's own header
        data[moov + 8:end] = noise[:end - moov - 8]
    elif how == "trak_type":  # the track box renamed: the index lists no track
        t = data.index(b"trak", moov)
        data[t:t + 4] = b"xxxx"
    elif how == "stsd":  # the sample description (the codec) overwritten
        t = data.index(b"stsd", moov) - 4
        data[t:t + 64] = noise[:64]
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("how,shows", [("payload", []), ("trak_type", []), ("stsd", ["video"])])
def test_a_garbled_moov_is_corrupt_not_no_video_stream(tmp_path, how, shows):
    """FFmpeg opens an mp4 whose index is garbled (it skips what it cannot parse) and shows no
    streams, or a video stream without a codec: that file is corrupt, its video is not absent."""
    src = media.synthetic_video(tmp_path / "ok.mp4", codec="libx264")
    bad = _garbled_moov(src, tmp_path / f"{how}.mp4", how)
    with av.open(str(bad)) as c:  # the container parses ...
        assert [s.type for s in c.streams] == shows
    tar = tmp_path / "shard.tar"
    add_member(tar, "bad.mp4", bad.read_bytes())
    got = probe_table(samples_table([sample("file", bad), sample("member", f"tar://{tar}#bad.mp4")])).to_pylist()
    for row in got:  # ... but its index is damaged: corrupt, from a file or from a tar member
        assert row["error_kind"] == "corrupt", row
        assert "'moov' index" in row["error"], row
    assert probe_media(str(src), "video", "pyav").frames == 17  # the intact original is fine



def test_an_exif_rotated_photo_is_measured_upright(tmp_path):
    """Stored 128x64 with EXIF orientation 6: probed as 64 wide, 128 high, the picture the judge
    and the encoder read (stages.media.read.read_image)."""
    from PIL import Image

    from stages.media.read import read_image
    from stages.probe.core import probe_media

    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    Image.fromarray(np.zeros((64, 128, 3), dtype=np.uint8)).save(path, exif=exif)
    info = probe_media(str(path), "image")
    assert (info.width, info.height) == (64, 128)
    assert read_image(str(path)).shape[1:3] == (info.height, info.width)
    plain = tmp_path / "plain.jpg"
    Image.fromarray(np.zeros((64, 128, 3), dtype=np.uint8)).save(plain)
    plain_info = probe_media(str(plain), "image")
    assert (plain_info.width, plain_info.height) == (128, 64)


# ------------------------------------------------------------------ which decoder checks frame 0
def _h264(path: Path, pix_fmt: str = "yuv420p", n: int = 12) -> Path:
    """A real x264 clip in ``path``'s container (.mkv declares no frame count) and pixel format."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(24))
        s.width, s.height, s.pix_fmt = 160, 96, pix_fmt
        for f in media.synthetic_frames(n, 160, 96, seed=5):
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format=pix_fmt)))
        c.mux(s.encode())
    return path


def test_frame_zero_checked_by_the_decoder_that_reads_the_file(monkeypatch, tmp_path):
    """H.264 4:2:0 mp4s (what the judge and encode read with PyAV alone) are checked with PyAV in
    the demux pass, with the very rows decord's check gave; other files still open decord."""
    videos = sorted(CLIPS.glob("*.mp4")) + sorted((REALCLIPS / "videos").glob("*.mp4"))[:8]
    others = [_h264(tmp_path / "yuv444.mp4", "yuv444p"), _h264(tmp_path / "nocount.mkv")]
    rows = [sample(f"v{i}", v) for i, v in enumerate(videos + others)]
    opened = []
    real_check = probe_mod.decord_first_frame
    monkeypatch.setattr(probe_mod, "decord_first_frame", lambda src: (opened.append(src), real_check(src)))
    fast = probe_table(samples_table(rows))
    assert opened == [str(v) for v in others]

    opened.clear()
    monkeypatch.setattr(probe_mod, "reads_exactly", lambda codec, pix_fmt: False)  # decord for all
    assert fast.equals(probe_table(samples_table(rows)))
    assert len(opened) == len(rows)
    assert fast.column("error").null_count == len(rows)
    assert set(fast.column("probe_backend").to_pylist()) == {"pyav+decord"}


def test_a_broken_first_keyframe_keeps_decords_error_row(monkeypatch, tmp_path):
    """PyAV refuses the zeroed keyframe; decord's check then runs and its error is the row's, as
    before PyAV checked frame 0."""
    data = bytearray((CLIPS / "hl07_source.mp4").read_bytes())
    with av.open(str(CLIPS / "hl07_source.mp4")) as c:
        first = next(p for p in c.demux(video=0) if p.size)
        pos, size = first.pos, first.size
    data[pos + 4:pos + size] = bytes(size - 4)  # keep the NAL length, zero its payload
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(data))
    opened = []
    real_check = probe_mod.decord_first_frame
    monkeypatch.setattr(probe_mod, "decord_first_frame", lambda src: (opened.append(src), real_check(src)))
    row = probe_table(samples_table([sample("broken", broken)])).to_pylist()[0]
    assert opened == [str(broken)]
    assert row["error_kind"] == "undecodable" and row["error"].startswith("target: undecodable: decord")
    assert row["target_frames"] == 37  # the demux's measurements stay
