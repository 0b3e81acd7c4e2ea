"""Process group, device and model wrapping for `sama train` under torchrun (or alone).

torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; with more than one process we join a process group
(NCCL on GPU, gloo on CPU) and wrap the model with DDP or FSDP2 (``fully_shard`` on every
transformer block, then on the whole model, so one block's full weights exist at a time).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from pipeline.devices import resolve_device
from sama.config import ConfigError


@dataclass(frozen=True)
class Env:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup(device: str = "auto") -> Env:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, "train.device")
    use_cuda = dev.type == "cuda"
    if use_cuda and dev.index is None:  # one process per GPU under torchrun: this rank's own
        dev = torch.device("cuda", local_rank)
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        if use_cuda:
            dist.init_process_group("nccl", device_id=dev)
        else:
            dist.init_process_group("gloo")
    return Env(rank, world, local_rank, dev)


def resolve_parallel(mode: str, env: Env) -> str:
    if mode == "auto":
        return "fsdp" if env.distributed else "none"
    if mode == "none" and env.distributed:
        raise ConfigError(f"train.parallel: none, but {env.world} processes run; use ddp or fsdp")
    return mode


def mesh_for(env: Env):
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(env.device.type, (env.world,))


def mixed_precision(enabled: bool):
    """FSDP2's bf16 policy (bf16 parameters in forward/backward, fp32 gradient reduction), or None."""
    if not enabled:
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def shard_model(model: nn.Module, mesh, mp_policy=None) -> nn.Module:
    """``fully_shard`` every transformer block, then the whole model (in place)."""
    from torch.distributed.fsdp import fully_shard

    kwargs = {"mp_policy": mp_policy} if mp_policy is not None else {}
    for block in model.blocks:
        fully_shard(block, mesh=mesh, **kwargs)
    fully_shard(model, mesh=mesh, **kwargs)
    return model


def parallelize(model: nn.Module, mode: str, env: Env, find_unused: bool = False, mp_policy=None,
                already_sharded: bool = False) -> nn.Module:
    """The module to call in the loop (``model`` itself for none and FSDP2, a DDP wrapper for ddp).
    FSDP2 reshapes ``model`` in place: its parameters become sharded DTensors."""
    if mode == "none":
        return model
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [env.device] if env.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)
    if mode == "fsdp":
        return model if already_sharded else shard_model(model, mesh_for(env), mp_policy)
    raise ValueError(f"train.parallel: unknown mode {mode!r}")


def gradient_sync(wrapped: nn.Module, mode: str, sync: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of a step."""
    if mode == "ddp" and not sync:
        return wrapped.no_sync()
    if mode == "fsdp":
        wrapped.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
