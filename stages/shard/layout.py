"""What a shard holds and how its bytes are laid out (the trainer's side of the contract).

A shard is a plain tar in WebDataset layout: for each key ``K`` (sorted), ``K.json`` then one
single-tensor safetensors file per tensor (``K.target.safetensors``, ``K.source.safetensors``,
``K.semantic.safetensors``, ``K.text.safetensors``). Tar headers are fixed (mtime 0, uid/gid 0, no
user names, mode 0644) so the same rows always give the same bytes.

Every key of a shard has the same members and every ``K.json`` field has one JSON type in every
shard, so readers that infer one schema from the first samples (Hugging Face ``datasets``' webdataset
builder, ``ray.data.read_webdataset``) read all shards of a purpose at once without options:

- a key without a source (``none``, text-to-video) still has ``K.source.safetensors``: a zero-size
  tensor (the target's shape with 0 latent frames), and its JSON says ``"has_source": false``;
- no nulls where a value can be typed: ``fps`` is ``0.0`` for a still image, ``instruction`` and
  ``task_token`` are ``""`` when absent, ``source_indices`` is ``[]`` without a source;
- what differs in shape between kinds is typed the same everywhere: ``pretext`` (its fields depend
  on the operator) is the record as a JSON text, ``scores`` a list of ``{metric, score, expected}``.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import tarfile
from typing import BinaryIO, Iterable

# Tensor name in the encoded blob -> member suffix in the shard.
MEMBER_OF_TENSOR = {
    "target_latents": "target.safetensors",
    "source_latents": "source.safetensors",
    "semantic_tokens": "semantic.safetensors",
    "text_embedding": "text.safetensors",
}
SOURCE, TARGET = "source_latents", "target_latents"
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "float64": 8, "int32": 4, "int64": 8, "uint8": 1}
TAR_BLOCK = 512


def member_name(tensor: str) -> str:
    """Member suffix for a tensor; tensors outside the contract keep their own name (no dots)."""
    return MEMBER_OF_TENSOR.get(tensor, f"{tensor.replace('.', '_')}.safetensors")


def task_of(variant: str) -> str:
    return {"edit": "edit", "none": "t2v"}.get(variant, variant)


def shard_bucket(bucket: str, num_frames: int) -> str:
    """``<W>x<H>x<F>``: the pixel bucket plus the frame count."""
    return f"{bucket}x{int(num_frames)}"


def shard_relpath(purpose: str, modality: str, bucket: str, number: int) -> str:
    return f"shards/{purpose}/{modality}/{bucket}/shard-{number:06d}.tar"


def with_empty_source(tensor_meta: dict) -> dict:
    """``tensor_meta`` with a zero-size source when the key has none: the target's dtype and shape
    with 0 latent frames (axis 1 of ``[C, T, H, W]``), so every key has the same members."""
    if SOURCE in tensor_meta or TARGET not in tensor_meta:
        return tensor_meta
    target = tensor_meta[TARGET]
    shape = [int(s) for s in target["shape"]]
    shape[1] = 0
    return {**tensor_meta, SOURCE: {"dtype": target["dtype"], "shape": shape}}


def members_of(tensor_meta: dict) -> dict:
    """The JSON ``members`` entry: member suffix -> tensor name, dtype, shape."""
    return {member_name(name): {"tensor": name, "dtype": meta["dtype"], "shape": [int(s) for s in meta["shape"]]}
            for name, meta in sorted(tensor_meta.items())}


def estimated_bytes(tensor_meta: dict, json_bytes: int) -> int:
    """A key's size in the tar from metadata alone (no tensor bytes read): tensors plus headers."""
    total = _padded(json_bytes) + TAR_BLOCK
    for meta in with_empty_source(tensor_meta).values():
        n = math.prod(int(s) for s in meta["shape"]) * DTYPE_BYTES.get(meta["dtype"], 4)
        total += _padded(n + 256) + TAR_BLOCK  # 256: safetensors header, about
    return total


