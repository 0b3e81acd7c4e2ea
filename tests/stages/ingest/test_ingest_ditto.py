"""Ditto-1M ingest: the demo layout through the real ingest core, read back from Parquet."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from manifests.io import list_parts, read_table
from manifests.schema import CATEGORIES, make_sample_id
from pipeline.curate.config import DittoConfig
from pipeline.curate.demo import ditto as demo
from pipeline.curate.demo.media import copy_clip, real_pairs
from stages.ingest import get_adapter
from stages.ingest.core import ingest_adapter, ingest_unit
from stages.ingest.ditto import canonical_path, category_of


def ingest(cfg: DittoConfig, workdir: Path) -> dict[str, dict]:
    adapter = get_adapter("ditto", cfg)
    ingest_adapter(adapter, workdir)
    return {r["sample_id"]: r for r in read_table(workdir, "samples").to_pylist()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ditto")
    facts = demo.build(root)
    return root, facts


@pytest.fixture(scope="module")
def rows(corpus, tmp_path_factory):
    root, _ = corpus
    return ingest(DittoConfig(root=root), tmp_path_factory.mktemp("work"))


def by_edited(rows: dict, edited_folder: str) -> dict:
    [row] = [r for r in rows.values() if r["category_raw"] == edited_folder and r["error"] is None]
    return row


def test_counts_match_the_demo_facts(corpus, rows):
    _, facts = corpus
    assert len(rows) == facts["rows"]
    assert sum(r["error"] is not None for r in rows.values()) == facts["errors"]
    ok = [r for r in rows.values() if r["error"] is None]
    for category, n in facts["categories"].items():
        assert sum(r["category"] == category for r in rows.values()) == n
    for r in rows.values():
        assert r["dataset"] == "ditto" and r["modality"] == "video" and r["task"] == "edit"
        assert r["license"] == "CC-BY-NC-SA-4.0"
        assert r["category"] is None or r["category"] in CATEGORIES
        json.loads(r["raw_record"])  # every row keeps its original record
    assert {r["subset"] for r in ok} == {"ditto_demo"} and {r["split"] for r in ok} == {"train"}


def test_ids_come_from_the_edited_path(corpus, rows):
    _, facts = corpus
    h = facts["hashes"]["style"]
    # Both spellings of an edited path (with and without `videos/`) give the id of the canonical one.
    for folder, n in (("global_style1", 1), ("global_style2", 2)):
        sid = make_sample_id("ditto", f"{folder}/0000/{h}_{n}.mp4")
        assert rows[sid]["category_raw"] == folder and rows[sid]["category"] == "style"


def test_pairs_resolve_to_existing_files(corpus, rows):
    root, facts = corpus
    ok = [r for r in rows.values() if r["error"] is None]
    assert len(ok) == 4
    for r in ok:
        for uri in (r["source_uri"], r["target_uri"]):
            assert Path(uri).is_absolute() and Path(uri).is_file()
            assert Path(uri).resolve().is_relative_to(root.resolve())
        assert r["instruction"]
        # Edited files share their source's hash: <hash>_<n>.mp4 next to source/<hash>.mp4.
        assert Path(r["target_uri"]).stem.rsplit("_", 1)[0] == Path(r["source_uri"]).stem


def test_nested_extraction_and_videos_prefix(corpus, rows):
    root, facts = corpus
    local = by_edited(rows, "local")
    assert local["category"] == "local_change"
    h = facts["hashes"]["local"]
    assert local["source_uri"] == str((root / "videos/source/source/0001" / f"{h}.mp4").resolve())
    assert local["target_uri"] == str((root / "videos/local/local/0001" / f"{h}_4.mp4").resolve())
    assert local["sample_id"] == make_sample_id("ditto", f"local/0001/{h}_4.mp4")  # nesting is not in the id
    style2 = by_edited(rows, "global_style2")  # listed as videos/global_style2/...
    assert style2["target_uri"].endswith(f"videos/global_style2/0000/{facts['hashes']['style']}_2.mp4")


def test_every_pair_gets_its_caption_keyed_without_source(corpus, rows):
    _, facts = corpus
    # the captions file spells paths 0000/<hash>.mp4, the metadata source/0000/<hash>.mp4
    for folder, kind in (("global_style1", "style"), ("global_style2", "style"),
                         ("global_freeform2", "freeform"), ("local", "local")):
        assert by_edited(rows, folder)["caption"] == facts["captions"][kind]


def test_caption_found_by_hash_when_the_folder_differs(tmp_path):
    root = tmp_path / "d"
    copy_clip(real_pairs()[0].edited, root / "videos/global_style1/0003/abc_1.mp4")
    copy_clip(real_pairs()[0].source, root / "videos/source/0003/abc.mp4")
    (root / "training_metadata").mkdir(parents=True)
    (root / "training_metadata/m.json").write_text(json.dumps(
        [{"source_path": "source/0003/abc.mp4", "instruction": "x", "edited_path": "global_style1/0003/abc_1.mp4"}]))
    (root / "source_video_captions").mkdir()
    (root / "source_video_captions/c.json").write_text(json.dumps([{"path": "9999/abc.mp4", "caption": "by hash"}]))
    [row] = ingest(DittoConfig(root=root), tmp_path / "w").values()
    assert row["error"] is None and row["caption"] == "by hash"


def test_error_rows_keep_reason_and_record(rows):
    errors = {r["error"]: r for r in rows.values() if r["error"] is not None}
    missing = errors["missing or empty field: instruction"]
    assert missing["category_raw"] == "global_freeform1" and missing["category"] == "freeform"
    assert json.loads(missing["raw_record"])["edited_path"].startswith("global_freeform1/0000/")
    escape = next(r for e, r in errors.items() if e.startswith("path escapes the dataset root"))
    assert "../../etc/passwd" in escape["error"] and escape["source_uri"] is None
    assert escape["sample_id"] == make_sample_id("ditto", "../../etc/passwd")
    unit = next(r for e, r in errors.items() if e.startswith("unreadable ditto_truncated.json"))
    assert "JSONDecodeError" in unit["error"]


def test_rerun_is_stable_and_byte_identical(corpus, tmp_path):
    root, _ = corpus
    cfg = DittoConfig(root=root)
    a, b = ingest(cfg, tmp_path / "a"), ingest(cfg, tmp_path / "b")
    assert a.keys() == b.keys()
    parts_a, parts_b = list_parts(tmp_path / "a", "samples"), list_parts(tmp_path / "b", "samples")
    assert [p.relative_to(tmp_path / "a") for p in parts_a] == [p.relative_to(tmp_path / "b") for p in parts_b]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(parts_a, parts_b))
    # A third run in the same workdir skips every finished unit.
    adapter = get_adapter("ditto", cfg)
    assert all(ingest_unit(adapter, u, tmp_path / "a").skipped for u in adapter.units())


def test_diffsynth_csvs_give_the_same_samples(corpus, rows, tmp_path):
    root, _ = corpus
    csv_rows = ingest(DittoConfig(root=root, metadata_glob="csvs_for_DiffSynth/*.csv"), tmp_path)
    assert len(csv_rows) == 2 and all(r["error"] is None for r in csv_rows.values())
    for sid, r in csv_rows.items():
        assert rows[sid]["target_uri"] == r["target_uri"] and rows[sid]["source_uri"] == r["source_uri"]
        assert r["category"] == "style" and r["subset"] == "ditto_style"
        assert json.loads(r["raw_record"]).keys() == {"video", "vace_video", "prompt"}


def test_edge_records(tmp_path):
    """Layouts the demo does not cover: no videos/ folder, absolute prefixes, odd records."""
    root = tmp_path / "ditto"
    copy_clip(real_pairs()[0].edited, root / "global_style1" / "global_style1" / "h_1.mp4")
    copy_clip(real_pairs()[0].source, root / "videos/source/h.mp4")
    records = [
        {"source_path": "/mnt/authors/Ditto-1M/videos/source/h.mp4", "instruction": "  Make it a sketch. ",
         "edited_path": "global_style1/h_1.mp4", "clip_score": "0.75"},
        "not a record",
        {"source_path": "source/h.mp4", "instruction": "x", "edited_path": "/etc/passwd"},
        {"source_path": "source/h.mp4", "instruction": "", "edited_path": "weird/h_2.mp4"},
        {"source_path": "source/h.mp4", "instruction": "x", "edited_path": "global_style2/0001/h_2.mp4"},
    ]
    (root / "training_metadata").mkdir()
    (root / "training_metadata" / "m.json").write_text(json.dumps({"data": records}))
    (root / "training_metadata" / "not_a_list.json").write_text(json.dumps("nope"))
    out = ingest(DittoConfig(root=root), tmp_path / "w")
    assert len(out) == 6
    first = out[make_sample_id("ditto", "global_style1/h_1.mp4")]
    assert first["error"] is None and first["instruction"] == "Make it a sketch."
    # the nested-extraction variant at the root (no videos/ folder) is found
    assert first["target_uri"] == str((root / "global_style1/global_style1/h_1.mp4").resolve())
    # the authors' absolute prefix is dropped: the file is looked for under this root
    assert first["source_uri"] == str((root / "videos/source/h.mp4").resolve())
    assert dict(first["native_scores"]) == {"clip_score": 0.75}
    errors = sorted(r["error"] for r in out.values() if r["error"])
    r = root.resolve()
    tried = ", ".join(f"{r}/{p}global_style2/0001/h_2.mp4" for p in
                      ("videos/", "videos/global_style2/", "", "global_style2/"))
    assert errors == [
        "missing or empty field: instruction",
        f"not found: edited_path 'global_style2/0001/h_2.mp4'; looked in: {tried}",
        "path escapes the dataset root: '/etc/passwd'",
        "record is not a JSON object",
        "unreadable not_a_list.json: ValueError: expected a JSON list of records, got str",
    ]
    weird = next(r for r in out.values() if r["error"] == "missing or empty field: instruction")
    assert (weird["category_raw"], weird["category"]) == ("weird", "other")


@pytest.mark.parametrize("path,canonical", [
    ("global_style1/a_1.mp4", "global_style1/a_1.mp4"),
    ("videos/global_style1/a_1.mp4", "global_style1/a_1.mp4"),
    ("./videos//source/source/a.mp4", "source/a.mp4"),
    ("videos/source/source/0000/a.mp4", "source/0000/a.mp4"),
    ("/data/Ditto-1M/videos/local/a_3.mp4", "local/a_3.mp4"),
    ("videos/other/a.mp4", "other/a.mp4"),
    ("../../etc/passwd", "../../etc/passwd"),
    ("/etc/passwd", "/etc/passwd"),
])
def test_canonical_path(path, canonical):
    assert canonical_path(path) == canonical


@pytest.mark.parametrize("folder,category", [
    ("global_style1", "style"), ("global_style2", "style"), ("global_freeform1", "freeform"),
    ("global_freeform3", "freeform"), ("local", "local_change"), ("source", "other"),
])
def test_category_of(folder, category):
    assert category_of(folder) == category


def test_demo_build_is_idempotent(tmp_path):
    first = demo.build(tmp_path)
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert demo.build(tmp_path) == first
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == stamp
    assert sum(p.stat().st_size for p in stamp) < 3_000_000


def test_symlink_leaving_the_root_is_a_path_escape(tmp_path):
    outside = tmp_path / "outside"
    copy_clip(real_pairs()[0].edited, outside / "x_1.mp4")
    root = tmp_path / "d"
    copy_clip(real_pairs()[0].source, root / "videos/source/0000/x.mp4")
    (root / "videos/global_style1/0000").mkdir(parents=True)
    (root / "videos/global_style1/0000/x_1.mp4").symlink_to(outside / "x_1.mp4")
    (root / "training_metadata").mkdir()
    (root / "training_metadata/m.json").write_text(json.dumps(
        [{"source_path": "source/0000/x.mp4", "instruction": "x", "edited_path": "global_style1/0000/x_1.mp4"}]))
    [row] = ingest(DittoConfig(root=root), tmp_path / "w").values()
    assert row["error"].startswith("path escapes the dataset root through a symlink: 'videos/global_style1/0000/x_1.mp4' -> ")
    assert row["target_uri"] is None and row["category"] == "style"
