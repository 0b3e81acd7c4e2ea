"""The shard planner's column-wise documents, cut and digests against the per-row definition
(``record_of`` + ``json_bytes`` + ``estimated_bytes``, one dict per key): the same bytes on varied
rows (nulls, images and videos, missing scores and judge columns, non-ASCII and escaped text, odd
floats, no samples table), the same shards, digests and plan rows through real DuckDB and Parquet."""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from _shard_fixtures import ENCODED_SCHEMA, MODELS, build_run
from manifests import catalog
from manifests.io import table_dir, write_part
from stages.shard import plan
from stages.shard.layout import estimated_bytes, json_bytes, shard_bucket, shard_relpath
from stages.shard.plan import PLAN_SCHEMA, _Docs, plan_sql, record_of, write_shard_plan

ROOT = "/w/run"
TEXTS = [None, "", "edit the clip", "ü 日本 🎬 é", 'quote " back \\ tab\t nl\n', "\x01\x1f ctrl", "\u2028 \x7f",
         "<t2v> a cat"]
FLOATS = [None, 16.0, 29.97, 0.0, -0.0, 1e16, 1e-7, float("nan"), float("inf"), 1 / 3]
LISTS = [None, [], [0], [16, 21, 60, 104], [-1, 2147483647], list(range(81))]
PRETEXTS = [None, "", "{}", json.dumps({"op": "cube", "boxes": [[0, 2, 0, 8]], "mask_ratio": 0.3}),
            json.dumps({"op": "tube", "é": "ü", "b": [1.5, -0.0]}), json.dumps({"op": "speed", "factor": 2.0})]
MODELS_TEXTS = [None, "", MODELS, json.dumps({"z": {"path": "/m/ü", "random_init": False}, "a": 1})]
TARGET = {"dtype": "bfloat16", "shape": [16, 3, 4, 8]}
METAS = [None, "", json.dumps({"target_latents": TARGET}),
         json.dumps({"target_latents": TARGET, "source_latents": TARGET,
                     "semantic_tokens": {"dtype": "float16", "shape": [1, 65, 32]}}),
         json.dumps({"target_latents": {"dtype": "float32", "shape": [16, 1, 4, 4]}, "text_embedding":
                     {"dtype": "bfloat16", "shape": [7, 32]}, "extra.thing": {"dtype": "int8", "shape": [3]}})]
KEYS = ["koala-0123456789abcdef-none", "ditto-00ff-edit", "kéy-ü-cube", 'odd"key\\x']


