"""Re-curation: a re-thresholded `filter` followed by `encode,shard` encodes only the samples it
newly keeps, keeps the encodings of those still kept, leaves the dropped ones out of the shards
(on disk, reported, `curate prune` removes them), and the shards equal a fresh run's bytes. An
empty selection gives empty encode and shard outputs, no error."""
from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

from manifests import catalog
from manifests.io import list_parts
from pipeline.curate import runner
from pipeline.config_base import ConfigError
from pipeline.curate.demo import build_corpus
from pipeline.curate.status import stage_status
from manifests.io import read_table
from fake_judge import FakeJudgeServer

from _encode_fixtures import STAGE_DATASETS, stage_config, tiny_models  # noqa: F401 (fixture)
from conftest import curate_bin, part_digests

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(1200)]

SHARD = ["shard.target_bytes=30000"]  # a few keys per shard: a grown selection moves the cuts


def _shard_bytes(work) -> dict[str, str]:
    """sha256 of every shard tar and of the shard index tables, by path relative to the workdir."""
    tars = {str(p.relative_to(work)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((work / "shards").rglob("*.tar"))}
    return {**tars, **part_digests(work, "shards"), **part_digests(work, "shard_keys")}


def _keys(work) -> dict[str, bytes]:
    return {r["key"]: r["tensors"] for r in read_table(work, "encoded").to_pylist()}


def _kept(work) -> set[str]:
    return {r[0] for r in catalog.connect(work).execute("SELECT sample_id FROM selected WHERE kept").fetchall()}


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tiny_models, ray_session):
    """A demo run judged by the fake server, and two thresholds: A keeps the better-scored clips
    and every image pair, B every clip and only the better-scored image pairs."""
    root = tmp_path_factory.mktemp("recurate")
    corpus = root / "corpus"
    build_corpus(corpus, STAGE_DATASETS)
    with FakeJudgeServer() as server:
        cfg = stage_config(corpus, root, tiny_models, server.url, SHARD)
        runner.run(cfg, "ingest,probe,vlm-filter", root / "scored")
    con = catalog.connect(root / "scored")
    # the second-best score of a kind: some samples of it pass, some do not
    best = dict(con.execute("SELECT kind, list_sort(list(DISTINCT visual_quality))[-2] FROM scores "
                            "WHERE status IN ('ok', 'repaired') GROUP BY 1").fetchall())
    a = stage_config(corpus, root, tiny_models, server.url, [*SHARD, f"filter.clip.at_least.visual_quality={best['clip']}"])
    b = stage_config(corpus, root, tiny_models, server.url,
                     [*SHARD, f"filter.image.at_least.visual_quality={best['image_edit']}"])
    make = lambda extra: stage_config(corpus, root, tiny_models, server.url, [*SHARD, *extra])  # noqa: E731
    return {"root": root, "a": a, "b": b, "cfg": cfg, "make": make}


def _copy_scored(scored, name):
    work = scored["root"] / name
    shutil.copytree(scored["root"] / "scored" / "tables", work / "tables")
    return work


def test_rethreshold_encodes_only_the_difference_and_shards_equal_a_fresh_run(scored):
    work = _copy_scored(scored, "work")
    runner.run(scored["a"], "filter,encode,shard", work)
    kept_a, keys_a, parts_a = _kept(work), _keys(work), part_digests(work, "encoded")

    reports = runner.run(scored["b"], "filter,encode,shard", work)  # not refused, no --overwrite
    kept_b, keys_b = _kept(work), _keys(work)
    added, dropped = kept_b - kept_a, kept_a - kept_b
    assert added and dropped and kept_a & kept_b  # the test means something
    new_keys = {k for k in keys_b if k not in keys_a}
    sample_of = {r["key"]: r["sample_id"] for r in read_table(work, "encoded").to_pylist()}
    assert {sample_of[k] for k in new_keys} == added  # only the newly kept samples were encoded
    assert all(part_digests(work, "encoded")[p] == d for p, d in parts_a.items())  # the rest untouched
    encode_report = next(r for r in reports if r.stage == "encode")
    assert encode_report.units_total == encode_report.units_run > 0
    stale = sum(1 for k in keys_b if sample_of[k] in dropped)
    assert sum(r[5] for r in encode_report.by_dataset) == stale > 0  # reported: keys no longer kept
    assert f"{stale} keys no longer kept" in {r[0]: r for r in stage_status(work)}["encode"][4]
    sharded = {r[0] for r in catalog.connect(work).execute("SELECT sample_id FROM shard_keys").fetchall()}
    assert sharded <= kept_b and not sharded & dropped

    fresh = _copy_scored(scored, "fresh")
    fresh_reports = runner.run(scored["b"], "filter,encode,shard", fresh)
    assert _shard_bytes(work) == _shard_bytes(fresh)
    n_fresh = len(_keys(fresh))
    print(f"\nre-curation: {len(new_keys)} keys encoded on the threshold change, "
          f"{n_fresh} in a fresh run ({next(r for r in fresh_reports if r.stage == 'encode').units_run} units); "
          f"{stale} keys no longer kept left on disk")

    # curate prune removes the encodings no longer kept; the re-shard still equals the fresh run
    res = subprocess.run([curate_bin(), "prune", "--workdir", str(work)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and f"removed {stale} keys" in res.stdout, res.stdout + res.stderr
    assert _keys(work) == _keys(fresh)
    runner.run(scored["b"], "shard", work)
    assert _shard_bytes(work) == _shard_bytes(fresh)
    assert "no longer kept" not in {r[0]: r for r in stage_status(work)}["encode"][4]

    # encoder settings still refuse to mix
    other = scored["b"].model_copy(update={"encode": scored["b"].encode.model_copy(update={"fps": 4.0})})
    with pytest.raises(ConfigError, match=r"different settings \(encode\)"):
        runner.run(other, "encode", work)


@pytest.mark.parametrize("overwrite", [False, True])
def test_empty_selection_gives_empty_outputs(scored, overwrite):
    work = _copy_scored(scored, f"empty-{overwrite}")
    runner.run(scored["cfg"], "filter,encode,shard", work)
    assert list((work / "shards").rglob("*.tar"))
    nothing = scored["make"]([f"filter.{kind}.at_least.visual_quality=11" for kind in ("image", "video", "clip")])
    reports = runner.run(nothing, "filter,encode,shard", work, overwrite=overwrite)  # no ConfigError
    assert [r.stage for r in reports] == ["filter", "encode", "shard"]
    con = catalog.connect(work)
    assert con.execute("SELECT count(*) FROM selected WHERE kept").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM shards").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM shard_keys").fetchone()[0] == 0
    assert not list((work / "shards").rglob("*.tar"))
    n_encoded = con.execute("SELECT count(*) FROM encoded").fetchone()[0]
    assert (n_encoded == 0) == overwrite  # without --overwrite the earlier encodings stay (prunable)
    if overwrite:
        assert [p.name for p in list_parts(work, "encoded")] == ["part-empty.parquet"]
    res = subprocess.run([curate_bin(), "verify", "--workdir", str(work)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
