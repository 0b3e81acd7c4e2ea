"""`curate run --stage encode` through Ray on a small demo run: ingest -> probe -> vlm-filter (a
fake judge server) -> filter -> encode with tiny random encoders of the real architectures."""
from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from manifests import catalog
from manifests.io import list_parts, read_table
from pipeline.curate import runner
from pipeline.config_base import ConfigError
from pipeline.curate.demo import build_corpus
from stages.media.buckets import nearest_bucket
from fake_judge import FakeJudgeServer
from stages.encode.schema import key_of, unpack_tensors
from stages.encode.stage import write_encode_plan
from stages.pretext import draw_variants

from _encode_fixtures import STAGE_DATASETS, stage_config, tiny_models  # noqa: F401 (fixture)
from conftest import part_digests

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

BROKEN_VIDEO = "hL07walkGrp.mp4"  # two Koala windows point into it


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_models, ray_session):
    """A filtered demo run, then one of its Koala videos damaged (as if it changed after probing)."""
    root = tmp_path_factory.mktemp("encode_stage")
    corpus = root / "corpus"
    build_corpus(corpus, STAGE_DATASETS)
    with FakeJudgeServer() as server:
        cfg = stage_config(corpus, root, tiny_models, server.url)
        runner.run(cfg, "ingest,probe,vlm-filter,filter", root / "work")
    (corpus / "koala" / "videos" / BROKEN_VIDEO).write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x17" * 4096)
    return {"root": root, "corpus": corpus, "cfg": cfg, "work": root / "work", "models": tiny_models}