def varied_rows(n: int, seed: int, samples: bool = True) -> list[dict]:
    """``plan_sql``-shaped rows drawn from pools of awkward values."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        image = rng.random() < 0.3
        row = {
            "key": f"{rng.choice(KEYS)}-{i}", "sample_id": rng.choice(["koala:01ab", "ditto:ü", 'x:"q"']) + str(i),
            "dataset": rng.choice(["koala", "ditto", "nhr_edit"]), "modality": "image" if image else "video",
            "variant": rng.choice(["none", "edit", "cube", "speed", "tube", None]),
            "purpose": rng.choice(["stage0", "stage1"]), "instruction": rng.choice(TEXTS),
            "task_token": rng.choice([None, "", "<edit>", "<t2v>"]), "bucket": rng.choice(["832x480", "64x32"]),
            "num_frames": 1 if image else rng.choice([5, 9, 81]), "fps": None if image else rng.choice(FLOATS),
            "latent_shape": rng.choice(LISTS), "anchor_indices": rng.choice(LISTS),
            "target_indices": rng.choice(LISTS), "source_indices": rng.choice(LISTS),
            "pretext": rng.choice(PRETEXTS), "tensor_meta": rng.choice(METAS), "models": rng.choice(MODELS_TEXTS),
            "encoded_part": rng.choice([f"{ROOT}/tables/encoded/koala/part-00000.parquet",
                                        f"{ROOT}/tables/encoded/ditto/part-ü.parquet", "relative/part.parquet"]),
            "encoded_row": rng.randrange(10**9),
        }
        if samples:
            row["samples_part"] = rng.choice([None, f"{ROOT}/tables/samples/k/part-00001.parquet", "rel/p.parquet"])
            row["samples_row"] = rng.choice([None, 0, 12345678901])
        scored = rng.random() < 0.8  # else the LEFT JOIN found no scores row: every column null
        row["sc__visual_quality"] = rng.choice([None, 1, 9, 10]) if scored else None
        row["sc__visual_quality_expected"] = rng.choice(FLOATS) if scored else None
        row["sc__motion_consistency"] = rng.choice([None, 3]) if scored else None  # no _expected column
        row["sc__status"] = rng.choice(["ok", "malformed", None]) if scored else None
        row["sc__model"] = rng.choice(["judge-ü", None]) if scored else None
        row["sc__prompt_file"] = rng.choice(["clip_v1.txt", None]) if scored else None
        rows.append(row)
    return rows


BATCH_TYPES = {"num_frames": pa.int32(), "fps": pa.float64(), "encoded_row": pa.int64(), "samples_row": pa.int64(),
               "latent_shape": pa.list_(pa.int32()), "anchor_indices": pa.list_(pa.int32()),
               "target_indices": pa.list_(pa.int32()), "source_indices": pa.list_(pa.int32()),
               "sc__visual_quality": pa.int16(), "sc__visual_quality_expected": pa.float64(),
               "sc__motion_consistency": pa.int16()}


def as_batch(rows: list[dict], types: dict | None = None) -> pa.RecordBatch:
    types = {**BATCH_TYPES, **(types or {})}
    names = list(rows[0])
    return pa.record_batch([pa.array([r[n] for r in rows], types.get(n, pa.string())) for n in names], names=names)


def reference_docs(rows: list[dict]) -> list[tuple[bytes, int]]:
    """The per-row definition: document bytes and estimated tar bytes of each row."""
    out = []
    for row in rows:
        doc = json_bytes(record_of(row, ROOT))
        out.append((doc, estimated_bytes(json.loads(row["tensor_meta"]) if row["tensor_meta"] else {}, len(doc))))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_column_documents_are_the_per_row_bytes(seed):
    rows = varied_rows(400, seed)
    docs, sizes = _Docs(list(rows[0]), ROOT).build(as_batch(rows))
    got = [(d.encode("utf-8"), s) for d, s in zip(docs.to_pylist(), sizes.tolist())]
    want = reference_docs(rows)
    for r, g, w in zip(rows, got, want):  # the first differing row, readable
        assert g == w, r
    assert len(got) == len(want) == 400


def test_column_documents_without_samples_scores_or_judge_columns():
    """No samples table (samples_part/row are SQL NULLs: Arrow's null type), no scores table (no
    ``sc__`` column at all), and a scores table without the judge's columns."""
    bare = [{k: v for k, v in r.items() if not k.startswith(("sc__", "samples_"))} | {
        "samples_part": None, "samples_row": None} for r in varied_rows(120, 7, samples=False)]
    batch = as_batch(bare, {"samples_part": pa.null(), "samples_row": pa.null()})
    docs, sizes = _Docs(batch.schema.names, ROOT).build(batch)
    assert [(d.encode(), s) for d, s in zip(docs.to_pylist(), sizes.tolist())] == reference_docs(bare)
    no_judge = [{k: v for k, v in r.items() if k not in ("sc__status", "sc__model", "sc__prompt_file")}
                for r in varied_rows(120, 8)]
    docs, _ = _Docs(list(no_judge[0]), ROOT).build(as_batch(no_judge))
    assert [d.encode() for d in docs.to_pylist()] == [d for d, _ in reference_docs(no_judge)]
    assert json.loads(docs[0].as_py())["lineage"]["judge"] == dict.fromkeys(plan.JUDGE_COLUMNS)


def test_documents_of_ints_given_as_floats_and_float32():
    """Columns typed otherwise than the schema (float scores and frame counts, float32 fps)
    go through the per-value conversions the definition applies."""
    rows = varied_rows(80, 3)
    for r in rows:
        r["sc__visual_quality"] = None if r["sc__visual_quality"] is None else float(r["sc__visual_quality"]) + 0.5
    batch = as_batch(rows, {"sc__visual_quality": pa.float64(), "fps": pa.float32(), "num_frames": pa.float64()})
    docs, _ = _Docs(batch.schema.names, ROOT).build(batch)
    as_read = batch.to_pylist()  # float32 values as Python reads them back
    assert [d.encode() for d in docs.to_pylist()] == [d for d, _ in reference_docs(as_read)]


# ------------------------------------------------------------- the plan through DuckDB and Parquet
def reference_plan(workdir: Path, target_bytes: int) -> tuple[list[dict], list[dict]]:
    """(shards, plan rows) by the per-row definition: every row a dict, cut and hashed key by key."""
    workdir = workdir.resolve()
    con = catalog.connect(workdir)
    rows = [r for b in con.sql(plan_sql(workdir, con)).to_arrow_reader(1000) for r in b.to_pylist()]
    root = str(workdir)
    specs, out, numbers = [], [], {}
    for row in rows:
        doc = json_bytes(record_of(row, root))
        size = estimated_bytes(json.loads(row["tensor_meta"]) if row["tensor_meta"] else {}, len(doc))
        group = (row["purpose"], row["modality"], shard_bucket(row["bucket"], row["num_frames"]))
        spec = specs[-1] if specs else None
        if spec is None or spec["group"] != group or (spec["samples"] and spec["est"] + size > target_bytes):
            numbers[group] = numbers.get(group, -1) + 1
            spec = {"shard": shard_relpath(*group, numbers[group]), "group": group, "samples": 0, "est": 0,
                    "sha": hashlib.sha256()}
            specs.append(spec)
        spec["samples"] += 1
        spec["est"] += size
        part = plan._rel(row["encoded_part"], root)
        spec["sha"].update(json.dumps([row["key"], part, row["encoded_row"]]).encode() + doc)
        out.append({"shard": spec["shard"], "purpose": group[0], "modality": group[1], "bucket": group[2],
                    "key": row["key"], "sample_id": row["sample_id"], "encoded_part": part,
                    "encoded_row": row["encoded_row"], "json": doc.decode("utf-8")})
    return [{"shard": s["shard"], "samples": s["samples"], "est_bytes": s["est"], "digest": s["sha"].hexdigest()}
            for s in specs], out


