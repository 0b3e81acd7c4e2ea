"""A tiny WanTransformer3DModel for tests and the CPU demo: the real architecture, random weights.

The tiny transformer is saved with ``save_pretrained`` so tests load it through the same
``from_pretrained(base_path)`` path a real Wan2.1 checkpoint takes.
"""
from __future__ import annotations

from pathlib import Path


def tiny_model_config(text_dim: int = 32, semantic_dim: int = 32) -> dict:
    """WanTransformer3DModel kwargs of a tiny model (16 latent channels, patch (1, 2, 2)).

    ``semantic_dim`` is not a transformer argument; it is accepted so callers can keep the two
    widths side by side (the SAMA config carries it in ``model.semantic_dim``).
    """
    del semantic_dim
    return dict(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        # head dim 16: Wan's RoPE splits it into t 8, h 4, w 4 channels
        attention_head_dim=16,
        in_channels=16,
        out_channels=16,
        text_dim=text_dim,
        freq_dim=32,
        ffn_dim=64,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=64,
    )


def build_tiny_checkpoint(directory: str | Path, seed: int = 0, text_dim: int = 32) -> Path:
    """Save a randomly initialised tiny WanTransformer3DModel to ``directory`` (diffusers format)."""
    import torch
    from diffusers import WanTransformer3DModel

    directory = Path(directory)
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG stream alone
        torch.manual_seed(seed)
        model = WanTransformer3DModel(**tiny_model_config(text_dim=text_dim))
    model.save_pretrained(directory)
    return directory


def tiny_sama_model_config(base_path: str | Path | None = None, text_dim: int = 32,
                           semantic_dim: int = 32, **overrides):
    """A ``ModelConfig`` for the tiny model: from ``base_path`` (a ``build_tiny_checkpoint`` dir)
    when given, else built from the tiny kwargs. SigLIP tokens 32 wide, 8x8 + 1 per anchor."""
    from sama.config import ModelConfig

    fields = dict(base_path=str(base_path) if base_path is not None else None,
                  tiny=None if base_path is not None else tiny_model_config(text_dim, semantic_dim),
                  semantic_dim=semantic_dim, text_len=16)
    fields.update(overrides)
    return ModelConfig(**fields)
