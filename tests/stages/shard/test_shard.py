"""The shard stage over hand-made encoded rows: layout, sizes, determinism, readers, index, verify,
resume (kill -9 mid-run), and what `curate verify` reports when something is wrong."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from safetensors.torch import load

from _shard_fixtures import build_run, sample_id, tars
from manifests import catalog
from manifests.io import read_table, table_dir, write_part
from pipeline.curate import runner
from pipeline.curate.config import load_config
from stages.shard.layout import estimated_bytes, write_tar
from stages.shard.plan import write_shard_plan
from stages.shard.stage import plan_path, write_index
from stages.shard.verify import MAX_LISTED, verify_workdir
from stages.shard.write import write_shard

from conftest import curate_bin

TARGET = 40_000  # bytes: the koala group (9 keys of ~10 kB) splits into several shards


def shard_locally(workdir: Path, target_bytes: int = TARGET) -> list[dict]:
    """The stage's core without Ray: plan, write every shard, write the index."""
    units = [s.as_unit() for s in write_shard_plan(workdir, plan_path(workdir), target_bytes)]
    for u in units:
        write_shard(workdir, plan_path(workdir), u)
    write_index(workdir, plan_path(workdir), units)
    return units


def read_tar(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read()) for m in tar.getmembers()]


def keys_in(path: Path) -> list[str]:
    return list(dict.fromkeys(m.name.split(".", 1)[0] for m, _ in read_tar(path)))


@pytest.fixture
def run_dir(tmp_path) -> tuple[Path, dict]:
    work = tmp_path / "run"
    return work, build_run(work)


# ---------------------------------------------------------------- core (no Ray)
def test_groups_sorted_keys_and_size_targeted_cuts(run_dir):
    work, expected = run_dir
    units = shard_locally(work)
    groups: dict[str, list[str]] = {}
    for u in units:
        folder, name = u["shard"].rsplit("/", 1)
        groups.setdefault(folder, []).append(name)
    assert list(groups) == ["shards/stage0/image/32x32x1", "shards/stage0/video/64x32x9",
                            "shards/stage1/video/32x64x5"]  # sorted by purpose, modality, bucket
    for names in groups.values():  # numbered from 0 within each folder
        assert names == [f"shard-{i:06d}.tar" for i in range(len(names))]
    assert len(groups["shards/stage0/video/64x32x9"]) >= 3
    by_group: dict[str, list[str]] = {}
    for u in units:
        path = work / u["shard"]
        keys = keys_in(path)
        docs = [json.loads(b) for m, b in read_tar(path) if m.name.endswith(".json")]
        assert len(keys) == u["samples"] and keys == sorted(keys)
        assert {(d["purpose"], d["modality"], f"{d['bucket']}x{d['num_frames']}") for d in docs} == {
            (u["purpose"], u["modality"], u["bucket"])}
        sizes = [estimated_bytes({n: {"dtype": m["dtype"], "shape": m["shape"]} for n, m in
                                  ((m["tensor"], m) for m in d["members"].values())}, 1400) for d in docs]
        assert len(keys) == 1 or sum(sizes) <= TARGET * 1.05  # cut before the target, about
        by_group.setdefault(u["bucket"], []).extend(keys)
    for keys in by_group.values():  # shards of a group continue each other in key order
        assert keys == sorted(keys)
    # exactly the kept keys without an encode error, each once
    all_keys = [k for ks in by_group.values() for k in ks]
    assert sorted(all_keys) == sorted(expected["kept_keys"])