def _padded(n: int) -> int:
    return -(-n // TAR_BLOCK) * TAR_BLOCK


def _json_or(value, default):
    if value is None or value == "":
        return default
    return json.loads(value) if isinstance(value, str) else value


def score_list(scores: dict) -> list[dict]:
    """``{m: 9, m_expected: 8.75}`` -> ``[{"metric": m, "score": 9, "expected": 8.75}]`` (sorted):
    one type for every kind of sample, whichever metrics its judge prompt has."""
    return [{"metric": m, "score": int(v), "expected": None if scores.get(f"{m}_expected") is None
             else float(scores[f"{m}_expected"])}
            for m, v in sorted(scores.items()) if not m.endswith("_expected") and v is not None]


def sample_record(row: dict, scores: dict, lineage: dict) -> dict:
    """The ``K.json`` document of one encoded row (everything needed to interpret the tensors);
    one JSON type per field in every shard (see the module docstring)."""
    tensor_meta = _json_or(row.get("tensor_meta"), {})
    ints = lambda v: [] if v is None else [int(x) for x in v]  # noqa: E731
    pretext = _json_or(row.get("pretext"), {})
    return {
        "key": row["key"], "sample_id": row["sample_id"], "dataset": row["dataset"],
        "purpose": row["purpose"], "modality": row["modality"], "variant": row["variant"],
        "task": task_of(row["variant"]), "instruction": row.get("instruction") or "",
        "task_token": row.get("task_token") or "", "bucket": row["bucket"],
        "num_frames": int(row["num_frames"]), "fps": 0.0 if row.get("fps") is None else float(row["fps"]),
        "latent_shape": ints(row.get("latent_shape")), "anchor_indices": ints(row.get("anchor_indices")),
        "target_indices": ints(row.get("target_indices")), "source_indices": ints(row.get("source_indices")),
        "has_source": SOURCE in tensor_meta,
        "pretext": json.dumps(pretext, sort_keys=True, separators=(",", ":")), "scores": score_list(scores),
        "lineage": lineage, "models": _json_or(row.get("models"), {}),
        "members": members_of(with_empty_source(tensor_meta)),
    }


def json_bytes(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def split_blob(blob: bytes, members: dict) -> dict[str, bytes]:
    """The encoded row's safetensors blob as one single-tensor safetensors file per member.

    Checks every tensor against the JSON ``members`` (names, dtypes, shapes): a mismatch is an
    encode bug and must not reach the trainer.
    """
    import torch
    from safetensors.torch import load, save

    tensors = load(blob)
    want = {m["tensor"]: (suffix, m) for suffix, m in members.items()}
    empty = want.get(SOURCE, (None, {}))[1]
    if SOURCE not in tensors and 0 in empty.get("shape", []):  # see with_empty_source
        tensors[SOURCE] = torch.empty(empty["shape"], dtype=getattr(torch, empty["dtype"]))
    if set(tensors) != set(want):
        raise ValueError(f"tensors {sorted(tensors)} differ from tensor_meta {sorted(want)}")
    out = {}
    for name, tensor in tensors.items():
        suffix, meta = want[name]
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype != meta["dtype"] or list(tensor.shape) != meta["shape"]:
            raise ValueError(f"{name}: blob has {dtype} {list(tensor.shape)}, tensor_meta says "
                             f"{meta['dtype']} {meta['shape']}")
        out[suffix] = save({name: tensor.contiguous()})
    return out


class _HashingWriter:
    """A file wrapper that hashes and counts what tarfile writes through it."""

    def __init__(self, f: BinaryIO):
        self.f, self.sha, self.n = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.n += len(data)
        return self.f.write(data)

    def tell(self) -> int:
        return self.n


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_tar(f: BinaryIO, samples: Iterable[tuple[str, bytes, dict[str, bytes]]]) -> tuple[str, int]:
    """Write (key, json bytes, {suffix: bytes}) samples, in the order given, as a tar to ``f``.

    Returns (sha256 hex, bytes). The caller passes keys sorted; members follow their key's JSON
    in suffix order, so WebDataset groups them by key.
    """
    w = _HashingWriter(f)
    with tarfile.open(fileobj=w, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for key, doc, tensors in samples:
            for suffix, data in [("json", doc), *sorted(tensors.items())]:
                tar.addfile(_tarinfo(f"{key}.{suffix}", len(data)), io.BytesIO(data))
    return w.sha.hexdigest(), w.n

