"""Training checkpoints: torch.distributed.checkpoint (DCP) for the tensors, small per-rank files
for the rest, written to a temporary directory and renamed so a checkpoint is whole or absent.

Layout under ``<out_dir>/checkpoints/``::

    step-00001000/
        .metadata, __0_0.distcp, ...   DCP: {"model", "optim", "ema"}, sharded as trained
        rank-00000.pt                  per rank: data position, RNG states
        meta.json                      step, counters, world size, config (written last)
    latest                             the name of the newest complete checkpoint

DCP stores each rank's shards and reloads them under another sharding, but the data position is
per rank and per loader worker: an exact resume needs the same world size and data.num_workers.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from manifests.io import atomic_write_bytes
from sama import dist
from sama.ema import EMA

CHECKPOINTS = "checkpoints"
LATEST = "latest"
META = "meta.json"


def checkpoints_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / CHECKPOINTS


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def is_complete(path: Path) -> bool:
    return (path / META).is_file()


def complete_checkpoints(out_dir: str | Path) -> list[Path]:
    """Finished checkpoints, oldest first (``.tmp`` and ``.deleting`` directories are not)."""
    root = checkpoints_dir(out_dir)
    found = [p for p in root.glob("step-*") if re.fullmatch(r"step-\d{8}", p.name) and is_complete(p)]
    return sorted(found, key=lambda p: p.name)


def _remove(path: Path) -> None:
    """Delete a checkpoint directory; renamed first so a kill during the deletion cannot leave a
    half checkpoint that looks whole (``.deleting`` leftovers are swept by the next save)."""
    doomed = path.with_name(path.name + ".deleting")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _write_latest(out_dir: str | Path, name: str) -> None:
    atomic_write_bytes(checkpoints_dir(out_dir) / LATEST, (name + "\n").encode())


@contextmanager
def _single_process_ok():
    """DCP warns on every single-process save/load; that is our intent when no group runs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is .*unavailable or uninitialized")
        yield


def rng_states(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save(out_dir: str | Path, step: int, model, optimizer, ema: EMA | None, env: dist.Env, *,
         per_rank: dict, meta: dict, keep_last: int) -> Path:
    """Write checkpoint ``step`` (collective: every rank calls it). Returns its directory."""
    root = checkpoints_dir(out_dir)
    final = root / step_name(step)
    tmp = root / (step_name(step) + ".tmp")
    if env.is_main:
        for leftover in [tmp, *root.glob("*.deleting")]:  # from a run killed while saving or pruning
            shutil.rmtree(leftover, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    state = _dcp_state(model, optimizer, ema)
    with _single_process_ok():
        dcp.save(state, checkpoint_id=str(tmp), no_dist=not env.distributed)
    torch.save(per_rank, tmp / f"rank-{env.rank:05d}.pt")
    dist.barrier()
    if env.is_main:
        (tmp / META).write_text(json.dumps({**meta, "step": step, "world": env.world,
                                            "saved_at": time.time()}, indent=2, sort_keys=True) + "\n")
        if final.exists():  # the same step saved again (a resumed run that re-reached it)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _write_latest(out_dir, final.name)
        # keep the newest keep_last counting this one; only older checkpoints go, never this one
        older = [p for p in complete_checkpoints(out_dir) if p.name < final.name]
        for old in older[:max(len(older) - (keep_last - 1), 0)]:
            _remove(old)
    dist.barrier()
    return final


def find_resume(out_dir: str | Path, resume: str) -> Path | None:
    """The checkpoint to continue from per ``checkpoint.resume`` (auto | never | a directory)."""
    existing = complete_checkpoints(out_dir)
    if resume == "never":
        if existing:
            raise FileExistsError(f"checkpoint.resume: never, but {checkpoints_dir(out_dir)} holds "
                                  f"{existing[-1].name}; use resume: auto, or a new train.out_dir")
        return None
    if resume == "auto":
        latest = checkpoints_dir(out_dir) / LATEST
        if latest.is_file():
            path = checkpoints_dir(out_dir) / latest.read_text().strip()
            if is_complete(path):
                return path
        return existing[-1] if existing else None
    path = Path(resume).expanduser()
    if not is_complete(path):
        raise FileNotFoundError(f"checkpoint.resume: {path} is not a complete checkpoint (no {META})")
    return path


def discard_after(out_dir: str | Path, resume_from: Path, env: dist.Env) -> None:
    """Collective: when resuming from a checkpoint of this run (under ``out_dir``), drop the complete
    checkpoints of later steps (an abandoned continuation) and point ``latest`` at ``resume_from``,
    so that pruning by step and ``resume: auto`` only ever see this run's line."""
    root = checkpoints_dir(out_dir)
    if env.is_main and resume_from.resolve().parent == root.resolve():
        for later in complete_checkpoints(out_dir):
            if later.name > resume_from.name:
                _remove(later)
        _write_latest(out_dir, resume_from.name)
    dist.barrier()


def _dcp_state(model, optimizer, ema: EMA | None) -> dict:
    """What torch distributed checkpointing saves and loads (in place): model, optimizer, EMA."""
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    if ema is not None:
        state["ema"] = ema.state_dict()
    return state


def load(path: Path, model, optimizer, ema: EMA | None, env: dist.Env) -> tuple[dict, dict]:
    """Load model, optimizer and EMA in place; returns (meta, this rank's per-rank dict)."""
    meta = json.loads((path / META).read_text())
    state = _dcp_state(model, optimizer, ema)
    with _single_process_ok():
        dcp.load(state, checkpoint_id=str(path), no_dist=not env.distributed)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    rank_file = path / f"rank-{env.rank:05d}.pt"
    if not rank_file.is_file():
        raise FileNotFoundError(f"{rank_file} missing: {path} was written by {meta.get('world')} processes, "
                                f"this run has {env.world}")
    per_rank = torch.load(rank_file, weights_only=True)  # tensors and plain Python values only: no pickled code
    return meta, per_rank


def load_weights(path: str | Path, which: str = "ema") -> dict[str, torch.Tensor]:
    """Full (unsharded) weights of a checkpoint on CPU, in one process: ``ema`` (for sampling and
    export) or ``model`` (the raw trained weights). Names are the SamaTransformer's state dict's."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    path = Path(path)
    if not is_complete(path) and checkpoints_dir(path).is_dir():  # a run's out_dir: its latest checkpoint
        path = find_resume(path, "auto") or path
    if not is_complete(path):
        raise FileNotFoundError(f"{path} is not a complete sama checkpoint (no {META})")
    metadata = FileSystemReader(str(path)).read_metadata()
    prefix = which + "."
    tensors = {k[len(prefix):]: torch.empty(md.size, dtype=md.properties.dtype)
               for k, md in metadata.state_dict_metadata.items()
               if k.startswith(prefix) and isinstance(md, TensorStorageMetadata)}
    if not tensors:
        raise KeyError(f"{path}: no {which!r} weights in this checkpoint (ema.enabled was off?)")
    with _single_process_ok():
        dcp.load({which: tensors}, checkpoint_id=str(path), no_dist=True)
    return tensors
