"""Building the training model without ever holding it whole (``train.load: sharded``, FSDP2).

The model is built on the meta device (no memory), sharded with FSDP2, given empty local shards,
and then filled parameter by parameter: each rank reads one full tensor at a time from the base's
safetensors (memory-mapped, in its stored dtype), keeps its own slice in fp32 and drops the rest.
The released SAMA file (``train.init_from: SAMA.safetensors``, official key names) is overlaid the
same way. The new SAMA modules a base does not have (semantic MLP and head, type embedding) are
small: they are initialised on CPU from ``train.seed``, identically on every rank.

A rank's weight memory is then its shard plus the largest single tensor, not the model: the
loader counts those bytes and reports them against the full model's size.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

from sama.config import ConfigError, TrainerConfig


@dataclass
class LoadStats:
    full_bytes: int  # the whole model in fp32
    local_bytes: int  # this rank's parameter shards (fp32)
    peak_bytes: int  # most bytes of weights held at once while loading (shards + one full tensor)
    cuda_peak_bytes: int | None = None  # torch.cuda.max_memory_allocated over the load (GPU only)

    def line(self, rank: int) -> str:
        mb = 1 << 20
        cuda = f", CUDA allocator peak {self.cuda_peak_bytes / mb:.2f} MB" if self.cuda_peak_bytes is not None else ""
        return (f"rank {rank}: weights {self.local_bytes / mb:.2f} MB resident, peak {self.peak_bytes / mb:.2f} MB "
                f"while loading, full model {self.full_bytes / mb:.2f} MB fp32 "
                f"({self.peak_bytes / self.full_bytes:.1%} of it){cuda}")


def _sources(cfg: TrainerConfig):
    """name -> zero-arg reader of the full tensor, for every weight the files provide."""
    from sama.official import LazyTensors, read_base, weight_sources

    if cfg.model.base_path is None:
        raise ConfigError("train.load: sharded reads the weights from model.base_path; set it (a random "
                          "model.tiny has no file to stream from; use train.load: full)")
    _, layout, base = read_base(cfg.model.base_path)
    init = cfg.train.init_from
    if init is not None and Path(init).suffix != ".safetensors":
        raise ConfigError(f"train.init_from: {init}: train.load sharded streams only .safetensors files "
                          "(the released SAMA weights); for a sama checkpoint use train.load: full")
    sama = LazyTensors([Path(init).expanduser()]) if init is not None else None
    readers, unknown = weight_sources(layout, base, sama)
    # a base's keys the model has no place for are not read; the SAMA file's are an error
    unknown = [k.removeprefix("weights:") for k in unknown if k.startswith("weights:")]
    if unknown:
        raise ConfigError(f"train.init_from: {init} has keys with no place in the model: {unknown[:8]}")
    return readers


def build_sharded(cfg: TrainerConfig, mesh, mp_policy=None) -> tuple[nn.Module, LoadStats]:
    """The FSDP2-sharded SamaTransformer with every weight loaded (see the module docstring)."""
    from diffusers import WanTransformer3DModel

    from sama.dist import shard_model
    from sama.model import SamaTransformer, resolve_wan_dir
    from sama.official import _fresh_rope

    with torch.device("meta"):
        wan = WanTransformer3DModel.from_config(WanTransformer3DModel.load_config(resolve_wan_dir(cfg.model.base_path)))
    torch.manual_seed(cfg.train.seed)  # the new SAMA modules: real, small, identical on every rank
    model = SamaTransformer(wan, cfg.model)
    fresh = {k: v.detach().clone() for k, v in model.extra_state_dict().items()}
    readers = _sources(cfg)
    expected = dict(model.named_parameters())
    missing = [n for n in expected if n not in readers and n not in fresh]
    unknown = [n for n in readers if n not in expected]
    if missing or unknown:
        raise ConfigError(f"model.base_path / train.init_from do not fit the model: missing {missing[:8]}, "
                          f"unknown {unknown[:8]}")
    full_bytes = sum(p.numel() * 4 for p in expected.values())

    on_cuda = mesh.device_type == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    model = model.to("meta")
    shard_model(model, mesh, mp_policy)
    model.to_empty(device=mesh.device_type)
    model.wan.rope = _fresh_rope(model.wan).to(mesh.device_type)  # buffers, not in the state dict

    local_bytes = sum(_local(p).numel() * 4 for p in model.parameters())
    peak = local_bytes
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in readers:
                src, key = readers[name]
                if src.shape(key) != tuple(param.shape):
                    raise ConfigError(f"{key}: shape {src.shape(key)}, the model's {name} is {tuple(param.shape)}")
                full = src[key]
            else:
                full = fresh[name]
            peak = max(peak, local_bytes + full.numel() * full.element_size())
            full = full.to(device=mesh.device_type, dtype=torch.float32)
            if isinstance(param, DTensor):  # every rank holds the same full tensor: slice, no comms
                full = distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None).to_local()
            _local(param).copy_(full)
            del full
    cuda_peak = torch.cuda.max_memory_allocated() if on_cuda else None
    return model, LoadStats(full_bytes, local_bytes, peak, cuda_peak)


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t
