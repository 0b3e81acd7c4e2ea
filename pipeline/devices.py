"""Which torch device and dtype a model runs on: one reading of ``auto``/``cpu``/``cuda[:N]`` and
of the dtype names for every model that loads (the encoders, the hf judge, the trainer, `sama
sample`), so a value one of them accepts is never refused or read differently by another.

torch is imported on use: the CLIs import this module at start-up and must stay fast.
"""
from __future__ import annotations

from pipeline.config_base import ConfigError

DTYPE_NAMES = ("float32", "bfloat16", "float16")


def resolve_device(value: str, field: str):
    """``auto`` (cuda when torch sees a GPU, else cpu) or a torch device name. A name torch does not
    know, cuda (or cuda:N) on a machine without that GPU: a ConfigError naming ``field``, raised here
    rather than on the first tensor moved (a cuda:3 on a one-GPU machine failed minutes later)."""
    import torch

    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"{field}={value!r} is not a torch device ({e}); use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{field}={value!r} but torch sees no GPU here; use auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{field}={value!r} but torch sees {torch.cuda.device_count()} GPU(s) here")
    return device


def resolve_dtype(value: str, device, field: str):
    """``auto``: bfloat16 on a GPU that has it (fp16 on the older ones: V100, T4), float32 on CPU
    (half precision there is slow, bf16 3D convolutions crawl); else one of DTYPE_NAMES. Any other
    name is a ConfigError naming ``field`` (``getattr(torch, name)`` would have returned whatever
    torch attribute had that name)."""
    import torch

    if value == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if value not in DTYPE_NAMES:
        raise ConfigError(f"{field}={value!r}: use auto, {', '.join(DTYPE_NAMES)}")
    return getattr(torch, value)
