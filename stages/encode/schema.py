"""The ``encoded`` table: one row per shard key (sample x variant), tensors as a safetensors blob.

Layout: ``<workdir>/tables/encoded/<ds>/part-<unit>.parquet`` (see the shared contract).
The ``tensors`` blob holds ``target_latents`` [16, T_lat, H/8, W/8], ``source_latents`` (absent
for variant ``none``), ``semantic_tokens`` [N_anchor, 64 + 1, D] and ``text_embedding`` [L, D_text]
(absent when ``encode.text`` is off); ``tensor_meta`` repeats each tensor's dtype and shape so
readers (the shard planner, DuckDB) never open the blob. Latents are normalised per channel with
the VAE's ``latents_mean`` / ``latents_std``.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    import torch

ENCODED = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # <dataset>-<16 hex>-<variant>, no dots
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("modality", pa.string()),  # video | image
        pa.field("variant", pa.string()),  # edit | none | cube | speed | tube
        pa.field("purpose", pa.string()),  # stage0 (images, raw clips) | stage1 (video edits)
        pa.field("instruction", pa.string()),  # final text, task token included
        pa.field("task_token", pa.string()),
        pa.field("bucket", pa.string()),  # "<W>x<H>" pixels
        pa.field("num_frames", pa.int32()),  # 4n+1; 1 for images
        pa.field("fps", pa.float64()),  # null for images
        pa.field("latent_shape", pa.list_(pa.int32())),  # [16, T_lat, H/8, W/8]
        pa.field("target_indices", pa.list_(pa.int32())),  # native frame indices
        pa.field("source_indices", pa.list_(pa.int32())),
        pa.field("anchor_indices", pa.list_(pa.int32())),  # into the output target frames
        pa.field("pretext", pa.string()),  # JSON operator record, {} when none
        pa.field("error", pa.string()),  # "<kind>: <message>"; null when the tensors are there
        pa.field("tensors", pa.binary()),  # safetensors blob
        pa.field("tensor_meta", pa.string()),  # JSON {name: {dtype, shape}}
        pa.field("models", pa.string()),  # JSON {vae|siglip|text: {path, random_init}}
    ],
    metadata={"table": "encoded", "schema_version": "1"},
)

# torch is imported by the functions that pack tensors only: the catalog and the registry read
# ENCODED from here, and a catalog connect must not load torch (~0.7 GB, seconds).
STORE_DTYPES = ("bfloat16", "float16")


def key_of(sample_id: str, variant: str) -> str:
    """Shard key: ``koala:0123456789abcdef`` + ``cube`` -> ``koala-0123456789abcdef-cube``."""
    key = f"{sample_id.replace(':', '-')}-{variant}"
    if "." in key or "/" in key:  # webdataset splits member names at the first dot
        raise ValueError(f"sample id {sample_id!r} makes a key with '.' or '/'")
    return key


def purpose_of(modality: str, variant: str) -> str:
    """Stage 1 trains on paired video edits; everything else (image edits, raw clips) is stage 0."""
    return "stage1" if modality == "video" and variant == "edit" else "stage0"


def pack_tensors(tensors: dict[str, torch.Tensor], store_dtype: str) -> tuple[bytes, str]:
    """(safetensors blob, tensor_meta JSON) with every tensor cast to ``store_dtype``."""
    import torch
    from safetensors.torch import save

    if store_dtype not in STORE_DTYPES:
        raise KeyError(store_dtype)
    dtype = getattr(torch, store_dtype)
    ready = {k: v.detach().to("cpu", dtype).contiguous() for k, v in sorted(tensors.items())}
    meta = {k: {"dtype": store_dtype, "shape": [int(s) for s in v.shape]} for k, v in ready.items()}
    return save(ready), json.dumps(meta, sort_keys=True)


def unpack_tensors(blob: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(blob)
