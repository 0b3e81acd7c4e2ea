"""GPT-Image-Edit-1.5M ingest: training_json records, subsets, derived categories, error rows,
stable ids."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from manifests.io import list_parts, read_table
from manifests.schema import make_sample_id
from pipeline.config import GPTImageEditConfig
from pipeline.demo import gpt_image_edit as demo
from stages.ingest.core import ingest_adapter
from stages.ingest.gpt_image_edit import GPTImageEditAdapter, first_human_turn


def run(root: Path, workdir: Path, **cfg) -> list[dict]:
    adapter = GPTImageEditAdapter(GPTImageEditConfig(root=root, **cfg))
    ingest_adapter(adapter, workdir)
    return read_table(workdir, "samples").to_pylist()


@pytest.fixture
def corpus(tmp_path) -> tuple[Path, dict]:
    root = tmp_path / "gpt"
    return root, demo.build(root)


def by_input(rows: list[dict]) -> dict[str, dict]:
    return {json.loads(r["raw_record"])["image"][0]: r for r in rows
            if not r["error"] and r["raw_record"]}


def test_demo_rows_subsets_categories_and_uris(corpus, tmp_path):
    root, facts = corpus
    rows = run(root, tmp_path / "w")
    assert len(rows) == facts["rows"] == 8
    assert sum(bool(r["error"]) for r in rows) == facts["errors"] == 4
    fine = by_input(rows)
    assert set(fine) == set(facts["categories"])
    for inp, (subset, category) in facts["categories"].items():
        r = fine[inp]
        assert (r["subset"], r["category"]) == (subset, category)
        assert r["category_raw"] == str(Path(inp).parent)  # the folder the category came from
        assert r["modality"] == "image" and r["task"] == "edit" and r["license"] == "CC-BY-4.0"
        for uri in (r["source_uri"], r["target_uri"]):
            assert Path(uri).is_absolute() and Path(uri).is_file(), uri
        assert r["source_uri"] == str((root / "gpt-edit" / inp).resolve())
        # the natural key: (json file name, input, output)
        out = json.loads(r["raw_record"])["image"][1]
        assert r["sample_id"] == make_sample_id("gpt_image_edit", f"{subset}.json", inp, out)
    assert fine["ultraedit/change_color/input/c01.png"]["instruction"] == "Paint the front door bright yellow"
    assert fine["hqedit/edit/input/000001.png"]["instruction"] == "Turn the daytime sky into a starry night"


def test_demo_error_rows(corpus, tmp_path):
    root, _ = corpus
    errors = sorted(r["error"] for r in run(root, tmp_path / "w") if r["error"])
    assert any(e.startswith("no instruction") for e in errors)
    assert any(e.startswith("expected image: [input, output]") for e in errors)
    assert any("input image: path escapes the dataset root" in e for e in errors)
    assert any(e.startswith("unreadable zz_truncated.json") for e in errors)
    assert len(errors) == 4


def test_ids_stable_and_parts_byte_identical(corpus, tmp_path):
    root, _ = corpus
    a = run(root, tmp_path / "a")
    b = run(root, tmp_path / "b")
    assert [r["sample_id"] for r in a] == [r["sample_id"] for r in b]
    assert len({r["sample_id"] for r in a}) == len(a)
    pa_, pb = list_parts(tmp_path / "a", "samples"), list_parts(tmp_path / "b", "samples")
    assert [p.name for p in pa_] == [p.name for p in pb] and len(pa_) == 4  # one per json file
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(pa_, pb))


def test_tolerated_variants(tmp_path):
    """JSON Lines instead of a list, a ``gpt-edit/`` prefix, a custom image_dir, ``images`` key."""
    root = tmp_path / "gpt"
    (root / "ann").mkdir(parents=True)
    recs = [
        {"image": ["imgs/omniedit/background_swap/i.png", "imgs/omniedit/background_swap/o.png"],
         "conversations": [{"from": "human", "value": "<image>\nSwap the background for a forest"}]},
        {"images": ["omniedit/swap/i.png", "omniedit/swap/o.png"],
         "conversations": [{"role": "user", "content": "Swap the dog for a fox <image>"}]},
    ]
    (root / "ann" / "x.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    rows = run(root, tmp_path / "w", json_glob="ann/*.jsonl", image_dir="imgs")
    assert [r["error"] for r in rows] == [None, None]
    assert rows[0]["source_uri"] == str((root / "imgs/omniedit/background_swap/i.png").resolve())
    assert rows[0]["category"] == "background" and rows[0]["subset"] == "omniedit"
    assert rows[1]["category"] == "replace" and rows[1]["instruction"] == "Swap the dog for a fox"


def test_list_broken_midway_keeps_the_records_before(tmp_path):
    """Lists are decoded record by record: a break keeps what came before, plus one error row."""
    root = tmp_path / "gpt"
    (root / "training_json").mkdir(parents=True)
    good = [{"image": [f"ultraedit/add/i{i}.png", f"ultraedit/add/o{i}.png"],
             "conversations": [{"from": "human", "value": f"<image>\nAdd {i} birds"}]} for i in range(3)]
    text = json.dumps(good)[:-1] + ', {"image": ["ultraedit/add/i9.png", '  # cut inside record 4
    (root / "training_json" / "ultra.json").write_text(text)
    rows = run(root, tmp_path / "w")
    assert [r["instruction"] for r in rows if not r["error"]] == ["Add 0 birds", "Add 1 birds", "Add 2 birds"]
    assert all(r["category"] == "add" and r["subset"] == "ultraedit" for r in rows if not r["error"])
    (err,) = [r["error"] for r in rows if r["error"]]
    assert err.startswith("unreadable ultra.json: ValueError: malformed JSON in the array")


def test_no_annotation_files_is_an_error_row(tmp_path):
    root = tmp_path / "gpt"
    root.mkdir()
    (row,) = run(root, tmp_path / "w")
    assert "no annotation files match" in row["error"]


def test_first_human_turn():
    conv = [{"from": "gpt", "value": "ignored"}, {"from": "human", "value": "<image>\n  Add a hat <image> "},
            {"from": "human", "value": "second"}]
    assert first_human_turn(conv) == "Add a hat"
    assert first_human_turn([{"from": "human", "value": "<image>\n"}]) is None
    assert first_human_turn("not a list") is None
