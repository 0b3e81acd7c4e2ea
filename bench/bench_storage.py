"""Bytes at rest of the ``encoded`` table and the shards, per key and per sample kind, before and
after `curate prune --sharded`, on a synthetic encoded table at the recipe's tensor sizes.

Keys are written as the encode stage writes them (``pack_tensors``: one safetensors blob a key,
bf16, encoded parts of a few samples with row groups of ``PART_ROW_GROUP`` rows), sharded by the
shard stage's own plan and writer, then pruned. The tensors are seeded Gaussian noise in bf16:
zstd gains almost nothing on them, as on real latents (noise is the worst case: real latents may
compress a little more, in both copies alike). Prints per kind: bytes per key in the table and in
the shards, before and after; the totals; the prune's CPU seconds; then reads every blob back
(the shard stage's ``restore``, as --overwrite would) and checks each equals the original.

    python bench/bench_storage.py                 # 6 keys a kind at the recipe's sizes (~130 MB a copy)
    python bench/bench_storage.py --keys 20
    python bench/bench_storage.py --smoke         # tiny tensors, for tests
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pipeline.curate.registry  # noqa: E402,F401  (registers the tables the catalog views)
from manifests.io import list_parts, read_table, table_dir, write_part  # noqa: E402

# (kind, dataset, modality, purpose, variant, has source, latent frames, bucket, frames)
KINDS = [
    ("video edit", "ditto", "video", "stage1", "edit", True, 21, "832x480", 81),
    ("raw clip with source", "koala", "video", "stage0", "cube", True, 21, "832x480", 81),
    ("raw clip, no source", "koala", "video", "stage0", "none", False, 21, "832x480", 81),
    ("image edit", "x2edit", "image", "stage0", "edit", True, 1, "832x480", 1),
]
RECIPE = {"h": 60, "w": 104, "siglip": (65, 1152), "text": (50, 4096)}  # pipeline/curate/report/cost.py
SMOKE = {"h": 4, "w": 6, "siglip": (5, 16), "text": (7, 32)}


def build(workdir: Path, keys: int, dims: dict, seed: int = 0) -> dict[str, str]:
    """The encoded, samples and selected tables; returns {key: kind}."""
    import torch

    from stages.encode.schema import ENCODED, pack_tensors
    from stages.encode.stage import PART_ROW_GROUP

    rng = np.random.default_rng(seed)
    noise = lambda *shape: torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))  # noqa: E731
    kind_of, samples, selected = {}, [], []
    for k, (kind, ds, modality, purpose, variant, source, t, bucket, frames) in enumerate(KINDS):
        rows = []
        for i in range(keys):
            sid = f"{ds}:{hashlib.sha1(f'{kind}{i}'.encode()).hexdigest()[:16]}"
            key = f"{sid.replace(':', '-')}-{variant}"
            tensors = {"target_latents": noise(16, t, dims["h"], dims["w"]),
                       "semantic_tokens": noise(1, *dims["siglip"]), "text_embedding": noise(*dims["text"])}
            if source:
                tensors["source_latents"] = noise(16, t, dims["h"], dims["w"])
            blob, meta = pack_tensors(tensors, "bfloat16")
            rows.append({"key": key, "sample_id": sid, "dataset": ds, "modality": modality, "variant": variant,
                         "purpose": purpose, "instruction": f"edit {i}", "task_token": None, "bucket": bucket,
                         "num_frames": frames, "fps": None if modality == "image" else 16.0,
                         "latent_shape": [16, t, dims["h"], dims["w"]], "target_indices": list(range(frames)),
                         "source_indices": list(range(frames)) if source else None, "anchor_indices": [0],
                         "pretext": "{}", "error": None, "tensors": blob, "tensor_meta": meta, "models": "{}"})
            kind_of[key] = kind
            samples.append({"sample_id": sid, "dataset": ds, "modality": modality, "error": None})
            selected.append({"sample_id": sid, "dataset": ds, "kept": True, "rejected_by": None})
        for j in range(0, keys, 2):  # the encode stage's parts: a few samples each
            write_part(table_dir(workdir, "encoded") / ds / f"part-k{k}-{j:05d}.parquet",
                       pa.Table.from_pylist(rows[j:j + 2], ENCODED), row_group_size=PART_ROW_GROUP)
    write_part(table_dir(workdir, "samples") / "mixed" / "part-00000.parquet", pa.Table.from_pylist(samples))
    write_part(table_dir(workdir, "selected") / "part-00000.parquet", pa.Table.from_pylist(selected))
    return kind_of


def shard(workdir: Path, target_bytes: int) -> None:
    from stages.shard.plan import write_shard_plan
    from stages.shard.stage import plan_path, write_index
    from stages.shard.write import write_shard

    units = [s.as_unit() for s in write_shard_plan(workdir, plan_path(workdir), target_bytes)]
    for u in units:
        write_shard(workdir, plan_path(workdir), u)
    write_index(workdir, plan_path(workdir), units)


def bytes_by_kind(workdir: Path, kind_of: dict[str, str]) -> tuple[dict[str, float], dict[str, float]]:
    """(table bytes per key, shard bytes per key) by kind: each part's file size over its keys (a
    part holds keys of one kind here); a key's tar bytes are its members' headers and padded data."""
    import tarfile

    table, shards, keys_of = {}, {}, {}
    for p in list_parts(workdir, "encoded"):
        ks = read_table_part(p)
        kind = kind_of[ks[0]]
        table[kind] = table.get(kind, 0) + p.stat().st_size
        keys_of[kind] = keys_of.get(kind, 0) + len(ks)
    for tar in sorted((workdir / "shards").rglob("*.tar")):
        with tarfile.open(tar) as t:
            for m in t:
                kind = kind_of[m.name.split(".", 1)[0]]
                shards[kind] = shards.get(kind, 0) + (m.offset_data - m.offset) + -(-m.size // 512) * 512
    return ({k: v / keys_of[k] for k, v in table.items()},
            {k: v / keys_of[k] for k, v in shards.items()})


def read_table_part(p: Path) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_table(p, columns=["key"])["key"].to_pylist()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=6, help="keys per kind")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "storage")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    dims = SMOKE if args.smoke else RECIPE
    keys = 3 if args.smoke else args.keys
    work = args.out / "run"
    shutil.rmtree(work, ignore_errors=True)
    from stages.shard.prune_sharded import prune_sharded, restore, shard_bytes, table_bytes

    kind_of = build(work, keys, dims)
    shard(work, target_bytes=64 << 20)
    before_t, before_s = bytes_by_kind(work, kind_of)
    blobs = {r["key"]: hashlib.sha256(r["tensors"]).hexdigest()
             for r in read_table(work, "encoded", ["key", "tensors"]).to_pylist()}
    c0 = time.process_time()
    w0 = time.time()
    r = prune_sharded(work)
    prune_cpu, prune_wall = time.process_time() - c0, time.time() - w0
    after_t, _ = bytes_by_kind(work, kind_of)

    print(f"keys: {len(kind_of)} ({keys} a kind), tensors {'tiny (smoke)' if args.smoke else 'at the recipe sizes'}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'kind':<22} {'table/key before':>17} {'shards/key':>12} {'table/key after':>16}")
    for kind in [k[0] for k in KINDS]:
        print(f"{kind:<22} {before_t[kind]:>17,.0f} {before_s[kind]:>12,.0f} {after_t[kind]:>16,.0f}")
    total_before = r.bytes_before + r.shard_bytes
    total_after = r.bytes_after + shard_bytes(work)
    print(f"at rest: encoded {r.bytes_before:,} -> {r.bytes_after:,} B, shards {r.shard_bytes:,} B; "
          f"table + shards {total_before:,} -> {total_after:,} B ({total_after / total_before:.3f}x)")
    print(f"prune: {r.keys} keys, {r.tensor_bytes:,} B of blobs dropped, {r.parts} parts rewritten, "
          f"{prune_cpu:.2f} CPU s ({prune_wall:.2f} s wall); rows {r.rows_before} -> {r.rows_after}, "
          f"digest {r.digest_before} -> {r.digest_after}")
    c0 = time.process_time()
    n = restore(work, set())
    back = {r_["key"]: hashlib.sha256(r_["tensors"]).hexdigest()
            for r_ in read_table(work, "encoded", ["key", "tensors"]).to_pylist()}
    print(f"read back from the shards: {n} keys in {time.process_time() - c0:.2f} CPU s; every blob as "
          f"before: {back == blobs}; encoded {table_bytes(work, 'encoded'):,} B again")
    if back != blobs or r.rows_after != r.rows_before or r.digest_after != r.digest_before:
        sys.exit("blobs or rows changed")
    print(json.dumps({"encoded_before": r.bytes_before, "encoded_after": r.bytes_after, "shards": r.shard_bytes}))


if __name__ == "__main__":
    main()
