"""ReCo-Data ingest: the demo layout through the real ingest core, read back from Parquet."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from manifests.io import list_parts, read_table
from manifests.schema import make_sample_id
from pipeline.curate.config import ReCoConfig
from pipeline.curate.demo import reco as demo
from pipeline.curate.demo.media import real_pairs
from stages.ingest import get_adapter
from stages.ingest.core import ingest_adapter
from stages.ingest.reco import canonical_path


def ingest(cfg: ReCoConfig, workdir: Path) -> dict[str, dict]:
    adapter = get_adapter("reco", cfg)
    ingest_adapter(adapter, workdir)
    return {r["sample_id"]: r for r in read_table(workdir, "samples").to_pylist()}


def uri_exists(uri: str) -> bool:
    if uri.startswith("tar://"):
        tar, member = uri.removeprefix("tar://").split("#", 1)
        with tarfile.open(tar) as tf:
            return tf.getmember(member).isfile()
    return Path(uri).is_file()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("reco")
    return root, demo.build(root)


@pytest.fixture(scope="module")
def rows(corpus, tmp_path_factory):
    root, _ = corpus
    return ingest(ReCoConfig(root=root), tmp_path_factory.mktemp("work"))


def test_counts_categories_and_uris(corpus, rows):
    root, facts = corpus
    assert len(rows) == facts["rows"]
    assert sum(r["error"] is not None for r in rows.values()) == facts["errors"]
    for category, n in facts["categories"].items():
        matching = [r for r in rows.values() if r["category"] == category]
        assert len(matching) == n
        assert {(r["category_raw"], r["subset"], r["split"]) for r in matching} == {(category, category, "train")}
    for r in rows.values():
        assert (r["dataset"], r["modality"], r["task"], r["license"]) == ("reco", "video", "edit", "CC-BY-NC-SA-4.0")
        assert isinstance(json.loads(r["raw_record"]), dict)
        if r["error"] is None:
            assert r["instruction"] and uri_exists(r["source_uri"]) and uri_exists(r["target_uri"])


def test_unextracted_shards_inside_the_video_folders(corpus, rows):
    root, facts = corpus
    row = rows[make_sample_id("reco", "remove/tar_videos/zs02_rm_0001.mp4")]
    for col, role in (("source_uri", "src_video"), ("target_uri", "tar_video")):
        tar, member = facts["tar_members"][role].split("#")
        assert row[col] == f"tar://{(root / tar).resolve()}#{member}"  # bare member name
    assert row["instruction"].startswith("Remove the little girl") and row["error"] is None


def test_mask_recorded_when_present(corpus, rows):
    root, facts = corpus
    add = rows[make_sample_id("reco", "add/tar_videos/zs02_0001.mp4")]
    assert json.loads(add["extra"]) == {"mask_uri": str((root / facts["mask"]).resolve())}
    assert rows[make_sample_id("reco", "remove/tar_videos/zs02_rm_0001.mp4")]["extra"] is None


def test_loader_rejected_instructions_are_kept_for_the_filter(corpus, rows):
    _, facts = corpus
    flagged = [r for r in rows.values() if r["error"] is None
               and any(w in r["instruction"].lower() for w in ("error", "none"))]
    assert len(flagged) == facts["rejected_instruction"]
    style = rows[make_sample_id("reco", "style/tar_videos/video1-a_Ukiyo-e_style.mp4")]
    assert style["instruction"] == "None" and style["category"] == "style"


def test_task_relative_paths_share_the_root_relative_id(corpus, rows):
    root, _ = corpus
    row = rows[make_sample_id("reco", "replace/tar_videos/hl10_0001.mp4")]
    assert json.loads(row["raw_record"])["tar_video"] == "tar_videos/hl10_0001.mp4"
    assert row["source_uri"] == str((root / "replace/src_videos/hl10_0001.mp4").resolve())


def test_alt_instructions_and_error_rows(rows):
    good = rows[make_sample_id("reco", "add/tar_videos/zs02_0001.mp4")]
    assert good["alt_instructions"] == ["Add a girl."] and good["instruction"].startswith("Add a A little girl")
    missing = rows[make_sample_id("reco", "add/tar_videos/zs02_0002.mp4")]
    assert missing["error"] == "missing or empty field: instruction_final_refine"
    assert json.loads(missing["raw_record"])["instruction"] == "Add a dog."
    escape = rows[make_sample_id("reco", "../../etc/passwd")]
    assert escape["error"] == "path escapes the dataset root: '../../etc/passwd'"
    assert escape["source_uri"] is None and escape["category"] == "replace"
    nf = rows[make_sample_id("reco", "add/tar_videos/zs02_0003.mp4")]
    assert nf["error"].startswith("not found: src_video 'add/src_videos/zs02_0003.mp4'; looked in: ")
    assert "members of add/src_videos/*.tar or add/*.tar" in nf["error"]


def test_rerun_is_stable_and_byte_identical(corpus, tmp_path):
    root, _ = corpus
    cfg = ReCoConfig(root=root)
    a, b = ingest(cfg, tmp_path / "a"), ingest(cfg, tmp_path / "b")
    assert a.keys() == b.keys()
    pa_, pb_ = list_parts(tmp_path / "a", "samples"), list_parts(tmp_path / "b", "samples")
    assert len(pa_) == 4
    assert [p.relative_to(tmp_path / "a") for p in pa_] == [p.relative_to(tmp_path / "b") for p in pb_]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(pa_, pb_))


def test_tasks_config_selects_units(corpus, tmp_path):
    root, _ = corpus
    out = ingest(ReCoConfig(root=root, tasks=["style", "remove"]), tmp_path)
    assert sorted(r["category"] for r in out.values()) == ["remove", "style", "style"]


def test_missing_task_and_odd_records(tmp_path):
    root = tmp_path / "reco"
    pair = real_pairs()[0]
    # Older layout: shards in the task folder. Shards of both kinds hold a member named x.mp4:
    # the src/tar role in the shard name decides.
    (root / "add").mkdir(parents=True)
    for kind, clip in (("src", pair.source), ("tar", pair.edited)):
        with tarfile.open(root / "add" / f"add_{kind}_video_00.tar", "w") as tf:
            tf.add(clip, arcname=f"./{kind}_videos_flat/x.mp4")
    (root / "add/add_data_configs.json").write_text(json.dumps([
        {"src_video": "add/src_videos/x.mp4", "tar_video": "add/tar_videos/x.mp4",
         "instruction_final_refine": "Add a hat.", "clip_score": 0.5},
        ["not", "a", "record"],
        {"src_video": "add/src_videos/y.mp4", "tar_video": "add/tar_videos/y.mp4",
         "instruction_final_refine": "Add a scarf."},
    ]))
    (root / "style").mkdir()
    (root / "style/style_data_configs.json").write_text("{not json")
    out = ingest(ReCoConfig(root=root, tasks=["add", "style", "remove"]), tmp_path / "w")
    assert len(out) == 5
    x = out[make_sample_id("reco", "add/tar_videos/x.mp4")]
    add_dir = (root / "add").resolve()
    assert x["source_uri"] == f"tar://{add_dir}/add_src_video_00.tar#./src_videos_flat/x.mp4"
    assert x["target_uri"] == f"tar://{add_dir}/add_tar_video_00.tar#./tar_videos_flat/x.mp4"
    assert dict(x["native_scores"]) == {"clip_score": 0.5}
    # Found nowhere: an error row saying where it looked.
    y = out[make_sample_id("reco", "add/tar_videos/y.mp4")]
    assert y["error"] == (f"not found: src_video 'add/src_videos/y.mp4'; looked in: {add_dir}/src_videos/y.mp4, "
                          f"{add_dir}/add/src_videos/y.mp4, members of add/src_videos/*.tar or add/*.tar")
    errors = sorted(r["error"] for r in out.values() if r["error"])
    assert errors[1] == "record is not a JSON object"
    assert errors[2].startswith("unreadable remove_data_configs.json: FileNotFoundError")
    assert errors[3].startswith("unreadable style_data_configs.json: JSONDecodeError")


@pytest.mark.parametrize("path,task,canonical", [
    ("add/tar_videos/a.mp4", "add", "add/tar_videos/a.mp4"),
    ("./tar_videos/a.mp4", "add", "add/tar_videos/a.mp4"),
    ("../../etc/passwd", "add", "../../etc/passwd"),
    ("/abs/a.mp4", "add", "/abs/a.mp4"),
])
def test_canonical_path(path, task, canonical):
    assert canonical_path(path, task) == canonical


def test_demo_build_is_idempotent(tmp_path):
    first = demo.build(tmp_path)
    stamp = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file()}
    assert demo.build(tmp_path) == first
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file()} == stamp
    assert sum(p.stat().st_size for p in stamp) < 3_000_000
    # The shard is deterministic: built again elsewhere, it has the same bytes.
    other = tmp_path.parent / "again"
    demo.build(other)
    shard = "remove/src_videos/remove_src_video_00.tar"
    assert (other / shard).read_bytes() == (tmp_path / shard).read_bytes()


def test_masks_in_tar_shards(tmp_path):
    root = tmp_path / "reco"
    pair = real_pairs()[0]
    for folder, clip in (("add/src_videos", pair.source), ("add/tar_videos", pair.edited)):
        (root / folder).mkdir(parents=True)
        (root / folder / "v.mp4").write_bytes(clip.read_bytes())
    (root / "video_masks").mkdir()
    for task in ("add", "remove"):  # both tasks' mask shards hold a v.mp4: the task in the name decides
        with tarfile.open(root / "video_masks" / f"{task}_mask_00.tar", "w") as tf:
            tf.add(pair.source, arcname="v.mp4")
    (root / "add/add_data_configs.json").write_text(json.dumps([
        {"src_video": "add/src_videos/v.mp4", "tar_video": "add/tar_videos/v.mp4", "instruction_final_refine": "Add."}]))
    [row] = ingest(ReCoConfig(root=root, tasks=["add"]), tmp_path / "w").values()
    assert row["error"] is None
    assert json.loads(row["extra"]) == {"mask_uri": f"tar://{(root / 'video_masks/add_mask_00.tar').resolve()}#v.mp4"}
