"""X2Edit ingest: WebDataset tars (plain and concatenated: repeated names are new samples,
addressed by offset), task mapping, subject-driven exclusion, scores, extra, error rows, stable ids."""
from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest

from manifests.io import list_parts, read_table
from manifests.schema import make_sample_id
from pipeline.curate.config import X2EditConfig
from pipeline.curate.demo import x2edit as demo
from pipeline.curate.demo.media import image_bytes
from stages.ingest.core import ingest_adapter
from stages.ingest.x2edit import X2EditAdapter, split_member
from stages.ingest.x2edit_tasks import canonical_task, task_category
from stages.media.locate import MediaError as ProbeError, locate
from stages.media.tar_members import split_ref


def run(root: Path, workdir: Path, **cfg) -> list[dict]:
    adapter = X2EditAdapter(X2EditConfig(root=root, **cfg))
    ingest_adapter(adapter, workdir)
    return read_table(workdir, "samples").to_pylist()


def read_member(uri: str) -> bytes:
    """The bytes a tar:// URI names, read the way every stage reads them (stages.media.locate)."""
    assert uri.startswith("tar://")
    return locate(uri).getvalue()


def by_name_last(uri: str) -> bytes:
    """What a by-name reader gets: tarfile (past concatenation markers), getmember by name."""
    path, ref = uri[len("tar://"):].split("#", 1)
    with tarfile.open(path, ignore_zeros=True) as tf:
        return tf.extractfile(tf.getmember(split_ref(ref)[0])).read()


@pytest.fixture
def corpus(tmp_path) -> tuple[Path, dict]:
    root = tmp_path / "x2"
    return root, demo.build(root)


def natural_id(name: str) -> str:
    tar, key, *occurrence = name.split("#")
    return make_sample_id("x2edit", tar, key, *map(int, occurrence))


def test_demo_rows_categories_scores(corpus, tmp_path):
    root, facts = corpus
    rows = run(root, tmp_path / "w")
    assert len(rows) == facts["rows"] == 16
    assert sum(bool(r["error"]) for r in rows) == facts["errors"] == 6
    for name, (task, category, subset) in facts["ok"].items():
        tar, key = name.split("#")[:2]
        (r,) = [r for r in rows if r["sample_id"] == natural_id(name)]
        assert r["error"] is None
        assert (r["category_raw"], r["category"], r["subset"]) == (task, category, subset)
        assert r["modality"] == "image" and r["task"] == "edit" and r["license"] == "Apache-2.0"
        assert re.fullmatch(rf"tar://{re.escape(str((root / tar).resolve()))}#{key}\.1\.0\.jpg@\d+", r["source_uri"])
        assert re.fullmatch(rf"tar://{re.escape(str((root / tar).resolve()))}#{key}\.2\.jpg@\d+", r["target_uri"])
        for uri in (r["source_uri"], r["target_uri"]):
            assert read_member(uri)[:2] == b"\xff\xd8"  # a JPEG, at the offset the URI names
    chinese = next(r for r in rows if r["category_raw"] == "风格更改")
    assert chinese["instruction"] == "把图片变成水彩画风格"
    scored = next(r for r in rows if r["category_raw"] == "background_change" and r["subset"] == "step1x")
    assert dict(scored["native_scores"]) == {"score_0": 9.0, "score_1": 8.0, "liqe_score": 4.25,
                                             "aesthetic_score_v2_5": 5.9}
    assert json.loads(scored["extra"]) == {"task": "background_change", "model": "step1x", "label": "step1x",
                                           "width": 128, "height": 96}
    assert chinese["native_scores"] is None  # score "None" is not a number


