"""Trained weights out of a training checkpoint: loading for inference and ``sama export``.

A "checkpoint" given to ``sama sample`` / ``sama export`` may be:

- an export directory (``sama_config.json``; what ``sama export`` writes),
- one training checkpoint (``.../checkpoints/step-00001000``, torch distributed checkpoint with
  ``meta.json``; sama/checkpoint.py), or
- a training run's ``train.out_dir`` (its latest complete checkpoint is taken), or
- the released SAMA ``.safetensors`` with its Wan2.1 base (``--base``; sama/official.py).

``sama import`` writes the last one as an export.

An export is ``transformer/`` (the Wan transformer via ``save_pretrained``: diffusers'
``WanTransformer3DModel.from_pretrained`` loads it alone), ``sama_modules.safetensors`` (semantic
MLP, type embedding, semantic head) and ``sama_config.json`` (the SAMA model fields, the flow
settings the model was trained with, where it came from). ``SamaTransformer.from_exported`` loads it.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from sama.config import OFFICIAL_FLOW, FlowConfig, ModelConfig
from sama.model import EXPORT_CONFIG, SamaTransformer


def resolve_checkpoint(path: str | Path) -> tuple[str, Path]:
    """("export" | "train", directory) for what the user pointed at."""
    from sama import checkpoint as ckpt

    path = Path(path).expanduser()
    if (path / EXPORT_CONFIG).is_file():
        return "export", path
    if ckpt.is_complete(path):
        return "train", path
    if ckpt.checkpoints_dir(path).is_dir():
        found = ckpt.find_resume(path, "auto")
        if found is not None:
            return "train", found
    raise FileNotFoundError(
        f"--checkpoint {path}: neither an export (no {EXPORT_CONFIG}), a training checkpoint (no "
        f"{ckpt.META}) nor a run directory with complete checkpoints under checkpoints/")


def import_official(weights: str | Path, base: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """``sama import``: the released SAMA file over its Wan2.1 base, written as an export."""
    return _write_export(lambda: _load_official(weights, base), out, overwrite)


def _write_export(load, out: str | Path, overwrite: bool) -> Path:
    """Write ``load()``'s (model, info) as an export to ``out`` (whole or absent: built beside it,
    renamed); the existence check runs before anything is loaded."""
    out = Path(out).expanduser()
    if out.exists() and not overwrite:
        raise FileExistsError(f"--out {out} exists; choose another directory or pass --overwrite")
    model, info = load()
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with torch.no_grad():
        model.save_exported(tmp, extra_meta={**info, "flow": info["flow"].model_dump(mode="json")})
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _load_official(weights: str | Path, base: str | Path | None) -> tuple[SamaTransformer, dict]:
    from sama.official import load_official

    if base is None:
        raise ValueError(f"{weights} is an official SAMA weights file: give --base, the Wan2.1-T2V "
                         "directory it is loaded over (diffusers or original layout)")
    model = load_official(weights, base)
    return model, {"flow": FlowConfig(**OFFICIAL_FLOW), "semantic": True, "source": str(weights),
                   "step": None, "weights": "official", "base": str(base)}


def load_trained(path: str | Path, weights: str = "ema", base: str | Path | None = None,
                 torch_dtype: torch.dtype | None = None) -> tuple[SamaTransformer, dict]:
    """The trained model (CPU, fp32, eval mode) and what is known about it: ``flow``
    (FlowConfig), ``semantic`` (whether it was trained with semantic tokens), ``source``, ``step``.

    ``weights``: ``ema`` (the averaged weights; what sampling should use) or ``model`` (the raw
    trained weights) of a training checkpoint; an export holds the weights it was made from.
    ``path`` may also be an official SAMA ``.safetensors`` file, loaded over ``base`` (in its
    stored dtype). ``torch_dtype``: the dtype an export is loaded in (default fp32).
    """
    if Path(path).suffix == ".safetensors" and Path(path).is_file():
        model, info = _load_official(path, base)  # kept in its stored dtype (bf16: half of fp32)
        return model.eval(), info
    kind, directory = resolve_checkpoint(path)
    if kind == "export":
        meta = json.loads((directory / EXPORT_CONFIG).read_text())
        # an export loads straight into torch_dtype (a bf16 14B export: 28 GB of host memory, not 56)
        model = SamaTransformer.from_exported(directory, torch_dtype=torch_dtype)
        info = {"flow": FlowConfig(**meta.get("flow", {})), "semantic": meta.get("semantic", True),
                "source": meta.get("source", str(directory)), "step": meta.get("step"),
                "weights": meta.get("weights")}
    else:
        from sama import checkpoint as ckpt

        meta = json.loads((directory / ckpt.META).read_text())
        config = meta.get("config") or {}
        if "model" not in config:
            raise ValueError(f"{directory / ckpt.META}: no config.model recorded; cannot rebuild the model")
        cfg = ModelConfig(**config["model"])
        # Architecture only: the checkpoint's weights replace every parameter right after.
        model = SamaTransformer.from_config(cfg, pretrained=False)
        state = ckpt.load_weights(directory, weights)
        missing, unexpected = model.load_state_dict(state, strict=False)
        params = dict(model.named_parameters())
        missing = [k for k in missing if k in params]
        if missing or unexpected:
            raise ValueError(f"{directory}: its {weights} weights do not fit the recorded model config "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        info = {"flow": FlowConfig(**config.get("flow", {})),
                "semantic": bool(config.get("data", {}).get("semantic", True)),
                "source": str(directory), "step": meta.get("step"), "weights": weights}
    model.eval()
    return model, info


def export(checkpoint: str | Path, out: str | Path, weights: str = "ema", overwrite: bool = False) -> Path:
    """Write an export of ``checkpoint`` to ``out`` (whole or absent: built beside it, renamed)."""
    return _write_export(lambda: load_trained(checkpoint, weights), out, overwrite)
