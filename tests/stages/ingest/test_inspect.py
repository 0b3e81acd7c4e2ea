"""`curate inspect`: the first records of each root read as ingest would, nothing written."""
from __future__ import annotations

import json
import subprocess

from conftest import curate_bin, demo_config_file
from pipeline.curate.config import OpenVEConfig, ReCoConfig, load_config
from pipeline.curate.demo import reco as reco_demo
from stages.ingest import get_adapter
from stages.ingest.inspect import failure_kind, format_report, inspect_adapter, inspect_config

VIDEO_SETS = ["ditto", "openve", "reco", "koala", "motionbench"]


def test_demo_reports_counts_places_and_failures(demo_corpus, tmp_path):
    cfg = load_config(demo_config_file(demo_corpus, tmp_path))
    reports = {r.name: r for r in inspect_config(cfg)}
    assert set(VIDEO_SETS) <= set(reports)
    for name in VIDEO_SETS:
        r = reports[name]
        assert r.records > 0 and r.paths_resolved == r.paths_checked > 0 and not r.resolves_nothing
    reco = reports["reco"]
    assert reco.records == 9 and sum(e for _, _, e in reco.units) == 3
    assert reco.categories == {"add": 3, "replace": 3, "style": 2, "remove": 1}
    # unextracted shards show up as the shard they were found in
    assert reco.where["remove/src_videos/remove_src_video_00.tar"] == 1
    [nf] = reco.failures["not found (src_video)"]
    assert "looked in:" in nf and "members of add/src_videos/*.tar" in nf
    openve = reports["openve"]
    assert openve.where["videos/local_change/edited/"] == 1
    assert openve.failure_counts["not found (original_video)"] == 1
    assert reports["koala"].where == {"videos/": 5}
    assert reports["ditto"].where["videos/source/source/0001/"] == 1  # nested extraction
    assert all(r.ignored_fields() == [] for n, r in reports.items() if n in VIDEO_SETS)
    text = format_report(reco, 200)
    assert "media paths: 12 of 12 resolved" in text and "e.g. not found: src_video" in text


def test_first_n_records_and_ignored_fields(tmp_path):
    root = tmp_path / "reco"
    reco_demo.build(root)
    cfg = ReCoConfig(root=root, tasks=["add"])
    rec = json.loads((root / "add/add_data_configs.json").read_text())
    rec[0]["object_bbox"] = [1, 2, 3, 4]  # a field the adapter does not read
    (root / "add/add_data_configs.json").write_text(json.dumps(rec))
    r = inspect_adapter(get_adapter("reco", cfg), n=1)
    assert r.units == [("add/add_data_configs.json", 1, 0)]
    assert r.ignored_fields() == ["object_bbox"]


def test_wrong_layout_exits_1_and_writes_nothing(tmp_path):
    # OpenVE CSVs whose videos are not where the CSV paths say: nothing resolves.
    root = tmp_path / "openve"
    (root / "csv_files").mkdir(parents=True)
    (root / "csv_files/global_style.csv").write_text("video;original_video;prompt\na.mp4;b.mp4;Paint it.\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"run:\n  workdir: {tmp_path / 'work'}\ndatasets:\n  openve:\n    root: {root}\n")
    res = subprocess.run([curate_bin(), "inspect", "--config", str(config), "--n", "50"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "RESOLVES NOTHING" in res.stdout and "not found (original_video): 1" in res.stdout
    assert "looked in:" in res.stdout
    assert not (tmp_path / "work").exists()
    # the same verdict from Python
    r = inspect_adapter(get_adapter("openve", OpenVEConfig(root=root)), 10)
    assert r.resolves_nothing


def test_unknown_dataset_is_a_one_line_error(demo_corpus, tmp_path):
    res = subprocess.run([curate_bin(), "inspect", "--config", str(demo_config_file(demo_corpus, tmp_path)),
                          "--dataset", "nope"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--dataset nope: not an enabled dataset" in res.stderr


def test_failure_kinds_group_messages():
    assert failure_kind("not found: video 'a.mp4'; looked in: x") == "not found (video)"
    assert failure_kind("path escapes the dataset root: '../x'") == "path escapes the dataset root"
    assert failure_kind("missing caption") == "missing caption"


IMAGE_SETS = ["nhr_edit", "gpt_image_edit", "x2edit", "pico_banana"]


def test_demo_image_sets_resolve_their_media(demo_corpus, tmp_path):
    """X2Edit members addressed by header offset, GPT-Image-Edit's separate annotations, Pico's
    Open Images mapping and NHR-Edit's part-2 parquet all count as resolved."""
    cfg = load_config(demo_config_file(demo_corpus, tmp_path))
    reports = {r.name: r for r in inspect_config(cfg)}
    for name in IMAGE_SETS:
        r = reports[name]
        assert r.records > 0 and r.paths_resolved == r.paths_checked > 0 and not r.resolves_nothing, name
    x2 = reports["x2edit"]
    assert x2.where["X2Edit_data/gpt4o/000/00000.tar"] == 6  # 3 fine samples, 2 of them sharing names
    assert x2.categories["subject_driven"] == 2 and x2.failure_counts["excluded"] == 2
    assert x2.ignored_fields() == ["instruction_ori"]  # the source-image description, not read
    assert reports["nhr_edit"].where["NHR-Edit-part2/data/train-00000-of-00001.parquet"] == 4
    assert reports["pico_banana"].where["openimages/train_1/"] == 1
    assert reports["gpt_image_edit"].failure_counts["not found (input)"] == 1
