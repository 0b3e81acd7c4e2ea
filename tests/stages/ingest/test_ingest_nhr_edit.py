"""NHR-Edit ingest: both published layouts (metadata.jsonl + image tree, parquet with embedded
images), stable ids, categories, URIs that resolve, error rows."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from manifests.io import list_parts, read_table
from manifests.schema import CATEGORIES, make_sample_id
from pipeline.curate.config import NHREditConfig
from pipeline.curate.demo import nhr_edit as demo
from stages.ingest.core import ingest_adapter
from stages.ingest.nhr_edit import NHREditAdapter


def run(root: Path, workdir: Path, **cfg) -> dict[str, dict]:
    adapter = NHREditAdapter(NHREditConfig(root=root, **cfg))
    ingest_adapter(adapter, workdir)
    table = read_table(workdir, "samples")
    return {r["sample_id"]: r for r in table.to_pylist()}


def nid(sample_id: str) -> str:
    return make_sample_id("nhr_edit", sample_id)


@pytest.fixture
def jsonl_root(tmp_path) -> tuple[Path, dict]:
    root = tmp_path / "nhr"
    return root, demo.build(root)


def test_jsonl_layout_rows_categories_and_uris(jsonl_root, tmp_path):
    root, facts = jsonl_root
    rows = run(root, tmp_path / "w")
    assert len(rows) == facts["rows"] - 3 == 7  # part 1 only: part2_root not configured
    errors = [r for r in rows.values() if r["error"]]
    assert len(errors) == facts["errors"] - 1 == 3
    for sid, category in facts["categories"].items():
        r = rows[nid(sid)]
        assert r["error"] is None
        assert r["category"] == category
        assert r["modality"] == "image" and r["task"] == "edit" and r["split"] == "train"
        assert r["license"] == "Apache-2.0"
        # images exist on disk at the resolved absolute paths (both name spellings)
        for uri in (r["source_uri"], r["target_uri"]):
            assert Path(uri).is_absolute() and Path(uri).is_file(), uri
            assert Path(uri).parent.parent == (root / "train" / "images").resolve()
        raw = json.loads(r["raw_record"])
        assert raw["sample_id"] == sid
        assert r["category_raw"] == raw["category"]
        assert r["instruction"] == raw["edit_instruction"]
    assert all(r["category"] in CATEGORIES for r in rows.values() if r["category"])
    r1 = rows[nid("nhr-000001")]
    assert r1["category_raw"] == "Object removal"
    assert r1["alt_instructions"] == ["Take away the red ball", "Erase the ball"]
    assert rows[nid("nhr-000003")]["alt_instructions"] is None  # empty list published
    # the name written relative to train/ resolves to the same tree as the others
    assert rows[nid("nhr-000002")]["source_uri"].endswith("train/images/00/image_002_original.jpg")


def test_jsonl_layout_error_rows(jsonl_root, tmp_path):
    root, _ = jsonl_root
    rows = run(root, tmp_path / "w")
    empty = rows[nid("nhr-000005")]
    assert empty["error"] == "empty edit_instruction"
    assert empty["category"] == "color" and empty["source_uri"]  # what is known is kept
    escape = rows[nid("nhr-000006")]
    assert "escapes the dataset root" in escape["error"] and escape["source_uri"] is None
    malformed = [r for r in rows.values() if r["error"] and "malformed JSON" in r["error"]]
    assert len(malformed) == 1
    assert "unterminated" in json.loads(malformed[0]["raw_record"])["text"]
    assert all(r["raw_record"] for r in rows.values())


def test_ids_stable_and_parts_byte_identical(jsonl_root, tmp_path):
    root, _ = jsonl_root
    a = run(root, tmp_path / "a")
    b = run(root, tmp_path / "b")
    assert set(a) == set(b)
    parts_a, parts_b = list_parts(tmp_path / "a", "samples"), list_parts(tmp_path / "b", "samples")
    assert [p.name for p in parts_a] == [p.name for p in parts_b] and parts_a
    assert all(pa_.read_bytes() == pb.read_bytes() for pa_, pb in zip(parts_a, parts_b))


@pytest.mark.parametrize("binary", [False, True], ids=["struct", "binary"])
def test_parquet_layout(tmp_path, monkeypatch, binary):
    root = tmp_path / "nhrpq"
    facts = demo.build_parquet(root, rows_per_group=2, binary_images=binary)
    seen_columns: list[list[str]] = []
    real_iter = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        seen_columns.append(list(kwargs.get("columns") or []))
        return real_iter(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    rows = run(root, tmp_path / "w")
    # image columns are never read at ingest
    assert seen_columns and all("source_image" not in c and "edited_image" not in c for c in seen_columns)
    assert len(rows) == facts["rows"] and sum(bool(r["error"]) for r in rows.values()) == facts["errors"]
    path = facts["path"].resolve()
    table = pq.read_table(path)
    for i, sid in enumerate(facts["ok_ids"]):  # rows span three row groups: global row indices
        r = rows[nid(sid)]
        assert r["error"] is None
        assert r["source_uri"] == f"parquet://{path}#{i}/source_image"
        assert r["target_uri"] == f"parquet://{path}#{i}/edited_image"
        cell = table.column("edited_image")[i].as_py()
        data = cell if binary else cell["bytes"]
        meta = json.loads(r["raw_record"])
        assert Image.open(io.BytesIO(data)).size == (meta["img_width"], meta["img_height"])
        assert "source_image" not in meta and "edited_image" not in meta  # no bytes in the manifest
    assert rows[nid("nhr-000001")]["category"] == "remove"
    assert rows[nid("nhr-000005")]["error"] == "empty edit_instruction"


def test_same_ids_in_both_layouts_and_layout_choice(tmp_path):
    root = tmp_path / "both"
    demo.build(root)
    demo.build_parquet(root)
    auto = NHREditAdapter(NHREditConfig(root=root)).units()
    assert [u.params["layout"] for u in auto] == ["jsonl"]  # auto prefers the jsonl layout
    forced = NHREditAdapter(NHREditConfig(root=root, layout="parquet", part2_root=root / demo.PART2)).units()
    # part 1's parquet file, and part 2's (read as its own root, not twice)
    assert [(u.params["layout"], u.params["tag"]) for u in forced] == [("parquet", None), ("parquet", "part2")]
    jl = run(root, tmp_path / "j")
    pqr = run(root, tmp_path / "p", layout="parquet")
    ok = {nid(s) for s in demo.build(root)["ok_ids"]}
    assert ok <= set(jl) and ok <= set(pqr)
    assert all(pqr[i]["target_uri"].startswith("parquet://") for i in ok)
    assert all(Path(jl[i]["target_uri"]).is_file() for i in ok)


def test_missing_layout_is_an_error_row(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    rows = run(root, tmp_path / "w")
    assert len(rows) == 1
    (r,) = rows.values()
    assert "no NHR-Edit layout" in r["error"]
    forced = run(root, tmp_path / "w2", layout="jsonl")
    (r,) = forced.values()
    assert r["error"] == "missing train/metadata.jsonl"


def test_file_name_spellings_and_fallback_key(tmp_path):
    root = tmp_path / "nhr"
    (root / "train").mkdir(parents=True)
    recs = [
        {"source_file_name": "train/images/02/a.jpg", "edited_file_name": "02/b.jpg",
         "edit_instruction": "Change the wall colour to green", "category": "color_change"},
        {"edit_instruction": "No files at all"},
    ]
    (root / "train" / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n\n")
    rows = list(run(root, tmp_path / "w").values())
    assert len(rows) == 2  # the blank line is not a record
    fine = next(r for r in rows if not r["error"])
    base = (root / "train" / "images" / "02").resolve()
    assert fine["source_uri"] == str(base / "a.jpg") and fine["target_uri"] == str(base / "b.jpg")
    assert fine["category"] == "color"
    # no sample_id: the id comes from the file-name pair
    assert fine["sample_id"] == make_sample_id("nhr_edit", "files", "train/images/02/a.jpg", "02/b.jpg")
    bad = next(r for r in rows if r["error"])
    assert bad["error"] == "missing source_file_name"


def test_part2_repository_in_the_short_parquet_form(jsonl_root, tmp_path):
    """NHR-Edit-part2 is its own repository: a second root, here in the parquet form with only
    ``source_image, edit_instruction, edited_image`` (no sample_id: rows keyed by file and row)."""
    root, facts = jsonl_root
    part2 = (root / facts["part2_root"]).resolve()
    rows = run(root, tmp_path / "w", part2_root=part2)
    assert len(rows) == facts["rows"] == 10
    assert sum(bool(r["error"]) for r in rows.values()) == facts["errors"] == 4
    pq_path = part2 / "data" / "train-00000-of-00001.parquet"
    second = [r for r in rows.values() if r["source_uri"] and r["source_uri"].startswith("parquet://")]
    assert len(second) == 3
    by_row = {int(r["source_uri"].split("#")[1].split("/")[0]): r for r in second}
    for i, (instruction, _) in enumerate(demo.PART2_FORM):
        r = by_row[i]
        assert r["sample_id"] == make_sample_id("nhr_edit", "position", "part2:data/train-00000-of-00001.parquet", i)
        assert r["source_uri"] == f"parquet://{pq_path}#{i}/source_image"
        assert r["target_uri"] == f"parquet://{pq_path}#{i}/edited_image"
        assert r["instruction"] == (instruction or None)
    assert by_row[2]["error"] == "empty edit_instruction"
    # the part-1 rows are unchanged by adding the second root
    assert {nid(s) for s in facts["ok_ids"]} <= set(rows)
    (tmp_path / "empty").mkdir()
    missing = run(root, tmp_path / "w2", part2_root=tmp_path / "empty")  # a folder with no NHR layout
    assert any("(part2_root, layout=auto)" in (r["error"] or "") for r in missing.values())


def test_parquet_with_file_names_and_extra(tmp_path):
    """A parquet export holding the jsonl's file names (strings) instead of bytes."""
    import pyarrow as pa

    root = tmp_path / "nhrnames"
    demo.build(root)
    recs = [json.loads(x) for x in (root / "train" / "metadata.jsonl").read_text().splitlines()[:2]]
    (root / "train" / "metadata.jsonl").unlink()
    pq.write_table(pa.Table.from_pylist(recs), root / "names.parquet")
    rows = run(root, tmp_path / "w")
    r = rows[nid("nhr-000001")]
    assert r["source_uri"] == str((root / "train" / "images" / "00" / "image_001_original.jpg").resolve())
    assert Path(r["target_uri"]).is_file() and r["error"] is None
    assert json.loads(r["extra"]) == {"kind": "local", "style": "photo", "width": 128, "height": 96}