def varied_run(root: Path, samples: bool = True) -> None:
    """encoded / selected / scores (and samples) tables of varied rows, in real Parquet parts: keys
    encoded twice (the first part and row win), encode errors, unkept samples, unscored samples."""
    enc = []
    for r in varied_rows(300, 11):
        r = {k: v for k, v in r.items() if k in ENCODED_SCHEMA.names}
        r.update(error=None, tensors=None, sample_id=r["sample_id"][:8])  # keys share samples
        enc.append(r)
    enc[5]["error"] = "encoder_error: boom"
    redo = [dict(r, instruction="re-encoded later") for r in enc[:40]]  # same keys, a later part
    write_part(table_dir(root, "encoded") / "koala" / "part-00000.parquet",
               pa.Table.from_pylist(enc[:150], ENCODED_SCHEMA), row_group_size=16)
    write_part(table_dir(root, "encoded") / "koala" / "part-00001.parquet",
               pa.Table.from_pylist(enc[150:] + redo, ENCODED_SCHEMA), row_group_size=16)
    sids = sorted({r["sample_id"] for r in enc})
    rng = random.Random(5)
    if samples:
        write_part(table_dir(root, "samples") / "mixed" / "part-00000.parquet", pa.Table.from_pylist(
            [{"sample_id": s, "dataset": "koala", "caption": "c", "error": None} for s in sids + sids[:3]]))
    write_part(table_dir(root, "selected") / "part-00000.parquet", pa.Table.from_pylist(
        [{"sample_id": s, "dataset": "koala", "kept": i % 7 != 3, "rejected_by": None} for i, s in enumerate(sids)]))
    write_part(table_dir(root, "scores") / "mixed" / "part-00000.parquet", pa.Table.from_pylist(
        [{"sample_id": s, "dataset": "koala", "kind": "clip", "status": rng.choice(["ok", None]),
          "visual_quality": rng.choice([None, 7]), "visual_quality_expected": rng.choice([None, 6.5, 1 / 3]),
          "motion_consistency": rng.choice([None, 9]), "model": "judge-ü", "prompt_hash": None,
          "prompt_file": "clip.txt", "error": None, "schema_version": 1} for i, s in enumerate(sids) if i % 5]))


def plan_of(workdir: Path, target: int, batch_rows: int) -> tuple[list[dict], list[dict], pq.ParquetFile]:
    path = workdir / "plan.parquet"
    specs = write_shard_plan(workdir, path, target, batch_rows)
    got = [{"shard": s.shard, "samples": s.samples, "est_bytes": s.est_bytes, "digest": s.digest} for s in specs]
    return got, pq.read_table(path).to_pylist(), pq.ParquetFile(path)


@pytest.mark.parametrize("samples", [True, False], ids=["samples", "no-samples-table"])
def test_plan_matches_the_per_row_definition(tmp_path, monkeypatch, samples):
    work = tmp_path / "run"
    varied_run(work, samples)
    monkeypatch.setattr(plan, "PLAN_ROW_GROUP", 7)  # row groups that straddle the record batches
    monkeypatch.setattr(plan, "DOC_ROWS", 3)  # documents built in slices of a record batch
    want_specs, want_rows = reference_plan(work, 60_000)
    assert len(want_specs) > 10 and len({s["shard"].rsplit("/", 1)[0] for s in want_specs}) > 2
    assert sum(s["samples"] for s in want_specs) == len(want_rows) > 100
    for batch_rows in (5, 64, 65536):  # shards continued across record batches, or one batch
        specs, rows, pf = plan_of(work, 60_000, batch_rows)
        assert specs == want_specs
        assert rows == want_rows
        groups = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
        assert all(g == 7 for g in groups[:-1]) and 0 < groups[-1] <= 7 and sum(groups) == len(rows)
        assert pf.schema_arrow == PLAN_SCHEMA


def test_plan_of_the_fixture_run_and_an_empty_selection(tmp_path):
    work = tmp_path / "run"
    build_run(work)
    want_specs, want_rows = reference_plan(work, 40_000)
    specs, rows, _ = plan_of(work, 40_000, 4)
    assert (specs, rows) == (want_specs, want_rows) and len(specs) > 3
    sel = table_dir(work, "selected") / "part-00000.parquet"
    t = pq.read_table(sel)
    write_part(sel, t.set_column(t.schema.get_field_index("kept"), "kept", pa.array([False] * t.num_rows)))
    specs, rows, pf = plan_of(work, 40_000, 4)
    assert specs == [] and rows == [] and pf.metadata.num_row_groups == 1
