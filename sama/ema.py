"""Exponential moving average of the weights: an fp32 copy, updated after every optimiser step.

Under FSDP2 the parameters are DTensors; the shadow copies are DTensors with the same sharding,
so each rank averages only its own shard and the checkpoint stores the EMA sharded like the model.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.distributed.tensor import DTensor


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        # named like the model's state dict, so the EMA loads straight into a model for sampling
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().clone().float() for name, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        shadows = [_local(s) for s in self.shadow.values()]
        current = [_local(params[name].detach()).float() for name in self.shadow]
        # ema <- ema + (1 - decay) * (param - ema) == decay * ema + (1 - decay) * param
        torch._foreach_lerp_(shadows, current, 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights into ``model`` (same names and sharding)."""
        params = dict(model.named_parameters())
        for name, s in self.shadow.items():
            _local(params[name]).copy_(_local(s))