def test_members_json_and_tensors_follow_the_contract(run_dir):
    work, expected = run_dir
    shard_locally(work)
    seen = 0
    for path in sorted((work / "shards").rglob("*.tar")):
        members = read_tar(path)
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.mode == 0o644
                   for m, _ in members)
        files: dict[str, dict[str, bytes]] = {}
        for m, data in members:
            key, suffix = m.name.split(".", 1)
            files.setdefault(key, {})[suffix] = data
        for key, f in files.items():
            doc = json.loads(f["json"])
            assert list(f)[0] == "json"  # the JSON leads its key's members
            original = load(expected["tensors"][key])
            assert doc["key"] == key and doc["sample_id"] == expected["kept_keys"][key]
            assert doc["task"] == {"none": "t2v"}.get(doc["variant"], doc["variant"])
            assert set(doc["members"]) == set(f) - {"json"}
            # every key the same members: no source is a zero-size one, and the JSON says so
            assert set(f) == {"json", "text.safetensors", "semantic.safetensors", "target.safetensors",
                              "source.safetensors"}
            assert doc["has_source"] == (doc["variant"] != "none")
            assert doc["scores"] == [{"metric": "motion_consistency", "score": 9, "expected": None},
                                     {"metric": "visual_quality", "score": 9, "expected": 8.75}]
            assert doc["lineage"]["judge"] == {"status": "ok", "model": "judge-x", "prompt_hash": "abcd1234abcd1234",
                                               "prompt_file": "clip_v1.txt"}
            assert (work / doc["lineage"]["manifest"]["part"]).exists()
            assert doc["lineage"]["encoded"] == {"table": "encoded", "key": key}
            assert doc["latent_shape"] == [16, (doc["num_frames"] - 1) // 4 + 1, int(doc["bucket"].split("x")[1]) // 8,
                                           int(doc["bucket"].split("x")[0]) // 8]
            for suffix, spec in doc["members"].items():
                (name, tensor), = load(f[suffix]).items()
                assert name == spec["tensor"] and tensor.dtype == torch.bfloat16
                assert list(tensor.shape) == spec["shape"]
                if name == "source_latents" and not doc["has_source"]:
                    target = doc["members"]["target.safetensors"]["shape"]
                    assert spec["shape"] == [target[0], 0, *target[2:]] and name not in original
                    continue
                assert torch.equal(tensor, original[name])  # bit for bit what encode stored
            seen += 1
    assert seen == len(expected["kept_keys"])


def test_same_rows_give_the_same_bytes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    build_run(a)
    build_run(b)
    shard_locally(a)
    shard_locally(b)
    assert tars(a) == tars(b) and tars(a)
    assert read_table(a, "shards").equals(read_table(b, "shards"))
    again = tars(a)
    shard_locally(a)  # rewriting in place: same bytes
    assert tars(a) == again


def test_plain_webdataset_reads_the_shards(run_dir):
    import webdataset as wds

    work, expected = run_dir
    shard_locally(work)
    urls = [str(p) for p in sorted((work / "shards").rglob("*.tar"))]
    dataset = wds.WebDataset(urls, shardshuffle=False).decode(wds.handle_extension("safetensors", load))
    got = {}
    for sample in dataset:
        doc = sample["json"]
        assert sample["__key__"] == doc["key"]
        for suffix, spec in doc["members"].items():
            (name, tensor), = sample[suffix].items()
            assert name == spec["tensor"] and list(tensor.shape) == spec["shape"]
        got[doc["key"]] = doc["variant"]
    assert set(got) == set(expected["kept_keys"])


# ---------------------------------------------------------------- the stage through Ray
def _cfg(tmp_path: Path, target: int = TARGET):
    path = tmp_path / "shard.yaml"
    path.write_text(f"shard:\n  target_bytes: {target}\n")
    return path, load_config(path)


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_stage_index_resume_ray_reader_and_verify(ray_session, run_dir, tmp_path):
    work, expected = run_dir
    cfg_file, cfg = _cfg(tmp_path)
    (report,) = runner.run(cfg, "shard", work)
    assert report.units_run == report.units_total >= 5
    con = catalog.connect(work)
    assert con.execute("SELECT sum(samples), count(*) FROM shards").fetchone() == (
        len(expected["kept_keys"]), report.units_total)
    assert con.execute("SELECT count(*), count(DISTINCT key) FROM shard_keys").fetchone() == (
        len(expected["kept_keys"]),) * 2
    index = {r["shard"]: r for r in read_table(work, "shards").to_pylist()}
    for rel, digest in tars(work).items():
        assert index[rel]["sha256"] == digest and index[rel]["bytes"] == (work / rel).stat().st_size
    before = tars(work)
    (again,) = runner.run(cfg, "shard", work)
    assert again.units_run == 0 and tars(work) == before

    # ray.data.read_webdataset reads them too
    import ray

    rows = ray.data.read_webdataset([str(work / r) for r in index]).take_all()
    assert sorted(r["__key__"] for r in rows) == sorted(expected["kept_keys"])
    for r in rows:
        assert r["json"]["key"] == r["__key__"]
        (name, tensor), = load(r["target.safetensors"]).items()
        assert name == "target_latents" and list(tensor.shape) == r["json"]["latent_shape"]

    assert verify_workdir(work).ok
    res = subprocess.run([curate_bin(), "verify", "--workdir", str(work)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"verified {report.units_total} shards" in res.stdout and "OK" in res.stdout

    # the selection changes: a re-run rewrites only the shards whose keys changed, drops stale ones
    sel = read_table(work, "selected").to_pylist()
    dropped = sample_id("koala", 0)
    for r in sel:
        if r["sample_id"] == dropped:
            r["kept"], r["rejected_by"] = False, "manual"
    write_part(table_dir(work, "selected") / "part-00000.parquet", pa.Table.from_pylist(sel))
    (third,) = runner.run(cfg, "shard", work)
    assert 0 < third.units_run < third.units_total
    assert verify_workdir(work).ok
    assert not any(k.startswith(dropped.replace(":", "-")) for (k,) in
                   catalog.connect(work).execute("SELECT key FROM shard_keys").fetchall())


def _rewrite(path: Path, drop_suffix: str) -> None:
    """Rewrite a tar without one member kind (a writer bug the verifier must catch)."""
    samples: dict[str, dict[str, bytes]] = {}
    for m, data in read_tar(path):
        key, suffix = m.name.split(".", 1)
        samples.setdefault(key, {})[suffix] = data
    with open(path, "wb") as f:
        write_tar(f, [(k, s.pop("json"), {x: d for x, d in s.items() if x != drop_suffix})
                      for k, s in samples.items()])


def test_verify_reports_what_is_wrong(run_dir):
    work, expected = run_dir
    shard_locally(work)
    assert verify_workdir(work).ok
    index = read_table(work, "shards").to_pylist()
    image_shard = work / next(r["shard"] for r in index if "image" in r["shard"])
    video_shard = work / next(r["shard"] for r in index if "stage1" in r["shard"])
    data = bytearray(video_shard.read_bytes())
    data[700] ^= 0xFF  # one flipped bit inside the first member's bytes
    video_shard.write_bytes(bytes(data))
    _rewrite(image_shard, "text.safetensors")
    extra = sample_id("koala", 4)  # rejected before: now kept, but in no shard
    sel = read_table(work, "selected").to_pylist()
    for r in sel:
        if r["sample_id"] == extra:
            r["kept"] = True
    write_part(table_dir(work, "selected") / "part-00000.parquet", pa.Table.from_pylist(sel))
    orphan = work / "shards" / "stage0" / "video" / "64x32x9" / "shard-000099.tar"
    orphan.write_bytes((work / index[0]["shard"]).read_bytes())

    report = verify_workdir(work)
    assert not report.ok
    kinds = set(report.problems)
    assert {"sha256 mismatch", "member missing", "key not in any shard", "unindexed shard"} <= kinds
    assert any("text.safetensors" in m for m in report.problems["member missing"])
    assert any(m.startswith(extra.replace(":", "-")) for m in report.problems["key not in any shard"])
    res = subprocess.run([curate_bin(), "verify", "--workdir", str(work)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert "sha256 mismatch" in res.stdout and "member missing" in res.stdout and "shard-000099.tar" in res.stdout


def test_verify_counts_every_problem_and_lists_the_first(tmp_path):
    """An index that lost every key: each missing key is counted in DuckDB, only the first few
    reach Python and the report (a corpus of missing keys must not become a list of messages)."""
    work = tmp_path / "run"
    expected = build_run(work, per_dataset=15)
    shard_locally(work)
    keys = table_dir(work, "shard_keys") / "part-00000.parquet"
    write_part(keys, read_table(work, "shard_keys").slice(0, 0))
    report = verify_workdir(work, read_tars=False)
    n = len(expected["kept_keys"])
    assert n > 2 * MAX_LISTED
    assert report.counts["key not in any shard"] == n and len(report.problems["key not in any shard"]) == MAX_LISTED
    assert report.problems["key not in any shard"][0].startswith(min(expected["kept_keys"]))  # sorted
    text = report.render()
    assert f"key not in any shard ({n}):" in text and f"... and {n - MAX_LISTED} more" in text
    assert f": {n} problems" in text


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill9_mid_shard_then_resume_matches_uninterrupted(ray_session, tmp_path):
    cfg_file, cfg = _cfg(tmp_path, target=1)  # one key per shard: many units, the kill lands mid-stage
    reference = tmp_path / "reference"
    build_run(reference, per_dataset=15)
    runner.run(cfg, "shard", reference)
    total = len(tars(reference))

    victim = tmp_path / "victim"
    build_run(victim, per_dataset=15)
    address = ray_session.get_runtime_context().gcs_address
    proc = subprocess.Popen([curate_bin(), "run", "--config", str(cfg_file), "--stage", "shard", "--workdir",
                             str(victim), "--ray-address", address],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((victim / "shards").rglob("*.tar"))) < 3:
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    time.sleep(1.0)  # tasks of the dead driver are torn down by Ray
    done_at_kill = len(list((victim / "shards").rglob("*.tar")))
    assert 3 <= done_at_kill < total, "the kill should land in the middle of the shard stage"
    assert not (table_dir(victim, "shards")).exists()  # no index before every shard is written

    (report,) = runner.run(cfg, "shard", victim)
    assert 0 < report.units_run <= total - 3 + 1
    assert tars(victim) == tars(reference)  # byte for byte
    for table in ("shards", "shard_keys"):
        assert (table_dir(victim, table) / "part-00000.parquet").read_bytes() == \
            (table_dir(reference, table) / "part-00000.parquet").read_bytes()
    assert not list(victim.rglob("*.tmp"))
    assert verify_workdir(victim).ok
