"""X2Edit ingest: WebDataset tars (plain and concatenated), duplicate members, task mapping,
scores, error rows, stable ids."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from manifests.io import list_parts, read_table
from manifests.schema import make_sample_id
from pipeline.config import X2EditConfig
from pipeline.demo import x2edit as demo
from pipeline.demo.media import image_bytes
from stages.ingest.core import ingest_adapter
from stages.ingest.x2edit import X2EditAdapter, split_member, task_category


def run(root: Path, workdir: Path, **cfg) -> list[dict]:
    adapter = X2EditAdapter(X2EditConfig(root=root, **cfg))
    ingest_adapter(adapter, workdir)
    return read_table(workdir, "samples").to_pylist()


def read_member(uri: str) -> bytes:
    """What a by-name reader gets: tarfile (past concatenation markers), getmember by name."""
    assert uri.startswith("tar://")
    path, member = uri[len("tar://"):].split("#", 1)
    with tarfile.open(path, ignore_zeros=True) as tf:
        return tf.extractfile(tf.getmember(member)).read()


@pytest.fixture
def corpus(tmp_path) -> tuple[Path, dict]:
    root = tmp_path / "x2"
    return root, demo.build(root)


def test_demo_rows_categories_scores(corpus, tmp_path):
    root, facts = corpus
    rows = run(root, tmp_path / "w")
    assert len(rows) == facts["rows"] == 7
    assert sum(bool(r["error"]) for r in rows) == facts["errors"] == 3
    for name, (task, category, subset) in facts["ok"].items():
        tar, key = name.split("#")
        sid = make_sample_id("x2edit", tar, key)  # natural key: (tar relative to root, sample key)
        (r,) = [r for r in rows if r["sample_id"] == sid]
        assert r["error"] is None
        assert (r["category_raw"], r["category"], r["subset"]) == (task, category, subset)
        assert r["modality"] == "image" and r["task"] == "edit" and r["license"] == "Apache-2.0"
        assert r["source_uri"] == f"tar://{(root / tar).resolve()}#{key}.1.0.jpg"
        assert r["target_uri"] == f"tar://{(root / tar).resolve()}#{key}.2.jpg"
        for uri in (r["source_uri"], r["target_uri"]):
            assert read_member(uri)[:2] == b"\xff\xd8"  # a JPEG, readable by name
    chinese = next(r for r in rows if r["category_raw"] == "风格更改")
    assert chinese["instruction"] == "把图片变成水彩画风格"
    scored = next(r for r in rows if r["category_raw"] == "background_change")
    assert dict(scored["native_scores"]) == {"score_0": 9.0, "score_1": 8.0, "liqe_score": 4.25,
                                             "aesthetic_score_v2_5": 5.9}
    assert chinese["native_scores"] is None  # score "None" is not a number


def test_concatenated_tar_duplicate_member_last_occurrence_wins(corpus, tmp_path):
    root, facts = corpus
    rows = run(root, tmp_path / "w")
    dup = facts["duplicate"]
    sid = make_sample_id("x2edit", dup["tar"], dup["member"].split(".")[0])
    (r,) = [r for r in rows if r["sample_id"] == sid]  # one row, not two
    # metadata from the later JSON, and the URI names the bytes a by-name reader gets (the later)
    assert r["instruction"] == "Remove the cat from the sofa" and r["category"] == "remove"
    assert read_member(r["target_uri"]) == image_bytes(128, 96, dup["seed"])
    assert dict(r["native_scores"]) == {"score_7b_0": 10.0, "score_7b_1": 9.0}
    raw = json.loads(r["raw_record"])
    assert raw["duplicate_members"] == 4 and raw["json"]["task"] == "subject_deletion"
    # members past the first end-of-archive marker were found
    assert any(x["target_uri"] and x["target_uri"].endswith("#000000003.2.jpg") for x in rows)


def test_demo_error_rows(corpus, tmp_path):
    root, _ = corpus
    errors = {r["error"]: r for r in run(root, tmp_path / "w") if r["error"]}
    assert set(errors) == {"missing edited member (.2.jpg)", "empty instruction",
                           "corrupt json member 000000002.json: Expecting value: line 1 column 42 (char 41)"}
    missing = errors["missing edited member (.2.jpg)"]
    assert missing["target_uri"] is None and missing["source_uri"] and missing["category"] == "color"
    assert all(json.loads(r["raw_record"])["tar"] for r in errors.values())


def test_ids_stable_and_parts_byte_identical(corpus, tmp_path):
    root, _ = corpus
    a = run(root, tmp_path / "a")
    b = run(root, tmp_path / "b")
    assert [r["sample_id"] for r in a] == [r["sample_id"] for r in b]
    pa_, pb = list_parts(tmp_path / "a", "samples"), list_parts(tmp_path / "b", "samples")
    assert [p.name for p in pa_] == [p.name for p in pb] and len(pa_) == 2  # one per tar
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(pa_, pb))


def test_truncated_and_unreadable_tars(corpus, tmp_path):
    root, _ = corpus
    good = (root / demo.STEP1X_TAR).read_bytes()
    # member layout of the step1x shard: sample 1's JSON is at bytes 14848..14985, and the
    # header after it (sample 1's .txt) starts at byte 15360
    cuts = {"header": 15360 + 100, "json": 14900, "padding": len(good) - 1000}
    for name, cut in cuts.items():
        path = root / "X2Edit_data" / f"cut-{name}" / "000" / "00000.tar"
        path.parent.mkdir(parents=True)
        path.write_bytes(good[:cut])
    junk = root / "X2Edit_data" / "junk" / "000" / "00000.tar"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"this is not a tar archive" * 40)
    rows = run(root, tmp_path / "w")

    def errors(subset: str) -> list[str]:
        return [r["error"] for r in rows if r["subset"] == subset and r["error"]]

    header = [r for r in rows if r["subset"] == "cut-header"]
    assert len(header) == 3  # samples 0 and 1 (complete but for its .txt), plus the tail's row
    assert errors("cut-header") == ["tar ends early or is corrupt after 2 samples: a partial header at byte 15360"]
    json_cut = errors("cut-json")
    assert "unreadable json member 000000001.json: unexpected end of data" in json_cut
    assert any(e.startswith("tar ends early or is corrupt after 2 samples: ReadError") for e in json_cut)
    # a cut inside the trailing zero padding loses nothing: same rows as the whole shard
    assert len([r for r in rows if r["subset"] == "cut-padding"]) == 3
    assert errors("cut-padding") == ["missing edited member (.2.jpg)"]
    (junk_row,) = [r for r in rows if r["subset"] == "junk"]
    assert junk_row["error"].startswith("unreadable tar")


def test_no_tars_is_an_error_row(tmp_path):
    root = tmp_path / "x2"
    root.mkdir()
    (row,) = run(root, tmp_path / "w")
    assert "no tars match" in row["error"]


def test_task_mapping_and_member_split():
    main = {"action_change": "action", "background_change": "background", "color_change": "color",
            "style_change": "style", "subject_addition": "add", "subject_deletion": "remove",
            "subject_replacement": "replace", "text_change": "text", "tone_transform": "tone"}
    for task, category in main.items():
        assert task_category(task) == category
        assert task_category(task.upper().replace("_", " ")) == category
    assert task_category("删除主体") == "remove" and task_category("色调变换") == "tone"
    assert task_category("material_change") == "other" and task_category(None) == "other"
    assert split_member("a/b/000001.1.0.jpg") == ("a/b/000001", "1.0.jpg")
    assert split_member("000001.json") == ("000001", "json")
    assert split_member("README") is None
