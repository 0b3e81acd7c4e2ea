"""Pico-Banana-400K ingest: sft / preference / multi-turn JSON Lines, Open Images sources mapped
by URL file name, the 35 edit types, error rows, stable ids."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from manifests.io import list_parts, read_table
from manifests.schema import make_sample_id
from pipeline.config import PicoBananaConfig
from pipeline.demo import pico_banana as demo
from stages.ingest.core import ingest_adapter
from stages.ingest.pico_banana import PicoBananaAdapter, edit_category, url_file_name


def run(root: Path, workdir: Path, facts: dict, **cfg) -> list[dict]:
    cfg.setdefault("image_root", facts["image_root"])
    adapter = PicoBananaAdapter(PicoBananaConfig(root=root, **cfg))
    ingest_adapter(adapter, workdir)
    return read_table(workdir, "samples").to_pylist()


@pytest.fixture
def corpus(tmp_path) -> tuple[Path, dict]:
    root = tmp_path / "pico"
    return root, demo.build(root)


def test_sft_default_rows(corpus, tmp_path):
    root, facts = corpus
    rows = run(root, tmp_path / "w", facts)
    assert len(rows) == facts["rows"] == 5
    assert sum(bool(r["error"]) for r in rows) == facts["errors"] == 2
    fine = {json.loads(r["raw_record"])["output_image"]: r for r in rows if not r["error"]}
    assert set(fine) == {"images/positive-edit/1.png", "images/positive-edit/2.png", "images/positive-edit/3.png"}
    image_root = Path(facts["image_root"]).resolve()
    for output, r in fine.items():
        raw = json.loads(r["raw_record"])
        assert r["sample_id"] == make_sample_id("pico_banana", "sft", output)
        assert r["split"] == "sft" and r["modality"] == "image" and r["task"] == "edit"
        assert r["license"] == "CC-BY-NC-ND-4.0"
        assert r["instruction"] == raw["text"] and r["alt_instructions"] == [raw["summarized_text"]]
        assert r["category_raw"] == raw["edit_type"]
        assert r["target_uri"] == str((root / output).resolve()) and Path(r["target_uri"]).is_file()
        # the source is the URL's file name under image_root; the URL stays in raw_record
        assert r["source_uri"] == str(image_root / raw["open_image_input_url"].rsplit("/", 1)[1])
    assert [fine[f"images/positive-edit/{i}.png"]["category"] for i in (1, 2, 3)] == ["remove", "style", "tone"]
    # a photo the user did not download: the row is fine, the probe stage reports it missing
    missing = fine["images/positive-edit/3.png"]
    assert missing["error"] is None and not Path(missing["source_uri"]).exists()
    assert Path(missing["source_uri"]).name == facts["missing_source"]
    assert all(Path(fine[f"images/positive-edit/{i}.png"]["source_uri"]).is_file() for i in (1, 2))


def test_sft_error_rows(corpus, tmp_path):
    root, facts = corpus
    errors = [r for r in run(root, tmp_path / "w", facts) if r["error"]]
    reasons = sorted(r["error"] for r in errors)
    assert reasons[0] == "empty text (instruction)"
    assert reasons[1].startswith("line 3: malformed JSON")
    empty = next(r for r in errors if r["error"] == "empty text (instruction)")
    assert empty["category"] == "camera" and empty["target_uri"]  # known fields kept
    assert all(r["raw_record"] for r in errors)


def test_all_splits_and_multi_turn_chain(corpus, tmp_path):
    root, facts = corpus
    rows = run(root, tmp_path / "w", facts, splits=["sft", "preference", "multi-turn"])
    for split, (n, n_err) in facts["splits"].items():
        split_rows = [r for r in rows if r["split"] == split]
        assert len(split_rows) == n and sum(bool(r["error"]) for r in split_rows) == n_err, split
    pref = next(r for r in rows if r["split"] == "preference" and not r["error"])
    assert pref["category"] == "add" and json.loads(pref["raw_record"])["rejected_images"]
    assert pref["target_uri"].endswith("images/positive-edit/11.png")
    pref_bad = next(r for r in rows if r["split"] == "preference" and r["error"])
    assert pref_bad["error"] == "output_image: missing output image path"
    turns = {r["sample_id"]: r for r in rows if r["split"] == "multi-turn"}
    out = (root / "images" / "multi-turn").resolve()
    t1, t2, t3 = (turns[make_sample_id("pico_banana", "multi-turn", f"images/multi-turn/101_turn{k}.png", k)]
                  for k in (1, 2, 3))
    assert t1["source_uri"] == str(Path(facts["image_root"]).resolve() / "1021_21a21b_o.jpg")
    assert t1["target_uri"] == str(out / "101_turn1.png") == t2["source_uri"]  # turn k-1 feeds turn k
    assert t2["target_uri"] == t3["source_uri"] and t3["target_uri"] == str(out / "101_turn3.png")
    assert [t["instruction"] for t in (t1, t2, t3)] == ["Add a vintage film grain", "Replace the sky with a sunset",
                                                        "Zoom in on the lighthouse"]
    assert json.loads(t3["raw_record"])["turn"] == 3
    bad = next(r for r in turns.values() if r["error"])
    assert bad["error"] == "turn 2 image: missing output image path"
    assert bad["source_uri"] == str(out / "102_turn1.png")


def test_ids_stable_and_parts_byte_identical(corpus, tmp_path):
    root, facts = corpus
    splits = ["sft", "preference", "multi-turn"]
    a = run(root, tmp_path / "a", facts, splits=splits)
    b = run(root, tmp_path / "b", facts, splits=splits)
    assert [r["sample_id"] for r in a] == [r["sample_id"] for r in b]
    assert len({r["sample_id"] for r in a}) == len(a)
    pa_, pb = list_parts(tmp_path / "a", "samples"), list_parts(tmp_path / "b", "samples")
    assert [p.name for p in pa_] == [p.name for p in pb] and len(pa_) == 3
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(pa_, pb))


def test_output_root_and_missing_split_file(corpus, tmp_path):
    root, facts = corpus
    elsewhere = tmp_path / "outputs"
    rows = run(root, tmp_path / "w", facts, output_root=elsewhere)
    fine = [r for r in rows if not r["error"]]
    assert fine and all(r["target_uri"].startswith(str(elsewhere.resolve())) for r in fine)
    (root / "jsonl" / "preference.jsonl").unlink()
    (row,) = run(root, tmp_path / "w2", facts, splits=["preference"])
    assert row["error"] == "missing jsonl/preference.jsonl (split 'preference')"


def test_url_file_name():
    assert url_file_name("https://c1.staticflickr.com/8/7404/9423051591_ab12_o.jpg?x=1") == "9423051591_ab12_o.jpg"
    assert url_file_name("https://example.com/") is None


# The 35 published edit types (8 groups) and the category each maps to.
EDIT_TYPES = {
    "Change overall color tone (warm ↔ cool)": "tone",
    "Add film grain or vintage filter": "tone",
    "Add a new object to the scene": "add",
    "Remove an existing object": "remove",
    "Replace one object category with another": "replace",
    "Change an object’s attribute (e.g., color/material)": "local_change",
    "Relocate an object (change its position/spatial relation)": "local_change",
    "Change the size/shape/orientation of an object": "local_change",
    "Add new scene context/background": "background",
    "Apply seasonal transformation (summer ↔ winter)": "tone",
    "Change weather conditions (sunny/rainy/snowy)": "tone",
    "Adjust global lighting (e.g., golden hour, fluorescent)": "tone",
    "Strong artistic style transfer (e.g., Van Gogh/anime/etc.)": "style",
    "Photo to cartoon/sketch/comic": "style",
    "Modern ↔ historical style/look": "style",
    "Replace text in signs/posters/billboards": "text",
    "Add new text (handwritten/printed/etc.)": "text",
    "Change font style or color of visible text (if present)": "text",
    "Translate written text into other languages": "text",
    "Add/Remove/Replace accessories (glasses, hats, jewelry, masks)": "local_change",
    "Clothing edit (change color/outfit)": "local_change",
    "Pose tweak (minor plausible change)": "action",
    "Modify expressions (smile, frown, neutral)": "local_change",
    "Change age / gender": "local_change",
    "Convert person to 2D anime/manga style (identity-preserving)": "style",
    "Convert person to Pixar/Disney-like 3D cartoon look": "style",
    "Convert person to Western comic cel-shaded style": "style",
    "Line-art ink sketch of the person": "style",
    "Sticker-ify the person with bold outline and white border": "style",
    "Caricature with mild feature exaggeration (keep identity)": "style",
    "Funko-Pop–style toy figure of the person": "style",
    "LEGO-minifigure rendition of the person": "style",
    "Simpsonize the person (yellow-skin cartoon style)": "style",
    "Zoom in": "camera",
    "Outpainting (extend canvas beyond boundaries)": "camera",
}


def test_the_35_edit_types_map_to_categories():
    assert len(EDIT_TYPES) == 35
    assert {t: edit_category(t) for t in EDIT_TYPES} == EDIT_TYPES
    assert edit_category(None) == "other" and edit_category("Something new") == "other"


def test_local_input_image_from_the_official_mapping_script(tmp_path):
    """Records carrying ``local_input_image`` (what map_openimage_url_to_local.py adds) use it."""
    root, image_root = tmp_path / "pico", tmp_path / "oi"
    (root / "jsonl").mkdir(parents=True)
    image_root.mkdir()
    base = {"open_image_input_url": "https://farm1.staticflickr.com/1/77_x_o.jpg", "text": "Add a hat",
            "edit_type": "Add a new object to the scene", "summarized_text": "Hat."}
    recs = [dict(base, output_image="images/positive-edit/a.png", local_input_image="train_0/0a1b2c.jpg"),
            dict(base, output_image="images/positive-edit/b.png", local_input_image=str(tmp_path / "abs.jpg")),
            dict(base, output_image="images/positive-edit/c.png", local_input_image=None)]
    (root / "jsonl" / "sft.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    rows = run(root, tmp_path / "w", {"image_root": image_root})
    got = {Path(r["target_uri"]).name: r["source_uri"] for r in rows}
    assert got == {"a.png": str(image_root.resolve() / "train_0" / "0a1b2c.jpg"),
                   "b.png": str((tmp_path / "abs.jpg").resolve()),
                   "c.png": str(image_root.resolve() / "77_x_o.jpg")}
    assert not any(r["error"] for r in rows)