def test_encode_stage_end_to_end(run):
    cfg, work = run["cfg"], run["work"]
    (report,) = runner.run(cfg, "encode", work)
    con = catalog.connect(work)
    kept = con.execute("SELECT s.sample_id, s.dataset, s.target_uri, p.target_width, p.target_height "
                       "FROM selected JOIN samples s USING (sample_id) JOIN probes p USING (sample_id) "
                       "WHERE kept ORDER BY 1").fetchall()
    assert {r[1] for r in kept} == set(STAGE_DATASETS)
    # one row per key: every kept sample, every variant it drew
    expected = {}
    for sid, ds, uri, w, h in kept:
        variants = draw_variants(sid, cfg.run.seed, cfg.pretext) if ds == "koala" else ["edit"]
        for v in variants:
            expected[key_of(sid, v)] = (sid, ds, uri, w, h)
    rows = {r["key"]: r for r in read_table(work, "encoded").to_pylist()}
    assert sorted(rows) == sorted(expected)
    buckets = cfg.encode.bucket_list()
    broken = 0
    for key, r in rows.items():
        sid, ds, uri, w, h = expected[key]
        if BROKEN_VIDEO in uri:
            broken += 1
            assert r["error"].startswith("undecodable:") and r["tensors"] is None, r["error"]
            continue
        assert r["error"] is None, (key, r["error"])
        assert r["bucket"] == "{}x{}".format(*nearest_bucket(w, h, buckets))
        tensors = unpack_tensors(r["tensors"])
        assert list(tensors["target_latents"].shape) == r["latent_shape"]
        bw, bh = map(int, r["bucket"].split("x"))
        assert r["latent_shape"] == [16, (r["num_frames"] - 1) // 4 + 1, bh // 8, bw // 8]
        assert r["purpose"] == ("stage1" if ds == "reco" else "stage0")
        assert json.loads(r["models"])["vae"]["random_init"] is True
    assert broken == sum(BROKEN_VIDEO in v[2] for v in expected.values()) > 0
    # portrait source (hl02) and the 2:1 one (zs02) of the Koala windows
    koala_buckets = {expected[k][2].rsplit("/", 1)[-1]: r["bucket"] for k, r in rows.items() if r["error"] is None
                     and expected[k][1] == "koala"}
    assert koala_buckets["hL02filmRol.mp4"] == "32x64" and koala_buckets["zS02boyPlay.mp4"] == "64x32"
    # the catalog view hides the tensor blobs but has everything else
    cols = [c[0] for c in con.execute("DESCRIBE encoded").fetchall()]
    assert "tensors" not in cols and "tensor_meta" in cols and "latent_shape" in cols
    assert con.execute("SELECT count(*) FROM encoded WHERE error IS NULL").fetchone()[0] == len(rows) - broken
    # the report: per dataset, kept samples, keys, encoded keys, failed keys, keys no longer kept
    by_ds = {r[0]: tuple(r[1:]) for r in report.by_dataset}
    for ds in STAGE_DATASETS:
        n_kept = sum(1 for r in kept if r[1] == ds)
        n_keys = sum(1 for v in expected.values() if v[1] == ds)
        n_bad = sum(1 for v in expected.values() if v[1] == ds and BROKEN_VIDEO in v[2])
        assert by_ds[ds] == (n_kept, n_keys, n_keys - n_bad, n_bad, 0)  # 0 keys of samples no longer kept

    # resume and determinism: a lost part is redone by a new actor with the same bytes
    before = part_digests(work, "encoded")
    lost = sorted(before)[-1]
    (work / lost).unlink()
    (report,) = runner.run(cfg, "encode", work)
    assert report.units_run == 1 and part_digests(work, "encoded") == before
    (report,) = runner.run(cfg, "encode", work)
    assert report.units_run == 0

    # other settings refuse to resume into the same output
    changed = cfg.model_copy(update={"encode": cfg.encode.model_copy(update={"fps": 4.0})})
    with pytest.raises(ConfigError, match=r"different settings \(encode\)"):
        runner.run(changed, "encode", work)
    assert part_digests(work, "encoded") == before


def test_missing_model_dir_fails_first(run, tmp_path):
    cfg = run["cfg"]
    bad = cfg.model_copy(update={"encode": cfg.encode.model_copy(update={"vae_path": tmp_path / "no_vae"})})
    work = tmp_path / "w"
    shutil.copytree(run["work"] / "tables", work / "tables", ignore=shutil.ignore_patterns("encoded"))
    with pytest.raises(ConfigError, match=r"encode\.vae_path: .*no_vae is not a directory"):
        runner.run(bad, "encode", work)
    assert not list_parts(work, "encoded") and not (work / "state" / "encoded").exists()


def test_plan_units_are_whole_row_groups(run, tmp_path, monkeypatch):
    """samples_per_unit rows per row group, units spread over several plan files, every kept sample once,
    ordered by bucket within a dataset."""
    import stages.encode.stage as stage

    work = tmp_path / "w"
    shutil.copytree(run["work"] / "tables", work / "tables", ignore=shutil.ignore_patterns("encoded"))
    monkeypatch.setattr(stage, "UNITS_PER_PLAN_FILE", 1)
    cfg = run["cfg"].model_copy(update={"encode": run["cfg"].encode.model_copy(update={"samples_per_unit": 2})})
    units = write_encode_plan(cfg, work)
    con = catalog.connect(work)
    kept = dict(con.execute("SELECT sample_id, s.dataset FROM selected JOIN samples s USING (sample_id) "
                            "WHERE kept").fetchall())
    seen = []
    for u in units:
        table = pq.ParquetFile(u.params["plan"]).read_row_group(u.params["row_group"])
        assert table.num_rows == u.rows <= 2 and pq.ParquetFile(u.params["plan"]).metadata.num_row_groups == 1
        assert set(table["dataset"].to_pylist()) == {u.dataset}
        seen += table["sample_id"].to_pylist()
    assert sorted(seen) == sorted(kept) and len(units) == sum(-(-list(kept.values()).count(d) // 2)
                                                             for d in set(kept.values()))
    assert units == write_encode_plan(cfg, work)  # a pure function of the selection and the config


def test_units_grow_with_the_selection_in_whole_batches():
    """The unit (one part) is whole batches of samples_per_unit: one batch for a small selection,
    more as it grows (so 5M kept samples are not 1.25M parts), bounded by what one actor regroups."""
    from stages.encode.stage import MAX_BATCHES_PER_UNIT, unit_rows

    assert unit_rows(4, 10) == 4  # the demo: a unit is a batch, as before
    assert unit_rows(4, 4 * 64 * 3) == 12
    assert unit_rows(4, 5_000_000) == 4 * MAX_BATCHES_PER_UNIT
