"""GPT-Image-Edit-1.5M ingest: training_json (separate annotations_root, per-file image roots
from data.txt), the dataset's own metadata, subsets, categories, extra, error rows, stable ids."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from manifests.io import list_parts, read_table
from manifests.schema import make_sample_id
from pipeline.curate.config import GPTImageEditConfig
from pipeline.curate.demo import gpt_image_edit as demo
from pipeline.curate.demo.media import write_image
from stages.ingest.core import ingest_adapter
from stages.ingest.gpt_image_edit import GPTImageEditAdapter, first_human_turn


def run(root: Path, workdir: Path, **cfg) -> list[dict]:
    adapter = GPTImageEditAdapter(GPTImageEditConfig(root=root, **cfg))
    ingest_adapter(adapter, workdir)
    return read_table(workdir, "samples").to_pylist()


@pytest.fixture
def corpus(tmp_path) -> tuple[Path, dict]:
    root = tmp_path / "gpt"
    facts = demo.build(root)
    facts["cfg"] = {"annotations_root": root / facts["annotations_root"]}
    return root, facts


def fine_rows(rows: list[dict], root: Path) -> dict[str, dict]:
    """"<annotation>|<input relative to gpt-edit>" -> row, for the rows without error."""
    base = (root / "gpt-edit").resolve()
    return {f"{json.loads(r['extra'])['annotation']}|{Path(r['source_uri']).relative_to(base).as_posix()}": r
            for r in rows if not r["error"]}


def test_demo_rows_image_roots_subsets_categories_and_uris(corpus, tmp_path):
    root, facts = corpus
    rows = run(root, tmp_path / "w", **facts["cfg"])
    assert len(rows) == facts["rows"] + facts["duplicate_ids"] == 13  # parts hold both twins
    assert sum(bool(r["error"]) for r in rows) == facts["errors"] == 5
    fine = fine_rows(rows, root)
    assert set(fine) == set(facts["categories"])
    for name, (subset, category) in facts["categories"].items():
        r = fine[name]
        inp = name.split("|")[1]
        assert (r["subset"], r["category"]) == (subset, category)
        assert r["category_raw"] == str(Path(inp).parent)  # the real task folder of the input
        assert r["modality"] == "image" and r["task"] == "edit" and r["license"] == "CC-BY-4.0"
        for uri in (r["source_uri"], r["target_uri"]):
            assert Path(uri).is_absolute() and Path(uri).is_file(), uri
        # each training JSON's paths are relative to its own data.txt image root
        assert r["source_uri"] == str((root / "gpt-edit" / inp).resolve())
        out = Path(r["target_uri"]).relative_to((root / "gpt-edit").resolve()).as_posix()
        assert r["sample_id"] == make_sample_id("gpt_image_edit", inp, out, r["instruction"])
    assert fine["training_json/ultraedit_gpt.json|ultraedit/input/u01.png"]["instruction"] == \
        "Paint the front door bright yellow"
    assert fine["training_json/hqedit_gpt_edit.json|hqedit/edit/input/000001.png"]["instruction"] == \
        "Turn the daytime sky into a starry night"
    # the rewrite file: same images, its own instruction, its own sample
    a = fine["training_json/omniedit_gpt.json|omniedit/input/a01.png"]
    b = fine["training_json/omniedit_gpt_rewrite.json|omniedit/input/a01.png"]
    assert a["source_uri"] == b["source_uri"] and a["sample_id"] != b["sample_id"]


def test_dataset_metadata_fields_and_shared_ids(corpus, tmp_path):
    root, facts = corpus
    rows = run(root, tmp_path / "w", **facts["cfg"])
    fine = fine_rows(rows, root)
    meta = fine["ultraedit/metadata/ultraedit_meta.json|ultraedit/input/u01.png"]
    extra = json.loads(meta["extra"])
    assert extra == {"annotation": "ultraedit/metadata/ultraedit_meta.json", "dataset_source": "ultraedit",
                     "id": "u01", "input_description": "A red front door of a brick house.",
                     "instruction_type": "original", "task": "color_alter", "task_folder": "ultraedit"}
    assert meta["category"] == "color" and meta["instruction"] == "Paint the front door bright yellow"
    # the same edit in training_json and in the metadata: one sample id
    twin = fine["training_json/ultraedit_gpt.json|ultraedit/input/u01.png"]
    assert twin["sample_id"] == meta["sample_id"]
    assert len({r["sample_id"] for r in rows}) == len(rows) - facts["duplicate_ids"]
    assert json.loads(fine["training_json/complexedit_gpt.json|omniedit/complex-edit/input/c01.png"]["extra"])[
        "task_folder"] == "omniedit/complex-edit"


def test_demo_error_rows(corpus, tmp_path):
    root, facts = corpus
    errors = sorted(r["error"] for r in run(root, tmp_path / "w", **facts["cfg"]) if r["error"])
    assert any(e.startswith("no instruction") for e in errors)
    assert any(e.startswith("expected image: [input, output]") for e in errors)
    assert any("input image: path escapes the dataset root" in e for e in errors)
    assert any(e.startswith("unreadable zz_truncated.json") for e in errors)
    (missing,) = [e for e in errors if "not found" in e]
    tried = str((root / "gpt-edit" / "omniedit" / "input" / "missing.png").resolve())
    assert missing.startswith("not found: input 'input/missing.png'; looked in " + tried)
    assert str((root / "gpt-edit" / "input" / "missing.png").resolve()) in missing  # every place tried
    assert len(errors) == 5


def test_annotations_root_unset_finds_nothing_and_says_where(corpus, tmp_path):
    root, _ = corpus
    rows = run(root, tmp_path / "w", metadata_glob="")
    (row,) = rows
    assert "no annotation files match 'training_json/*.json' under" in row["error"]
    assert "(annotations_root)" in row["error"]


def test_ids_stable_and_parts_byte_identical(corpus, tmp_path):
    root, facts = corpus
    a = run(root, tmp_path / "a", **facts["cfg"])
    b = run(root, tmp_path / "b", **facts["cfg"])
    assert [r["sample_id"] for r in a] == [r["sample_id"] for r in b]
    pa_, pb = list_parts(tmp_path / "a", "samples"), list_parts(tmp_path / "b", "samples")
    assert [p.name for p in pa_] == [p.name for p in pb] and len(pa_) == 8  # one per json file
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
    for rel in ("omniedit/background_swap/i.png", "omniedit/background_swap/o.png", "omniedit/swap/i.png",
                "omniedit/swap/o.png"):
        write_image(root / "imgs" / rel, 32, 32)
    rows = run(root, tmp_path / "w", json_glob="ann/*.jsonl", image_dir="imgs", metadata_glob="")
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
    for i in range(3):
        for kind in "io":
            write_image(root / "gpt-edit" / f"ultraedit/add/{kind}{i}.png", 32, 32)
    rows = run(root, tmp_path / "w")  # training_json under the root: annotations_root unset
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


def test_metadata_as_a_dict_of_records_and_jsonl(tmp_path):
    """The dataset's metadata may be a dict keyed by id, or JSON Lines under a .json name; paths
    relative to the task folder, gpt-edit/ or the root are all found."""
    root = tmp_path / "gpt"
    meta = root / "gpt-edit" / "omniedit" / "metadata"
    meta.mkdir(parents=True)
    for rel in ("omniedit/input/1.png", "omniedit/output/1.png", "omniedit/input/2.png", "omniedit/output/2.png"):
        write_image(root / "gpt-edit" / rel, 32, 32)
    rec = {"task": "removal", "instruction": "Remove the lamp", "instruction_type": "original"}
    (meta / "a.json").write_text(json.dumps({"1": {**rec, "id": "1", "input": "input/1.png", "output": "output/1.png"}}))
    (meta / "b.json").write_text(json.dumps({**rec, "id": "2", "input": "omniedit/input/2.png",
                                             "output": "gpt-edit/omniedit/output/2.png"}) + "\n"
                                 + json.dumps({**rec, "id": "3", "input": "input/3.png", "output": "output/3.png"}) + "\n")
    rows = run(root, tmp_path / "w")
    by_id = {json.loads(r["extra"])["id"]: r for r in rows}
    assert by_id["1"]["error"] is None and by_id["2"]["error"] is None
    assert by_id["2"]["source_uri"] == str((root / "gpt-edit" / "omniedit" / "input" / "2.png").resolve())
    assert by_id["1"]["category"] == "remove" and by_id["1"]["subset"] == "omniedit"
    assert by_id["3"]["error"].startswith("not found: input 'input/3.png'; looked in ")


def test_root_pointed_at_gpt_edit_itself(corpus, tmp_path):
    """A user who points root at gpt-edit/ (annotations elsewhere) gets the same rows."""
    root, facts = corpus
    rows = run(root / "gpt-edit", tmp_path / "w", **facts["cfg"])
    fine = [r for r in rows if not r["error"]]
    assert len(fine) == len(facts["categories"])
    assert {r["subset"] for r in fine} == {"hqedit", "omniedit", "ultraedit"}
    assert all(Path(r["source_uri"]).is_file() for r in fine)
