"""The encode stage's core, without Ray: decoded samples -> ``encoded`` rows.

``encode_samples`` perturbs the pretext sources (seeded per sample and variant), runs each
distinct clip through the VAE once (a raw clip's target is shared by all its variants), the anchor
frames of each distinct target through SigLIP and each key's instruction through umT5, and packs
every key's tensors into a safetensors blob. Samples are encoded one at a time (see
``encode_samples``), so only a sample at fault (bad frames, out of memory) becomes an error row.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from stages.media.buckets import bucket_name
from stages.encode.decode import DecodedSample, KeySpec, anchor_indices
from stages.encode.schema import ENCODED, key_of, pack_tensors, purpose_of
from stages.media.locate import short_error as _short


@dataclass
class _Key:
    """One key ready to encode: where its clips are, its text, or why it failed."""

    sample: DecodedSample
    spec: KeySpec
    instruction: str | None
    task_token: str | None
    target_id: tuple | None = None
    source_id: tuple | None = None
    error: str | None = None


def _text(sample: dict, variant: str, pretext_cfg, prefix: str = "") -> tuple[str | None, str | None]:
    from stages.pretext import task_text

    if variant == "edit":  # encode.instruction_prefix ("[Video edit] " for the official SAMA weights)
        instruction = sample.get("instruction")
        return (prefix + instruction if instruction is not None else None), None
    return task_text(variant, sample.get("caption"), pretext_cfg)


def prepare(samples: list[DecodedSample], pretext_cfg, seed: int,
            prefix: str = "") -> tuple[list[_Key], dict[tuple, np.ndarray]]:
    """Keys and the distinct clips (by id) they need; cube/tube sources are made here."""
    from stages.pretext import PretextError, perturb_source, pretext_rng

    keys, clips = [], {}
    for s in samples:
        sid = s.sample["sample_id"]
        for spec in s.keys:
            instruction, token = _text(s.sample, spec.variant, pretext_cfg, prefix)
            k = _Key(s, spec, instruction, token, error=spec.error)
            if k.error is None:
                k.target_id = (sid, spec.target)
                clips[k.target_id] = s.clips[spec.target]
                if spec.source is not None and spec.perturb:
                    try:
                        frames, record = perturb_source(spec.variant, s.clips[spec.source], pretext_cfg,
                                                        pretext_rng(seed, sid, spec.variant))
                    except PretextError as e:
                        k.error = f"pretext: {e}"
                    else:
                        spec.pretext = record
                        k.source_id = (sid, f"{spec.variant}:source")
                        clips[k.source_id] = frames
                elif spec.source is not None:
                    k.source_id = (sid, spec.source)
                    clips[k.source_id] = s.clips[spec.source]
            keys.append(k)
    return keys, clips


def _encode(samples: list[DecodedSample], encoders, cfg, pretext_cfg, seed: int) -> list[dict]:
    keys, clips = prepare(samples, pretext_cfg, seed, cfg.instruction_prefix)
    ids = sorted({i for k in keys if k.error is None for i in (k.target_id, k.source_id) if i is not None})
    latents = dict(zip(ids, encoders.vae_latents([clips[i] for i in ids])))
    targets = sorted({k.target_id for k in keys if k.error is None})
    anchors = {t: anchor_indices(len(clips[t]), cfg.anchor_frames, cfg.anchor) for t in targets}
    frames = [clips[t][a] for t in targets for a in anchors[t]]
    tokens = encoders.semantic_tokens(frames) if frames else None
    semantic, pos = {}, 0
    for t in targets:
        semantic[t] = tokens[pos:pos + len(anchors[t])]
        pos += len(anchors[t])
    todo = [k for k in keys if k.error is None]
    texts = dict(zip(map(id, todo), encoders.text_embeddings([k.instruction or "" for k in todo]))) \
        if cfg.text and todo else {}
    rows = []
    for k in keys:
        tensors = None
        if k.error is None:
            tensors = {"target_latents": latents[k.target_id], "semantic_tokens": semantic[k.target_id]}
            if k.source_id is not None:
                tensors["source_latents"] = latents[k.source_id]
            if cfg.text:
                tensors["text_embedding"] = texts[id(k)]
        rows.append(make_row(k, cfg, encoders.models, tensors,
                             anchors.get(k.target_id) if k.error is None else None))
    return rows


def make_row(k: _Key, cfg, models: dict, tensors: dict | None, anchors: list[int] | None) -> dict:
    s, spec = k.sample, k.spec
    modality = s.sample.get("modality") or "video"
    blob = meta = latent_shape = None
    if tensors is not None:
        blob, meta = pack_tensors(tensors, cfg.store_dtype)
        latent_shape = [int(v) for v in tensors["target_latents"].shape]
    n = len(spec.target_indices) if spec.target_indices is not None else None
    return {
        "key": key_of(s.sample["sample_id"], spec.variant), "sample_id": s.sample["sample_id"],
        "dataset": s.sample["dataset"], "modality": modality, "variant": spec.variant,
        "purpose": purpose_of(modality, spec.variant), "instruction": k.instruction,
        "task_token": k.task_token, "bucket": bucket_name(s.bucket) if s.bucket else None,
        "num_frames": n, "fps": s.fps, "latent_shape": latent_shape,
        "target_indices": spec.target_indices, "source_indices": spec.source_indices,
        "anchor_indices": anchors, "pretext": json.dumps(spec.pretext, sort_keys=True),
        "error": k.error, "tensors": blob, "tensor_meta": meta,
        "models": json.dumps(models, sort_keys=True),
    }


def _failed_rows(sample: DecodedSample, error: str, cfg, models: dict, pretext_cfg) -> list[dict]:
    rows = []
    for spec in sample.keys:
        instruction, token = _text(sample.sample, spec.variant, pretext_cfg, cfg.instruction_prefix)
        rows.append(make_row(_Key(sample, spec, instruction, token, error=spec.error or error), cfg, models,
                             None, None))
    return rows


def encode_samples(samples: list[DecodedSample], encoders, cfg, pretext_cfg, seed: int) -> list[dict]:
    """``encoded`` rows of ``samples`` (one per key, in sample then variant order); never raises.

    Each sample goes through the encoders on its own (its clips, anchor frames and texts batched
    together, never with another sample's): batched kernels round differently with other batch
    mates, so this makes a key's bytes a function of its sample and the settings alone. A
    re-curation that encodes only the newly kept samples, in units of their own, thus writes the
    bytes a fresh run would (stages/encode/stage.py), and a failing sample fails alone.

    ``encoders``: an ``Encoders`` (or anything with its methods and ``models``); ``cfg``:
    EncodeConfig; ``pretext_cfg``: PretextConfig; ``seed``: run.seed.
    """
    rows = []
    for s in samples:
        try:
            rows += _encode([s], encoders, cfg, pretext_cfg, seed)
        except Exception as e:
            if _device_failure(e):
                raise
            rows += _failed_rows(s, _encoder_error(e), cfg, encoders.models, pretext_cfg)
    return rows


def _device_failure(e: BaseException) -> bool:
    """A failure of the device, not of a sample: a CUDA error poisons the context, so every later
    sample would fail too. Raising fails the unit's task and leaves it undone (a re-run redoes it)
    instead of writing a part of error rows that a resume would take as finished."""
    text = str(e)
    return "CUDA error" in text or "device-side assert" in text


def _encoder_error(e: BaseException) -> str:
    return f"encoder_error: {type(e).__name__}: {_short(e)}"


def encode_table(samples: list[DecodedSample], encoders, cfg, pretext_cfg, seed: int) -> pa.Table:
    """``encode_samples`` as an Arrow table in the ``encoded`` schema."""
    return pa.Table.from_pylist(encode_samples(samples, encoders, cfg, pretext_cfg, seed), schema=ENCODED)
