"""A run directory with hand-made ``encoded`` rows in the contract's format (real safetensors blobs
of seeded random tensors), plus the samples / scores / selected tables the shard stage joins."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import save

from manifests.io import table_dir, write_part

ENCODED_SCHEMA = pa.schema([
    ("key", pa.string()), ("sample_id", pa.string()), ("dataset", pa.string()), ("modality", pa.string()),
    ("variant", pa.string()), ("purpose", pa.string()), ("instruction", pa.string()), ("task_token", pa.string()),
    ("bucket", pa.string()), ("num_frames", pa.int32()), ("fps", pa.float64()),
    ("latent_shape", pa.list_(pa.int32())), ("target_indices", pa.list_(pa.int32())),
    ("source_indices", pa.list_(pa.int32())), ("anchor_indices", pa.list_(pa.int32())),
    ("pretext", pa.string()), ("error", pa.string()), ("tensors", pa.binary()), ("tensor_meta", pa.string()),
    ("models", pa.string()),
])

MODELS = json.dumps({"vae": {"path": "/m/vae", "random_init": True}, "siglip": {"path": "/m/siglip", "random_init": True},
                     "text": {"path": "/m/text", "random_init": True}})


def sample_id(dataset: str, i: int) -> str:
    return f"{dataset}:{hashlib.sha1(f'{dataset}{i}'.encode()).hexdigest()[:16]}"


def key_of(sid: str, variant: str) -> str:
    return f"{sid.replace(':', '-')}-{variant}"


def _blob(rng: np.random.Generator, latent: list[int], source: bool, text_len: int | None) -> tuple[bytes, str]:
    t = {"target_latents": torch.from_numpy(rng.standard_normal(latent, dtype=np.float32)).to(torch.bfloat16),
         "semantic_tokens": torch.from_numpy(rng.standard_normal((1, 65, 32), dtype=np.float32)).to(torch.bfloat16)}
    if source:
        t["source_latents"] = torch.from_numpy(rng.standard_normal(latent, dtype=np.float32)).to(torch.bfloat16)
    if text_len:
        t["text_embedding"] = torch.from_numpy(rng.standard_normal((text_len, 32), dtype=np.float32)).to(torch.bfloat16)
    meta = {k: {"dtype": "bfloat16", "shape": list(v.shape)} for k, v in sorted(t.items())}
    return save(t), json.dumps(meta, sort_keys=True)


# (dataset, modality, purpose, variants, (W, H), frames)
KINDS = [
    ("koala", "video", "stage0", ["none", "cube", "speed", "tube"], (64, 32), 9),
    ("ditto", "video", "stage1", ["edit"], (32, 64), 5),
    ("nhr_edit", "image", "stage0", ["edit"], (32, 32), 1),
]


def build_run(root: Path, per_dataset: int = 6, seed: int = 0, text: bool = True) -> dict:
    """Write the tables; returns what the shards must hold: {"kept_keys": {key: sample_id}, ...}."""
    rng = np.random.default_rng(seed)
    samples, scores, selected, kept_keys, tensors_of = [], [], [], {}, {}
    for dataset, modality, purpose, variants, (w, h), frames in KINDS:
        enc_rows = []
        for i in range(per_dataset):
            sid = sample_id(dataset, i)
            kept = i % 5 != 4  # every fifth sample rejected by the filter
            samples.append({"sample_id": sid, "dataset": dataset, "modality": modality, "caption": f"clip {i}",
                            "error": None})
            scores.append({"sample_id": sid, "dataset": dataset, "kind": "clip", "status": "ok",
                           "visual_quality": 9, "visual_quality_expected": 8.75, "motion_consistency": 9,
                           "motion_consistency_expected": None, "model": "judge-x", "prompt_hash": "abcd1234abcd1234",
                           "prompt_file": "clip_v1.txt", "error": None, "schema_version": 1})
            selected.append({"sample_id": sid, "dataset": dataset, "kept": kept,
                             "rejected_by": None if kept else "visual_quality"})
            use = variants if dataset != "koala" else [variants[j] for j in sorted({i % 4, (i + 2) % 4})]
            for v in use:
                key = key_of(sid, v)
                failed = i == 3 and v == use[0]  # an encoder failure: an error row without tensors
                latent = [16, (frames - 1) // 4 + 1, h // 8, w // 8]
                blob, meta = (None, None) if failed else _blob(rng, latent, v not in ("none",), 7 + i if text else None)
                pretext = {"cube": {"op": "cube", "boxes": [[0, 2, 0, 8, 0, 8]], "mask_ratio": 0.3},
                           "tube": {"op": "tube", "permutation": [1, 0, 2, 3, 4, 5, 6, 7]},
                           "speed": {"op": "speed", "factor": 2.0}}.get(v, {})
                enc_rows.append({
                    "key": key, "sample_id": sid, "dataset": dataset, "modality": modality, "variant": v,
                    "purpose": purpose, "instruction": f"edit {i}", "task_token": None, "bucket": f"{w}x{h}",
                    "num_frames": frames, "fps": None if modality == "image" else 8.0, "latent_shape": latent,
                    "target_indices": list(range(frames)), "source_indices": None if v == "none" else list(range(frames)),
                    "anchor_indices": [frames // 2], "pretext": json.dumps(pretext),
                    "error": "encoder_error: boom" if failed else None, "tensors": blob, "tensor_meta": meta,
                    "models": MODELS})
                if kept and not failed:
                    kept_keys[key] = sid
                    tensors_of[key] = blob
        half = len(enc_rows) // 2  # two parts per dataset, small row groups: blobs come from several
        for n, chunk in enumerate([enc_rows[:half], enc_rows[half:]]):
            write_part(table_dir(root, "encoded") / dataset / f"part-u{n:05d}.parquet",
                       pa.Table.from_pylist(chunk, ENCODED_SCHEMA), row_group_size=3)
    write_part(table_dir(root, "samples") / "mixed" / "part-00000.parquet", pa.Table.from_pylist(samples))
    write_part(table_dir(root, "scores") / "mixed" / "part-00000.parquet", pa.Table.from_pylist(scores))
    write_part(table_dir(root, "selected") / "part-00000.parquet", pa.Table.from_pylist(selected))
    return {"kept_keys": kept_keys, "tensors": tensors_of}


def tars(workdir: Path) -> dict[str, str]:
    """Every shard tar of a run and the sha256 of its bytes."""
    return {str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((workdir / "shards").rglob("*.tar"))}
