"""OpenVE-3M ingest: the demo layout through the real ingest core, read back from Parquet."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from manifests.io import list_parts, read_table
from manifests.schema import CATEGORIES, make_sample_id
from pipeline.curate.config import OpenVEConfig
from pipeline.curate.demo import openve as demo
from pipeline.curate.demo.media import copy_clip, real_pairs
from stages.ingest import get_adapter
from stages.ingest.core import ingest_adapter
from stages.ingest.openve import category_of, detect_separator


def ingest(cfg: OpenVEConfig, workdir: Path) -> dict[str, dict]:
    adapter = get_adapter("openve", cfg)
    ingest_adapter(adapter, workdir)
    table = read_table(workdir, "samples")
    return {r["sample_id"]: r for r in table.to_pylist()} if table is not None else {}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("openve")
    return root, demo.build(root)


@pytest.fixture(scope="module")
def rows(corpus, tmp_path_factory):
    root, _ = corpus
    return ingest(OpenVEConfig(root=root), tmp_path_factory.mktemp("work"))


def test_counts_and_categories(corpus, rows):
    _, facts = corpus
    assert len(rows) == facts["rows"]
    assert sum(r["error"] is not None for r in rows.values()) == facts["errors"]
    for category, n in facts["categories"].items():
        assert sum(r["category"] == category for r in rows.values()) == n
    assert sum(r["split"] == "train" and r["error"] is None for r in rows.values()) == facts["train_pairs"]
    assert sum(r["split"] == "bench" for r in rows.values()) == facts["bench_rows"]
    for r in rows.values():
        assert r["dataset"] == "openve" and (r["modality"], r["task"]) == ("video", "edit")
        assert r["license"] == "CC-BY-NC-4.0" and r["category"] in CATEGORIES
        assert isinstance(json.loads(r["raw_record"]), dict)


def test_csv_files_pairs_relative_to_videos(corpus, rows):
    root, facts = corpus
    local = rows[make_sample_id("openve", "local_change/edited/hl07.mp4")]
    assert (local["subset"], local["category_raw"], local["category"]) == ("local_change", "local_change", "local_change")
    assert local["target_uri"] == str((root / "videos/local_change/edited/hl07.mp4").resolve())
    assert local["source_uri"] == str((root / "videos/local_change/original/hl07.mp4").resolve())
    assert local["instruction"] and local["skip_frames"] == facts["skip_frames"] == 4
    bg = rows[make_sample_id("openve", "background_change/edited/hl01.mp4")]  # the separator inside a quoted prompt
    assert bg["category"] == "background" and bg["instruction"].endswith("; keep the lighting")
    assert bg["error"] is None
    add = rows[make_sample_id("openve", "local_add/edited/zs02.mp4")]
    assert (add["category_raw"], add["category"], add["error"]) == ("local_add", "add", None)
    assert add["target_uri"] == str((root / "videos/local_add/edited/zs02.mp4").resolve())
    for r in rows.values():
        for uri in (r["source_uri"], r["target_uri"]):
            if uri is not None:
                assert Path(uri).is_file() and Path(uri).is_relative_to(root.resolve())


def test_video_root_setting_and_skip_frames(corpus, tmp_path):
    root, _ = corpus
    # CSVs in one place, the videos elsewhere (video_root): the CSV paths start there.
    elsewhere = tmp_path / "disk2"
    pair = real_pairs()[0]
    copy_clip(pair.edited, elsewhere / "global_style/e.mp4")
    copy_clip(pair.source, elsewhere / "global_style/s.mp4")
    meta = tmp_path / "meta"
    (meta / "csv_files").mkdir(parents=True)
    (meta / "csv_files/global_style.csv").write_text("video;original_video;prompt\n"
                                                     "global_style/e.mp4;global_style/s.mp4;Make it an oil painting.\n"
                                                     "global_style/x.mp4;global_style/s.mp4;Missing.\n")
    out = ingest(OpenVEConfig(root=meta, video_root=elsewhere, skip_frames=0), tmp_path / "w")
    ok = out[make_sample_id("openve", "global_style/e.mp4")]
    assert ok["target_uri"] == str((elsewhere / "global_style/e.mp4").resolve()) and ok["category"] == "style"
    assert ok["skip_frames"] == 0
    # a prefix from the authors' machine is dropped up to videos/
    (meta / "csv_files/global_style.csv").write_text("video;original_video;prompt\n"
                                                     "/mnt/x/Lewandofski-OpenVE-3M/videos/global_style/e.mp4;"
                                                     "OpenVE-3M/videos/global_style/s.mp4;Paint.\n")
    [prefixed] = ingest(OpenVEConfig(root=meta, video_root=elsewhere), tmp_path / "w2").values()
    assert prefixed["error"] is None and prefixed["target_uri"] == ok["target_uri"]
    assert prefixed["source_uri"] == str((elsewhere / "global_style/s.mp4").resolve())
    missing = out[make_sample_id("openve", "global_style/x.mp4")]
    assert missing["error"] == (f"not found: video 'global_style/x.mp4'; looked in: "
                                f"{(elsewhere / 'global_style/x.mp4').resolve()}")


def test_bench_rows_have_a_source_and_no_target(corpus, rows):
    bench = [r for r in rows.values() if r["split"] == "bench"]
    good = next(r for r in bench if r["error"] is None)
    assert (good["category_raw"], good["category"], good["subset"]) == ("subtitle_edit", "subtitles", "benchmark_videos")
    assert good["target_uri"] is None and Path(good["source_uri"]).is_file()
    assert good["instruction"].startswith("Replace the subtitles")
    bad = next(r for r in bench if r["error"] is not None)
    assert bad["error"] == "missing or empty field: original_video" and bad["category"] == "creative"


def test_error_rows(corpus, rows):
    root, _ = corpus
    errors = sorted(r["error"] for r in rows.values() if r["error"])
    # looked for in videos/, the root, then the CSV's folder
    tried = ", ".join(str((root / d / "local_change/original/never.mp4").resolve())
                      for d in ("videos", ".", "csv_files"))
    assert errors == [
        "missing or empty field: original_video",
        "missing or empty field: prompt",
        f"not found: original_video 'local_change/original/never.mp4'; looked in: {tried}",
        "path escapes the dataset root: '../../../etc/passwd'",
    ]
    empty = next(r for r in rows.values() if r["error"] == "missing or empty field: prompt")
    assert empty["sample_id"] == make_sample_id("openve", "local_change/edited/hl07_b.mp4")
    assert json.loads(empty["raw_record"])["video"] == "local_change/edited/hl07_b.mp4"
    nf = next(r for r in rows.values() if (r["error"] or "").startswith("not found"))
    assert nf["category"] == "local_change" and nf["source_uri"] is None


def test_rerun_is_stable_and_byte_identical(corpus, tmp_path):
    root, _ = corpus
    cfg = OpenVEConfig(root=root)
    a, b = ingest(cfg, tmp_path / "a"), ingest(cfg, tmp_path / "b")
    assert a.keys() == b.keys()
    pa_, pb_ = list_parts(tmp_path / "a", "samples"), list_parts(tmp_path / "b", "samples")
    assert len(pa_) == 4
    assert [p.relative_to(tmp_path / "a") for p in pa_] == [p.relative_to(tmp_path / "b") for p in pb_]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(pa_, pb_))


def test_explicit_separator_and_odd_csvs(tmp_path):
    root = tmp_path / "openve"
    pair = real_pairs()[0]
    copy_clip(pair.edited, root / "v/e.mp4")
    copy_clip(pair.source, root / "v/s.mp4")
    copy_clip(pair.edited, root / "v/e3.mp4")
    # No csv_files/ folder: any CSV under the root is read, paths relative to the root.
    (root / "Camera Multi-Shot Edit.csv").write_text(
        "video;original_video;prompt;quality_score\n"
        "v/e.mp4;v/s.mp4;Cut to a close-up.;4.5\n"
        "v/e2.mp4;v/s.mp4\n"  # short row
        "\n"  # blank line: not a record
    )
    (root / "extra.csv").write_text("video,original_video,prompt,edited_type\nv/e3.mp4,v/s.mp4,Add snow.,local_add\n")
    (root / "unrelated.csv").write_text("a,b\n1,2\n")
    out = ingest(OpenVEConfig(root=root), tmp_path / "auto")
    assert len(out) == 4
    cam = out[make_sample_id("openve", "v/e.mp4")]
    assert (cam["category"], cam["category_raw"]) == ("camera", "Camera Multi-Shot Edit")
    assert dict(cam["native_scores"]) == {"quality_score": 4.5}
    short = out[make_sample_id("openve", "v/e2.mp4")]
    assert short["error"] == "row has 2 fields, header has 4"
    # file name names no category: the row's own edited_type is used
    extra = out[make_sample_id("openve", "v/e3.mp4")]
    assert (extra["category_raw"], extra["category"]) == ("local_add", "add")
    unknown = next(r for r in out.values() if r["error"] and r["error"].startswith("unreadable unrelated.csv"))
    assert "no edited-video column" in unknown["error"]
    # A fixed separator that does not match a file turns that file into one unit error row.
    fixed = ingest(OpenVEConfig(root=root, separator=";", csv_glob="Camera*.csv"), tmp_path / "semi")
    assert {r["error"] for r in fixed.values()} == {None, "row has 2 fields, header has 4"}
    wrong = ingest(OpenVEConfig(root=root, separator=",", csv_glob="Camera*.csv"), tmp_path / "comma")
    [row] = wrong.values()
    assert row["error"].startswith("unreadable Camera Multi-Shot Edit.csv: ValueError")


@pytest.mark.parametrize("name,category", [
    ("Global Style", "style"), ("global_style", "style"), ("Background Change", "background"),
    ("background_change", "background"), ("Local Change", "local_change"), ("local_change", "local_change"),
    ("Local_Change_train", "local_change"), ("LocalChange-part01", "local_change"),
    ("Local Remove", "remove"), ("local_remove", "remove"), ("Local Add", "add"), ("local_add", "add"),
    ("Subtitles Edit", "subtitles"), ("subtitle_edit", "subtitles"),
    ("Camera Multi-Shot Edit", "camera"), ("camera_edit", "camera"),
    ("Creative Edit", "creative"), ("creative_edit", "creative"), ("address_book", "other"),
])
def test_category_of(name, category):
    assert category_of(name) == category


@pytest.mark.parametrize("text,sep", [
    ("video;original_video;prompt\na;b;c, d\n", ";"),
    ("video,original_video,prompt\na,b,\"c; d\"\n", ","),
    ("edited_type\tprompt\toriginal_video\nx\ty\tz\n", "\t"),
    ("x;y;z\n1;2;3\n4;5;6\n", ";"),  # no known column: csv.Sniffer decides
])
def test_detect_separator(text, sep):
    assert detect_separator(text.splitlines()[0], text) == sep


def test_demo_build_is_idempotent(tmp_path):
    first = demo.build(tmp_path)
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert demo.build(tmp_path) == first
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == stamp
    assert sum(p.stat().st_size for p in stamp) < 3_000_000
