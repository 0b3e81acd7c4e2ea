"""Pico-Banana-400K ingest: sft / preference / multi-turn JSON Lines, Open Images sources mapped
through the Open Images CSV (URL -> ImageID), local_input_image, or the URL's file name; edited
images under nb/; the 35 edit types; error rows listing the places tried; stable ids."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from manifests.io import list_parts, read_table
from manifests.schema import make_sample_id
from pipeline.curate.config import PicoBananaConfig
from pipeline.curate.demo import pico_banana as demo
from pipeline.curate.demo.media import write_image
from stages.ingest.core import ingest_adapter
from stages.ingest.pico_banana import PicoBananaAdapter, edit_category
from stages.ingest.pico_sources import url_file_name


def run(root: Path, workdir: Path, facts: dict, **cfg) -> list[dict]:
    cfg.setdefault("image_root", facts["image_root"])
    if "openimages_csv" in facts:
        cfg.setdefault("openimages_csv", facts["openimages_csv"])
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
    assert sum(bool(r["error"]) for r in rows) == facts["errors"] == 3
    fine = {json.loads(r["raw_record"])["output_image"]: r for r in rows if not r["error"]}
    assert set(fine) == {"images/positive-edit/1.png", "images/positive-edit/2.png"}
    image_root = Path(facts["image_root"]).resolve()
    for output, r in fine.items():
        raw = json.loads(r["raw_record"])
        assert r["sample_id"] == make_sample_id("pico_banana", "sft", output)
        assert r["split"] == "sft" and r["modality"] == "image" and r["task"] == "edit"
        assert r["license"] == "CC-BY-NC-ND-4.0"
        assert r["instruction"] == raw["text"] and r["alt_instructions"] == [raw["summarized_text"]]
        assert r["category_raw"] == raw["edit_type"]
        # edited images are relative to Apple's nb/ folder
        assert r["target_uri"] == str((root / "nb" / output).resolve()) and Path(r["target_uri"]).is_file()
    # the URL maps to an ImageID through the Open Images CSV: <image_root>/train_N/<ImageID>.jpg
    one = fine["images/positive-edit/1.png"]
    assert one["source_uri"] == str(image_root / "train_1" / f"{demo.image_id(1)}.jpg")
    assert json.loads(one["extra"]) == {"image_id": demo.image_id(1)}
    # local_input_image (Apple's mapping script, run from the corpus root) is used as written
    two = fine["images/positive-edit/2.png"]
    assert two["source_uri"] == str(image_root / "train_0" / f"{demo.image_id(2)}.jpg")
    assert json.loads(two["raw_record"])["local_input_image"].startswith("openimages/train_0/")
    assert [fine[f"images/positive-edit/{i}.png"]["category"] for i in (1, 2)] == ["remove", "style"]


def test_sft_error_rows(corpus, tmp_path):
    root, facts = corpus
    errors = [r for r in run(root, tmp_path / "w", facts) if r["error"]]
    reasons = sorted(r["error"] for r in errors)
    assert reasons[0] == "empty text (instruction)"
    assert reasons[1].startswith("line 3: malformed JSON")
    empty = next(r for r in errors if r["error"] == "empty text (instruction)")
    assert empty["category"] == "camera" and empty["target_uri"]  # known fields kept
    # a photo the user did not download: the error lists every place looked in
    image_root = Path(facts["image_root"]).resolve()
    missing = next(r for r in errors if "not found" in r["error"])
    assert missing["error"].startswith(f"not found: open_image_input_url '{demo._url(3)}'; looked in ")
    for place in (image_root / facts["missing_source"], image_root / "train_0" / facts["missing_source"],
                  image_root / "train_1" / facts["missing_source"]):
        assert str(place) in missing["error"]
    assert missing["category"] == "tone" and missing["target_uri"]
    assert all(r["raw_record"] for r in errors)


def test_without_the_csv_the_error_says_how_to_map(corpus, tmp_path):
    root, facts = corpus
    rows = run(root, tmp_path / "w", {"image_root": facts["image_root"]})
    one = next(r for r in rows if r["target_uri"] and r["target_uri"].endswith("positive-edit/1.png"))
    assert "set datasets.pico_banana.openimages_csv" in one["error"]
    # local_input_image needs no CSV
    two = next(r for r in rows if r["target_uri"] and r["target_uri"].endswith("positive-edit/2.png"))
    assert two["error"] is None


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
    # fetched from Flickr directly: not in the CSV, found by the URL's file name
    assert pref_bad["source_uri"] == str(Path(facts["image_root"]).resolve() / "1012_12a12b_o.jpg")
    turns = {r["sample_id"]: r for r in rows if r["split"] == "multi-turn"}
    out = (root / "nb" / "images" / "multi-turn").resolve()
    t1, t2, t3 = (turns[make_sample_id("pico_banana", "multi-turn", f"images/multi-turn/101_turn{k}.png", k)]
                  for k in (1, 2, 3))
    assert t1["source_uri"] == str(Path(facts["image_root"]).resolve() / "train_1" / f"{demo.image_id(21)}.jpg")
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
    shutil.copytree(root / "nb" / "images", elsewhere / "images")
    rows = run(root, tmp_path / "w", facts, output_root=elsewhere)
    fine = [r for r in rows if not r["error"]]
    assert fine and all(r["target_uri"].startswith(str(elsewhere.resolve())) for r in fine)
    # a configured output_root is the only place looked in
    rows = run(root, tmp_path / "w1", facts, output_root=tmp_path / "empty")
    lost = [r for r in rows if r["target_uri"] is None and "output_image" in (r["error"] or "")]
    assert lost and all("; looked in " + str((tmp_path / "empty").resolve()) in r["error"] for r in lost)
    (root / "nb" / "jsonl" / "preference.jsonl").unlink()
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
    for name in ("a", "b", "c"):
        write_image(root / "images" / "positive-edit" / f"{name}.png", 16, 16)
    for rel in ("train_0/0a1b2c.jpg", "77_x_o.jpg"):
        write_image(image_root / rel, 16, 16)
    write_image(tmp_path / "abs.jpg", 16, 16)
    recs = [dict(base, output_image="images/positive-edit/a.png", local_input_image="train_0/0a1b2c.jpg"),
            dict(base, output_image="images/positive-edit/b.png", local_input_image=str(tmp_path / "abs.jpg")),
            dict(base, output_image="images/positive-edit/c.png", local_input_image=None)]
    (root / "jsonl" / "sft.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    rows = run(root, tmp_path / "w", {"image_root": image_root}, local_input_base=image_root)
    got = {Path(r["target_uri"]).name: r["source_uri"] for r in rows}
    assert got == {"a.png": str(image_root.resolve() / "train_0" / "0a1b2c.jpg"),
                   "b.png": str((tmp_path / "abs.jpg").resolve()),
                   "c.png": str(image_root.resolve() / "77_x_o.jpg")}
    assert not any(r["error"] for r in rows)
