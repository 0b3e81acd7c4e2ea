"""SAMA's transformer: diffusers' Wan2.1 ``WanTransformer3DModel`` with an in-context sequence.

The token sequence is ``[source tokens ; semantic tokens ; target tokens]``:

- source and target latents go through Wan's own patch embedding and share one RoPE grid (both
  start at position 0: no shifted RoPE), so a target patch attends to the source patch at the same
  place and time as to itself;
- semantic tokens (SigLIP features of the target's anchor frames, noised with the target) are
  projected to the model width by a small MLP and are not rotated (``semantic_rope: identity``);
- a learned type embedding (0 source, 1 semantic, 2 target) is added to every token;
- Wan's blocks run unchanged over the whole sequence; only the target slice goes through Wan's
  output norm/projection, and a head on the semantic slice of the last block predicts the clean
  semantic tokens (Semantic Anchoring).

Everything of Wan is reused, nothing is copied: patch embedding, time/text condition embedder,
blocks, output norm + modulation table, projection and RoPE tables. The type embedding starts at
zero, so with no source and no semantic tokens the model is exactly the pretrained Wan at step 0.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from sama.config import ModelConfig

SOURCE, SEMANTIC, TARGET = 0, 1, 2  # type embedding ids

EXPORT_CONFIG = "sama_config.json"
EXPORT_MODULES = "sama_modules.safetensors"
EXPORT_TRANSFORMER = "transformer"
EXPORT_FORMAT = "sama-export/1"


def resolve_wan_dir(path: str | Path) -> Path:
    """The directory holding the transformer's config.json: ``path`` or its ``transformer/``.

    A Wan2.1-T2V-*-Diffusers download keeps the transformer in a ``transformer/`` subfolder;
    accepting either spares the user a path edit.
    """
    path = Path(path).expanduser()
    if (path / "config.json").is_file():
        return path
    if (path / "transformer" / "config.json").is_file():
        return path / "transformer"
    raise FileNotFoundError(
        f"model.base_path: {path} holds no config.json (nor transformer/config.json); point it at a "
        "local diffusers WanTransformer3DModel directory, e.g. Wan2.1-T2V-14B-Diffusers/transformer")


def cast_weights(module: nn.Module, dtype: torch.dtype) -> None:
    """Weights to ``dtype`` except those Wan keeps in fp32 (time embedder, modulation tables,
    norms; those are made fp32 if stored otherwise), as diffusers' ``from_pretrained(torch_dtype=...)``
    does. Parameters only:
    ``module.to(dtype)`` would also round the fp32 RoPE tables (buffers)."""
    from diffusers import WanTransformer3DModel

    keep = set(WanTransformer3DModel._keep_in_fp32_modules)
    for name, p in module.named_parameters():
        p.data = p.data.to(torch.float32 if keep.intersection(name.split(".")) else dtype)


@dataclass
class Sequence:
    """The assembled token sequence of one batch (all samples share shapes: one bucket)."""

    hidden: torch.Tensor  # [B, S, D] embedded tokens, type embedding added
    rotary: tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each [1, S, 1, head_dim]
    type_ids: torch.Tensor  # [S] long: 0 source, 1 semantic, 2 target
    slices: dict[str, slice]  # "source" / "semantic" / "target" -> token range (present parts only)
    target_grid: tuple[int, int, int]  # (T, h, w) after patching


class SamaTransformer(nn.Module):
    def __init__(self, wan, cfg: ModelConfig):
        super().__init__()
        self.wan = wan
        self.cfg = cfg
        wcfg = wan.config
        inner = wcfg.num_attention_heads * wcfg.attention_head_dim
        self.inner_dim = inner
        self.patch_size = tuple(wcfg.patch_size)
        self.out_channels = wcfg.out_channels or wcfg.in_channels
        hidden = cfg.semantic_mlp_hidden or inner
        sd = cfg.semantic_dim
        # SigLIP -> model width. The input LayerNorm puts SigLIP's large, outlier-heavy features on
        # a common scale (as Wan's own image embedder does for CLIP tokens).
        # (official SAMA: affine LayerNorm, hidden 1024, exact GELU; model.preset official)
        self.semantic_embed = nn.Sequential(
            nn.LayerNorm(sd, eps=1e-6, elementwise_affine=cfg.semantic_mlp_affine),
            nn.Linear(sd, hidden),
            nn.GELU(approximate="tanh" if cfg.semantic_mlp_act == "gelu_tanh" else "none"),
            nn.Linear(hidden, inner),
        )
        # Zero at step 0: a target-only sequence is then exactly the pretrained Wan.
        self.type_embedding = nn.Parameter(torch.zeros(3, inner)) if cfg.type_embedding else None
        self.semantic_head = nn.Sequential(
            nn.LayerNorm(inner, eps=1e-6, elementwise_affine=cfg.semantic_head_affine),
            nn.Linear(inner, sd),
        ) if cfg.semantic_head else None
        self.gradient_checkpointing = cfg.gradient_checkpointing

    # ------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg: ModelConfig, torch_dtype: torch.dtype | None = None,
                    pretrained: bool = True) -> "SamaTransformer":
        """Wan from ``cfg.base_path`` (pretrained) or from ``cfg.tiny`` (random), plus new modules.

        ``pretrained=False`` builds the base's architecture from its config.json only (random
        weights), for callers that load trained weights right after (sampling, export).
        """
        from diffusers import WanTransformer3DModel

        if cfg.base_path is not None and pretrained:
            kwargs = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
            wan = WanTransformer3DModel.from_pretrained(resolve_wan_dir(cfg.base_path), **kwargs)
        else:
            if cfg.base_path is not None:
                arch = WanTransformer3DModel.load_config(resolve_wan_dir(cfg.base_path))
                wan = WanTransformer3DModel.from_config(arch)
            else:
                wan = WanTransformer3DModel(**cfg.tiny)
        model = cls(wan, cfg)
        if torch_dtype is not None:
            cast_weights(model, torch_dtype)
        return model

    @classmethod
    def from_exported(cls, directory: str | Path, torch_dtype: torch.dtype | None = None) -> "SamaTransformer":
        """Load what ``save_exported`` (``sama export``) wrote."""
        from safetensors.torch import load_file

        directory = Path(directory)
        meta = json.loads((directory / EXPORT_CONFIG).read_text())
        if meta.get("format") != EXPORT_FORMAT:
            raise ValueError(f"{directory / EXPORT_CONFIG}: format {meta.get('format')!r}, expected "
                             f"{EXPORT_FORMAT!r}; re-export with `sama export`")
        fields = dict(meta["model"], base_path=str(directory / EXPORT_TRANSFORMER), tiny=None)
        model = cls.from_config(ModelConfig(**fields), torch_dtype=torch_dtype)
        extra = load_file(directory / EXPORT_MODULES)
        missing, unexpected = model.load_state_dict(extra, strict=False)
        missing = [k for k in missing if not k.startswith("wan.")]
        if missing or unexpected:
            raise ValueError(f"{directory / EXPORT_MODULES}: missing {missing}, unexpected {unexpected}")
        return model

    def extra_state_dict(self) -> dict[str, torch.Tensor]:
        """The SAMA modules' weights (everything that is not the Wan transformer)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("wan.")}

    def save_exported(self, directory: str | Path, extra_meta: dict | None = None) -> Path:
        """Wan via ``save_pretrained`` (diffusers loads it alone) + our modules + a JSON config."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.wan.save_pretrained(directory / EXPORT_TRANSFORMER)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.extra_state_dict().items()},
                  directory / EXPORT_MODULES)
        model_fields = self.cfg.model_dump(mode="json", exclude={"base_path", "tiny"})
        meta = {"format": EXPORT_FORMAT, "model": model_fields, **(extra_meta or {})}
        tmp = directory / (EXPORT_CONFIG + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        tmp.replace(directory / EXPORT_CONFIG)
        return directory

    # ------------------------------------------------------------ pieces
    @property
    def blocks(self) -> nn.ModuleList:
        """Wan's transformer blocks (FSDP2 shards and checkpointing wraps them one by one)."""
        return self.wan.blocks

    @property
    def num_semantic_tokens(self) -> int:
        return self.cfg.semantic_tokens

    def patchify(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, C, T, H, W] -> [B, T/pt * H/ph * W/pw, D] with Wan's patch embedding (t, h, w order)."""
        return self.wan.patch_embedding(latents).flatten(2).transpose(1, 2)

    def unpatchify(self, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[B, N, C*pt*ph*pw] -> [B, C, T, H, W], the inverse Wan applies after proj_out."""
        b = tokens.shape[0]
        pt, ph, pw = self.patch_size
        t, h, w = grid
        x = tokens.reshape(b, t, h, w, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.flatten(6, 7).flatten(4, 5).flatten(2, 3)

    def _grid(self, latents: torch.Tensor) -> tuple[int, int, int]:
        _, _, t, h, w = latents.shape
        pt, ph, pw = self.patch_size
        if t % pt or h % ph or w % pw:
            raise ValueError(f"latent shape {tuple(latents.shape)} is not divisible by the patch size "
                             f"{self.patch_size}")
        return t // pt, h // ph, w // pw

    def semantic_rotary(self, num_tokens: int, target_grid: tuple[int, int, int],
                        like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) [1, S, 1, head_dim] for the semantic tokens, per ``cfg.semantic_rope``."""
        head_dim = like.shape[-1]
        cos = torch.ones(1, num_tokens, 1, head_dim, dtype=like.dtype, device=like.device)
        sin = torch.zeros_like(cos)
        if self.cfg.semantic_rope == "identity":
            return cos, sin
        if self.cfg.semantic_rope == "zero":
            # the official code's complex-zero frequency rows: the semantic queries and keys become
            # exactly 0 in every block (uniform attention from and to them)
            return torch.zeros_like(cos), sin
        g, n_global = self.cfg.semantic_grid, self.cfg.semantic_global_tokens
        per_anchor = g * g + n_global
        if num_tokens % per_anchor:
            raise ValueError(f"semantic_rope shared: {num_tokens} semantic tokens is not a multiple of "
                             f"{per_anchor} (model.semantic_grid**2 + model.semantic_global_tokens)")
        rope = self.wan.rope
        _, ph, pw = target_grid
        split = [rope.t_dim, rope.h_dim, rope.w_dim]
        table_cos = rope.freqs_cos.to(like.device).split(split, dim=1)
        table_sin = rope.freqs_sin.to(like.device).split(split, dim=1)
        rows = [min(ph - 1, math.floor((i + 0.5) * ph / g)) for i in range(g)]
        cols = [min(pw - 1, math.floor((j + 0.5) * pw / g)) for j in range(g)]
        for a in range(num_tokens // per_anchor):
            for i, r in enumerate(rows):
                for j, c in enumerate(cols):
                    k = a * per_anchor + i * g + j  # pooled tokens are row-major, globals follow
                    # time position 0 = no rotation on the time channels
                    cos[0, k, 0] = torch.cat([table_cos[0][0], table_cos[1][r], table_cos[2][c]]).to(cos.dtype)
                    sin[0, k, 0] = torch.cat([table_sin[0][0], table_sin[1][r], table_sin[2][c]]).to(sin.dtype)
        return cos, sin

    def check_semantic(self, tokens: torch.Tensor) -> None:
        """The data's SigLIP tokens must be what the config says (sampling generates that many)."""
        c = self.cfg
        if tokens.shape[-1] != c.semantic_dim:
            raise ValueError(f"model.semantic_dim: {c.semantic_dim}, the shards' SigLIP tokens are "
                             f"{tokens.shape[-1]} wide; set it to the SigLIP width the encode stage used")
        if tokens.shape[1] != c.semantic_tokens:
            raise ValueError(
                f"{tokens.shape[1]} semantic tokens per sample, but the config gives {c.semantic_tokens} "
                f"(model.anchor_frames {c.anchor_frames} x (model.semantic_grid {c.semantic_grid}**2 + "
                f"model.semantic_global_tokens {c.semantic_global_tokens})); match encode.anchor_frames "
                "and encode.siglip_pool_grid")

    def assemble(self, noisy_target: torch.Tensor, source: torch.Tensor | None = None,
                 semantic_noisy: torch.Tensor | None = None) -> Sequence:
        """Embed and concatenate [source ; semantic ; target] with their RoPE and type ids."""
        grid = self._grid(noisy_target)
        parts, cos, sin, ids, slices = [], [], [], [], {}
        start = 0

        def add(name: str, tokens: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], type_id: int):
            nonlocal start
            if self.type_embedding is not None:
                tokens = tokens + self.type_embedding[type_id].to(tokens.dtype)
            parts.append(tokens)
            cos.append(rotary[0])
            sin.append(rotary[1])
            ids.append(torch.full((tokens.shape[1],), type_id, dtype=torch.long, device=tokens.device))
            slices[name] = slice(start, start + tokens.shape[1])
            start += tokens.shape[1]

        target_rotary = self.wan.rope(noisy_target)
        if source is not None:
            if source.shape[0] != noisy_target.shape[0]:
                raise ValueError(f"source batch {source.shape[0]} != target batch {noisy_target.shape[0]}")
            # Same grid, no shift: Wan's rope depends on the latent shape only.
            add("source", self.patchify(source), self.wan.rope(source), SOURCE)
        if semantic_noisy is not None:
            self.check_semantic(semantic_noisy)
            sem = self.semantic_embed(semantic_noisy)
            add("semantic", sem, self.semantic_rotary(sem.shape[1], grid, target_rotary[0]), SEMANTIC)
        add("target", self.patchify(noisy_target), target_rotary, TARGET)
        hidden = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        rotary = (torch.cat(cos, dim=1), torch.cat(sin, dim=1)) if len(cos) > 1 else (cos[0], sin[0])
        return Sequence(hidden.contiguous(), rotary, torch.cat(ids), slices, grid)

    def pad_text(self, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Zero the padding and pad/trim to ``cfg.text_len`` tokens, as Wan's pipeline does."""
        text = text * text_mask[..., None].to(text.dtype)
        n = self.cfg.text_len
        if text.shape[1] >= n:
            return text[:, :n]
        return F.pad(text, (0, 0, 0, n - text.shape[1]))

    def condition(self, timestep: torch.Tensor, text: torch.Tensor):
        """(temb, timestep_proj, context) from Wan's condition embedder; with
        ``timestep_embedding_fp64`` the sinusoid is computed in float64 first (the official code:
        at t ~ 1000 the fastest frequency turns float32 rounding of t*freq into ~1e-4 errors)."""
        ce = self.wan.condition_embedder
        if not self.cfg.timestep_embedding_fp64:
            temb, proj, context, _ = ce(timestep, text)
            return temb, proj, context
        half = ce.timesteps_proj.num_channels // 2
        freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=timestep.device) / half)
        angles = torch.outer(timestep.double(), freqs)
        sinusoid = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
        sinusoid = sinusoid.to(next(ce.time_embedder.parameters()).dtype)
        temb = ce.time_embedder(sinusoid).type_as(text)
        return temb, ce.time_proj(ce.act_fn(temb)), ce.text_embedder(text)

    # ------------------------------------------------------------ forward
    def forward(self, noisy_target: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor, source: torch.Tensor | None = None,
                semantic_noisy: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Velocity of the target [B, C, T, H, W] and the semantic head's prediction [B, S, Dsem]
        (None without semantic tokens or head). ``timestep`` is sigma * 1000, one per sample."""
        wan = self.wan
        seq = self.assemble(noisy_target, source, semantic_noisy)
        temb, timestep_proj, context = self.condition(timestep, self.pad_text(text, text_mask))
        timestep_proj = timestep_proj.unflatten(1, (6, -1))  # [B, 6, D]: one modulation per sample

        hidden = seq.hidden
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                hidden = checkpoint(block, hidden, context, timestep_proj, seq.rotary, use_reentrant=False)
            else:
                hidden = block(hidden, context, timestep_proj, seq.rotary)

        semantic_pred = None
        if "semantic" in seq.slices and self.semantic_head is not None:
            semantic_pred = self.semantic_head(hidden[:, seq.slices["semantic"]])

        target = hidden[:, seq.slices["target"]]
        shift, scale = (wan.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        target = (wan.norm_out(target.float()) * (1 + scale) + shift).type_as(target)
        velocity = self.unpatchify(wan.proj_out(target), seq.target_grid)
        return velocity, semantic_pred