def test_concatenated_tar_repeated_names_are_new_samples(corpus, tmp_path):
    root, facts = corpus
    rows = run(root, tmp_path / "w")
    dup = facts["duplicate"]
    first = next(r for r in rows if r["sample_id"] == make_sample_id("x2edit", dup["tar"], "000000000"))
    second = next(r for r in rows if r["sample_id"] == make_sample_id("x2edit", dup["tar"], "000000000", 1))
    # both samples survive, each with its own JSON and its own images (same member names)
    assert (first["instruction"], first["category"]) == ("Add a cat on the sofa", "add")
    assert (second["instruction"], second["category"]) == ("Remove the cat from the sofa", "remove")
    assert first["target_uri"].split("@")[0] == second["target_uri"].split("@")[0]  # same name ...
    assert read_member(first["target_uri"]) == image_bytes(128, 96, 41)  # ... different bytes
    assert read_member(second["target_uri"]) == image_bytes(128, 96, dup["seed"])
    assert by_name_last(first["target_uri"]) == read_member(second["target_uri"])  # what a name gets
    assert dict(second["native_scores"]) == {"score_7b_0": 10.0, "score_7b_1": 9.0}
    raw = json.loads(second["raw_record"])
    assert raw["_occurrence"] == 1 and raw["task"] == "subject_deletion"  # the JSON's fields, then ours
    assert set(raw["_members"]) == {"1.0.jpg", "2.jpg", "json", "txt"}
    # members past the first end-of-archive marker were found
    assert any(x["target_uri"] and "#000000003.2.jpg@" in x["target_uri"] for x in rows)


def test_subject_driven_excluded_by_default_and_configurable(corpus, tmp_path):
    root, _ = corpus
    rows = run(root, tmp_path / "w")
    excluded = [r for r in rows if (r["error"] or "").startswith("excluded:")]
    assert sorted(r["category_raw"] for r in excluded) == ["portrait", "证件照生成"]
    assert all(r["category"] == "subject_driven" and r["target_uri"] for r in excluded)
    assert "datasets.x2edit.exclude_tasks" in excluded[0]["error"]
    kept = run(root, tmp_path / "w2", exclude_tasks=[])
    portrait = next(r for r in kept if r["category_raw"] == "portrait")
    assert portrait["error"] is None and portrait["category"] == "subject_driven"
    # a user list is matched after normalising case and separators
    custom = run(root, tmp_path / "w3", exclude_tasks=["Reasoning"])
    assert next(r for r in custom if r["category_raw"] == "reasoning")["error"].startswith("excluded:")
    assert next(r for r in custom if r["category_raw"] == "portrait")["error"] is None


def test_instructions_placeholders_translations_and_text_mask(corpus, tmp_path):
    root, _ = corpus
    rows = run(root, tmp_path / "w")
    none = next(r for r in rows if r["subset"].startswith("qwen") and r["category_raw"] == "color_change")
    assert none["instruction"] is None and none["error"] == "empty instruction: 'None' is a placeholder"
    qwen_bg = next(r for r in rows if r["subset"].startswith("qwen") and r["category_raw"] == "background_change")
    # instruction_ori describes the source image: never an alternative instruction
    assert qwen_bg["instruction"] == "把背景换成雪山" and qwen_bg["alt_instructions"] is None
    camera = next(r for r in rows if r["category_raw"] == "camrea_move_editing")
    assert camera["alt_instructions"] == ["把镜头向左移动"]  # instruction_zh is a translation
    assert json.loads(camera["extra"])["instruction_type"] == "short"
    text = next(r for r in rows if r["subset"] == "textflux")
    mask_uri = json.loads(text["extra"])["text_mask_uri"]
    assert "#000000000.1.1.jpg@" in mask_uri and read_member(mask_uri) == image_bytes(128, 96, 92)
    assert json.loads(text["raw_record"])["_members"].keys() == {"1.0.jpg", "1.1.jpg", "2.jpg", "json", "txt"}


def test_demo_error_rows(corpus, tmp_path):
    root, _ = corpus
    errors = {r["error"]: r for r in run(root, tmp_path / "w") if r["error"]}
    assert set(errors) == {"missing edited member (.2.jpg)", "empty instruction", "empty instruction: 'None' is a placeholder",
                           "corrupt json member 000000002.json: Expecting value: line 1 column 42 (char 41)",
                           "excluded: task 'portrait' is subject-driven generation, not an edit "
                           "(datasets.x2edit.exclude_tasks)",
                           "excluded: task '证件照生成' is subject-driven generation, not an edit "
                           "(datasets.x2edit.exclude_tasks)"}
    missing = errors["missing edited member (.2.jpg)"]
    assert missing["target_uri"] is None and missing["source_uri"] and missing["category"] == "color"
    assert all(json.loads(r["raw_record"])["_tar"] for r in errors.values())


