"""MotionBench caption split: train.jsonl lines into `samples` rows."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from manifests.io import list_parts, read_table
from manifests.schema import CATEGORIES, SAMPLES, make_sample_id
from pipeline.curate.config import MotionBenchConfig
from pipeline.curate.demo import motionbench as demo
from pipeline.curate.demo.media import CLIPS_DIR, copy_clip
from stages.ingest.core import ingest_unit
from stages.ingest.motionbench import MotionBenchAdapter


def ingest(cfg: MotionBenchConfig, workdir: Path):
    adapter = MotionBenchAdapter(cfg)
    results = [ingest_unit(adapter, u, workdir) for u in adapter.units()]
    return results, read_table(workdir, "samples")


@pytest.fixture
def demo_root(tmp_path):
    return tmp_path / "mb", demo.build(tmp_path / "mb")


def test_demo_rows(demo_root, tmp_path):
    root, info = demo_root
    results, t = ingest(MotionBenchConfig(root=root), tmp_path / "w")
    assert [(r.rows, r.errors) for r in results] == [(info["rows"], info["errors"])]
    assert t.schema.equals(SAMPLES, check_metadata=False)
    rows = t.to_pylist()
    assert len(rows) == 6  # the trailing blank line is not a record

    good, broken = rows[:3], rows[3:]
    for row, rec in zip(good, demo.GOOD):
        assert row["error"] is None
        assert row["sample_id"] == make_sample_id("motionbench", rec["video_path"])
        assert row["caption"] == row["instruction"] == rec["motion_caption"]
        assert (row["modality"], row["task"], row["source_uri"]) == ("video", "t2v", None)
        assert row["category"] == "motion" and row["category"] in CATEGORIES and row["category_raw"] is None
        target = Path(row["target_uri"])
        assert target == (root / demo.SPLIT / "videos" / rec["video_path"]).resolve() and target.is_file()
        assert json.loads(row["raw_record"]) == rec

    assert broken[0]["error"].startswith("malformed JSON line 4")
    assert json.loads(broken[0]["raw_record"]) == {"line": 4, "text": demo.BROKEN[0]}
    assert broken[1]["error"] == "missing motion_caption"
    assert broken[1]["sample_id"] == make_sample_id("motionbench", "mb_0005.mp4")
    assert broken[2]["error"].startswith("path escapes the dataset root")
    assert json.loads(broken[2]["raw_record"])["video_path"] == "../../../etc/passwd"
    assert all(r["target_uri"] is None for r in broken)
    assert len({r["sample_id"] for r in rows}) == len(rows)


def test_reruns_give_the_same_ids_and_bytes(demo_root, tmp_path):
    root, _ = demo_root
    cfg = MotionBenchConfig(root=root)
    _, a = ingest(cfg, tmp_path / "w1")
    _, b = ingest(cfg, tmp_path / "w2")
    assert a["sample_id"].to_pylist() == b["sample_id"].to_pylist()
    pa_, pb = list_parts(tmp_path / "w1", "samples"), list_parts(tmp_path / "w2", "samples")
    assert len(pa_) == len(pb) == 1 and pa_[0].read_bytes() == pb[0].read_bytes()


def test_video_path_spellings_and_odd_records(tmp_path):
    split = tmp_path / demo.SPLIT
    (split / "videos").mkdir(parents=True)
    for name in ("a.mp4", "b.mp4", "c.mp4", "sub/d.mp4"):
        copy_clip(CLIPS_DIR / "hl01_source.mp4", split / "videos" / name)
    lines = [
        {"video_path": "a.mp4", "motion_caption": "bare name"},
        {"video_path": "videos/b.mp4", "motion_caption": "relative to the split folder"},
        {"video_path": f"{demo.SPLIT}/videos/c.mp4", "motion_caption": "relative to the root"},
        {"video_path": "./sub/d.mp4", "motion_caption": "nested"},
        {"video_path": "/etc/passwd", "motion_caption": "absolute"},
        {"motion_caption": "no path"},
        ["not", "an", "object"],
        {"video_path": "e.mp4", "motion_caption": "not downloaded"},
        {"video": "a.mp4", "caption": "other field names"},
    ]
    (split / "train.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    # the QA split sits beside it and must not be read
    (tmp_path / "video_info.meta.jsonl").write_text(json.dumps({"video_path": "qa.mp4", "qa": []}) + "\n")
    _, t = ingest(MotionBenchConfig(root=tmp_path), tmp_path / "w")
    rows = t.to_pylist()
    assert len(rows) == len(lines)
    videos = (split / "videos").resolve()
    assert [r["target_uri"] for r in rows[:4]] == [
        str(videos / "a.mp4"), str(videos / "b.mp4"), str(videos / "c.mp4"), str(videos / "sub" / "d.mp4"),
    ]
    assert rows[4]["error"].startswith("path escapes the dataset root")
    assert rows[5]["error"] == "missing video_path"
    assert rows[6]["error"] == "line 7 is not a JSON object"
    assert rows[7]["error"] == (f"not found: video_path 'e.mp4'; looked in: {videos / 'e.mp4'}, "
                                f"members of {demo.SPLIT}/videos/*.tar")
    assert rows[8]["target_uri"] == str(videos / "a.mp4") and rows[8]["caption"] == "other field names"
    assert not any("qa.mp4" in r["raw_record"] for r in rows)


def test_missing_jsonl_is_a_unit_error(tmp_path):
    results, t = ingest(MotionBenchConfig(root=tmp_path), tmp_path / "w")
    assert (results[0].rows, results[0].errors) == (1, 1)
    assert "FileNotFoundError" in t["error"][0].as_py()


def test_videos_packed_in_tar_shards(tmp_path):
    import tarfile

    split = tmp_path / demo.SPLIT
    (split / "videos").mkdir(parents=True)
    with tarfile.open(split / "videos" / "videos_00.tar", "w") as tf:
        tf.add(CLIPS_DIR / "hl01_source.mp4", arcname="x.mp4")
    (split / "train.jsonl").write_text(json.dumps({"video_path": "x.mp4", "motion_caption": "in a shard"}) + "\n")
    _, t = ingest(MotionBenchConfig(root=tmp_path), tmp_path / "w")
    [row] = t.to_pylist()
    assert row["error"] is None
    assert row["target_uri"] == f"tar://{(split / 'videos' / 'videos_00.tar').resolve()}#x.mp4"
