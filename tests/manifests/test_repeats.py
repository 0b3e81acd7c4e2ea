"""Repeated sample ids (a dataset that lists a sample twice): the samples view keeps one row per
id, the probe measures it once, `repeats` shows the others and `curate status` counts them,
however the workdir is spelled (relative, absolute, through a symlink) and in a copy of it."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from manifests import catalog, repeats
from pipeline.curate import runner
from pipeline.curate.config import load_config
from pipeline.curate.demo import build_corpus
from pipeline.curate.status import stage_status

from conftest import curate_bin, demo_config_file

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

ALL = ["ditto", "openve", "reco", "koala", "motionbench", "nhr_edit", "gpt_image_edit", "x2edit", "pico_banana"]


def _views(workdir) -> dict:
    con = catalog.connect(workdir)
    q = lambda sql: con.execute(sql).fetchall()  # noqa: E731
    return {
        "samples": q("SELECT sample_id, target_uri, error FROM samples ORDER BY ALL"),
        "counts": q("SELECT count(*), count(DISTINCT sample_id) FROM samples")[0],
        "probes": q("SELECT count(*), count(DISTINCT sample_id) FROM probes")[0],
        "full": q("SELECT count(*) FROM samples_full")[0][0],
        "repeats": q("SELECT sample_id, part, part_row FROM repeats ORDER BY ALL"),
    }


def test_repeats_do_not_depend_on_the_workdir_spelling(ray_session, tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    build_corpus(corpus, ["ditto"])
    meta = corpus / "ditto" / "training_metadata"
    shutil.copy(meta / "ditto_demo.json", meta / "ditto_demo_copy.json")  # every pair listed twice
    cfg = load_config(demo_config_file(corpus, tmp_path), [f"datasets.{d}.enabled=false" for d in ALL[1:]])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link").symlink_to(tmp_path / "work")

    runner.run(cfg, "ingest,probe", "work")  # relative
    ref = _views("work")
    n_ids = ref["counts"][1]
    assert ref["counts"] == (n_ids, n_ids) and ref["full"] == n_ids
    assert ref["probes"][0] == ref["probes"][1]  # each id probed once
    assert len(ref["repeats"]) > 0 and {r[0] for r in ref["repeats"]} <= {r[0] for r in ref["samples"]}
    assert all(r[1].startswith("ditto/") for r in ref["repeats"])  # a name, not a path

    spellings = ["work", tmp_path / "work", "./work/../work", "link", tmp_path / "link"]
    for written in spellings:  # tables written through one spelling ...
        runner.run(cfg, "ingest,probe", written, overwrite=True)
        for read in spellings:  # ... read the same through every other
            assert _views(read) == ref, (written, read)
    table = tmp_path / "work" / "tables" / "duplicates" / "part-00000.parquet"
    digest = table.read_bytes()
    for spelling in spellings:  # the repeats table itself, marked through any spelling
        assert repeats.mark(spelling) == len(ref["repeats"]) and table.read_bytes() == digest
    shutil.copytree(tmp_path / "work", tmp_path / "copy", symlinks=True)
    shutil.rmtree(tmp_path / "work")  # the copy must not read the original
    assert _views("copy") == ref
    runner.run(cfg, "probe", tmp_path / "copy", overwrite=True)  # a re-probe in the copy
    assert _views("copy") == ref

    rows = {r[0]: r for r in stage_status(tmp_path / "copy")}
    assert rows["repeats"][1] == len(ref["repeats"])
    res = subprocess.run([curate_bin(), "status", "--workdir", "copy"], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert res.returncode == 0 and "repeats" in res.stdout, res.stdout + res.stderr