def test_ids_stable_and_parts_byte_identical(corpus, tmp_path):
    root, _ = corpus
    a = run(root, tmp_path / "a")
    b = run(root, tmp_path / "b")
    assert [r["sample_id"] for r in a] == [r["sample_id"] for r in b]
    pa_, pb = list_parts(tmp_path / "a", "samples"), list_parts(tmp_path / "b", "samples")
    assert [p.name for p in pa_] == [p.name for p in pb] and len(pa_) == 5  # one per tar
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
            "subject_replacement": "replace", "text_change": "text", "tone_transform": "tone",
            "camera_movement": "camera", "material_change": "local_change", "reasoning": "reasoning",
            "portrait": "subject_driven", "portrait_editing": "subject_driven",
            "personalized_generation": "subject_driven"}
    for task, category in main.items():  # the 15 canonical values (99.8% of the rows)
        assert task_category(task) == category
        assert task_category(task.upper().replace("_", " ")) == category
        assert canonical_task(f" -{task}. ") == task
    # the long tail: official aliases, prompt labels, typos, Chinese labels, free text
    assert task_category("删除主体") == "remove" and task_category("色调变换") == "tone"
    assert task_category("Camera Move Editing") == "camera" and task_category("Reasoning Editing") == "reasoning"
    assert task_category("camrea_move_editing") == "camera" and task_category("complex_reasoning") == "reasoning"
    assert task_category("tune_transfer") == "tone" and task_category("打光") == "tone"
    assert task_category("证件照生成") == "subject_driven" and canonical_task("证件照生成") == "portrait"
    assert task_category("人物修图") == "local_change" and task_category("把背景变成海边") == "background"
    assert task_category("change the weather to rain") == "tone"  # English keywords
    assert task_category("object_counting") == "other" and task_category(None) == "other"
    assert split_member("a/b/000001.1.0.jpg") == ("a/b/000001", "1.0.jpg")
    assert split_member("000001.json") == ("000001", "json")
    assert split_member("README") is None


def test_offset_uri_survives_and_detects_a_changed_tar(corpus, tmp_path):
    root, facts = corpus
    rows = run(root, tmp_path / "w")
    uri = next(r["target_uri"] for r in rows if r["error"] is None and r["subset"] == "gpt4o")
    path, ref = uri[len("tar://"):].split("#", 1)
    member, offset = split_ref(ref)
    with pytest.raises(ProbeError) as e:  # a header offset that points elsewhere
        locate(f"tar://{path}#{member}@{offset + 512}")
    assert e.value.kind == "missing" and "at offset" in e.value.message
    assert locate(f"tar://{path}#{member}").getvalue() == by_name_last(uri)  # plain names still work


def test_instruction_as_a_list_and_user_exclusions(tmp_path):
    root = tmp_path / "x2"
    members = (demo._sample("000000000", 1, json.dumps({"instruction": ["Make it rain"], "task": "天气变化"}).encode())
               + demo._sample("000000001", 3, json.dumps({"instruction": "无", "task": "tone_transform"}).encode()))
    path = root / "X2Edit_data" / "bagel" / "000" / "00000.tar"
    path.parent.mkdir(parents=True)
    path.write_bytes(demo.tar_bytes(members))
    rows = {r["category_raw"]: r for r in run(root, tmp_path / "w")}
    assert rows["天气变化"]["instruction"] == "Make it rain" and rows["天气变化"]["category"] == "tone"
    assert rows["tone_transform"]["error"] == "empty instruction: '无' is a placeholder"


def test_root_pointed_at_x2edit_data_itself(corpus, tmp_path):
    root, facts = corpus
    rows = run(root / "X2Edit_data", tmp_path / "w")
    assert len(rows) == facts["rows"] and {r["subset"] for r in rows} >= {"step1x", "gpt4o", "textflux"}
