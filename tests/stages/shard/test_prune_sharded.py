"""`curate prune --sharded` over hand-made encoded rows and real shards (no Ray): only keys a
shard proves it holds lose their blob, nothing else of a row changes, a kill at any step resumes
to the same bytes, and a re-threshold afterwards writes exactly the shards an unpruned workdir
writes (the blobs are read back from the old shards first)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pyarrow as pa
import pytest

from _shard_fixtures import build_run, sample_id, tars
from conftest import curate_bin, part_digests
from manifests.io import read_table, table_dir, write_part
from pipeline.config_base import ConfigError
from stages.shard.plan import write_shard_plan
from stages.shard.prune_sharded import prune_sharded, restore, tombstone_dir
from stages.shard.stage import plan_path, remove_stale, write_index
from stages.shard.write import is_done, write_shard

TARGET = 40_000


def shard_locally(workdir: Path) -> list[dict]:
    """What the shard stage does, without Ray: plan, read back pruned blobs, drop stale, write."""
    units = [s.as_unit() for s in write_shard_plan(workdir, plan_path(workdir), TARGET)]
    restore(workdir, {u["shard"] for u in units if is_done(workdir, u)})
    remove_stale(workdir, units)
    for u in units:
        if not is_done(workdir, u):
            write_shard(workdir, plan_path(workdir), u)
    write_index(workdir, plan_path(workdir), units)
    return units


def blobs(workdir: Path) -> dict[str, bytes | None]:
    return {r["key"]: r["tensors"] for r in read_table(workdir, "encoded", ["key", "tensors"]).to_pylist()}


def drop_sample(workdir: Path, sid: str) -> None:
    sel = read_table(workdir, "selected").to_pylist()
    for r in sel:
        if r["sample_id"] == sid:
            r["kept"], r["rejected_by"] = False, "manual"
    write_part(table_dir(workdir, "selected") / "part-00000.parquet", pa.Table.from_pylist(sel))


def test_prune_keeps_one_copy_and_a_rethreshold_rebuilds_the_same_shards(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    expected = build_run(a)
    build_run(b)
    shard_locally(a)
    shard_locally(b)
    before, shards = blobs(a), tars(a)

    r = prune_sharded(a)
    sharded = set(expected["kept_keys"])
    assert r.keys == len(sharded) and not r.mismatched and r.parts > 0
    assert r.rows_after == r.rows_before == len(before) and r.digest_after == r.digest_before
    assert r.bytes_after < r.bytes_before / 2 and r.tensor_bytes == sum(len(before[k]) for k in sharded)
    after = blobs(a)
    assert {k for k, v in after.items() if v is None} == sharded | {k for k, v in before.items() if v is None}
    assert {k: v for k, v in after.items() if k not in sharded} == {k: v for k, v in before.items() if k not in sharded}
    assert tars(a) == shards
    again = prune_sharded(a)
    assert again.keys == 0 and again.already == len(sharded) and again.parts == 0

    # Nothing to rewrite: the shard run leaves the table pruned.
    shard_locally(a)
    assert tars(a) == shards and blobs(a) == after

    # A re-threshold: the shards that change are rebuilt with the bytes an unpruned workdir gets,
    # and only their keys' blobs come back (exactly as they were).
    for w in (a, b):
        drop_sample(w, sample_id("koala", 0))
        shard_locally(w)
    assert tars(a) == tars(b) and tars(a) != shards
    back = {k for k, v in blobs(a).items() if v is not None and after[k] is None}
    assert back and all(blobs(a)[k] == before[k] for k in back)
    assert any(v is None for k, v in blobs(a).items() if k in sharded)  # untouched shards' keys stay pruned

    # --overwrite of the shard stage deletes every shard: everything comes back first, to the
    # bytes the parts had before the prune.
    restore(a, set())
    assert blobs(a) == before and part_digests(a, "encoded") == part_digests(b, "encoded")


@pytest.mark.parametrize("stop_after", [1, 2])
def test_a_killed_prune_resumes_to_the_same_bytes(tmp_path, stop_after):
    a, b = tmp_path / "a", tmp_path / "b"
    for w in (a, b):
        build_run(w)
        shard_locally(w)
    prune_sharded(b)
    first = prune_sharded(a, stop_after=stop_after)  # killed in the first part's rewrite
    assert first.parts == 1
    hidden = list((table_dir(a, "encoded")).rglob(".*.tmp"))
    assert len(hidden) == 1 and not (stop_after == 1 and any(tombstone_dir(a).glob("*.parquet")))
    r = prune_sharded(a)
    assert not r.mismatched and r.digest_after == r.digest_before
    assert part_digests(a, "encoded") == part_digests(b, "encoded")
    assert sorted(p.name for p in tombstone_dir(a).iterdir()) == sorted(p.name for p in tombstone_dir(b).iterdir())


def test_only_what_a_shard_proves_is_pruned_and_a_lost_shard_is_reported(tmp_path):
    work = tmp_path / "run"
    expected = build_run(work)
    shard_locally(work)
    index = read_table(work, "shard_keys").to_pylist()
    victim = index[0]
    tar = work / victim["shard"]
    data = bytearray(tar.read_bytes())
    at = data.index(f"{victim['key']}.target.safetensors".encode())  # its header: the data follows
    data[at + 512 + 200] ^= 0xFF  # one byte of its tensor data, same size
    tar.write_bytes(bytes(data))
    r = prune_sharded(work)
    assert r.mismatched == [victim["key"]] and r.keys == len(expected["kept_keys"]) - 1
    assert blobs(work)[victim["key"]] is not None

    res = subprocess.run([curate_bin(), "prune", "--sharded", "--workdir", str(work)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode != 0 and victim["key"] in res.stdout + res.stderr

    other = next(x for x in index if x["shard"] != victim["shard"])
    (work / other["shard"]).unlink()
    with pytest.raises(ConfigError, match="re-encode"):
        restore(work, set())


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_the_shard_stage_reads_pruned_tensors_back(ray_session, tmp_path):
    """Through `curate run --stage shard` (the stage's plan and its --overwrite check): after the
    prune a re-threshold and then an --overwrite with another target write the bytes an unpruned
    workdir gets, and `curate verify` passes."""
    from pipeline.curate import runner
    from pipeline.curate.config import load_config
    from stages.shard.verify import verify_workdir

    cfg_file = tmp_path / "shard.yaml"
    cfg_file.write_text(f"shard:\n  target_bytes: {TARGET}\n")
    cfg = load_config(cfg_file)
    a, b = tmp_path / "a", tmp_path / "b"
    for w in (a, b):
        build_run(w)
        runner.run(cfg, "shard", w)
    assert prune_sharded(a).keys > 0
    for w in (a, b):
        drop_sample(w, sample_id("koala", 0))
        runner.run(cfg, "shard", w)
    assert tars(a) == tars(b) and verify_workdir(a).ok
    other = load_config(cfg_file, ["shard.target_bytes=20000"])
    for w in (a, b):
        runner.run(other, "shard", w, overwrite=True)
    assert tars(a) == tars(b) and verify_workdir(a).ok
    assert part_digests(a, "encoded") == part_digests(b, "encoded")
