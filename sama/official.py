"""The released SAMA weights (github Cynthiazxy123/SAMA, a DiffSynth-Studio fork) into our model.

The official DiT is DiffSynth's ``WanModel``, whose parameter names are the original Wan2.1 ones
(``blocks.0.self_attn.q.weight``), plus three SAMA modules attached to it: ``segment_embedding``
(our ``type_embedding``), ``siglip_feat_mlp`` (our ``semantic_embed``) and ``semantic_head``.
SAMA-14B is one ``.safetensors`` loaded with ``strict=False`` over the Wan2.1-T2V-14B base, so the
base is read first and every key of the SAMA file replaces or adds to it.

The base may be a diffusers ``WanTransformer3DModel`` directory (``config.json`` + diffusers
names) or the original Wan2.1 layout (``config.json`` of ``WanModel`` + sharded
``diffusion_pytorch_model-*.safetensors`` with an index, original names). The map below is the
one diffusers' Wan conversion and DiffSynth's ``WanModelStateDictConverter`` apply; tensors
are renamed only (no transposes or splits). Tensors are read lazily, one at a time, keeping their
stored dtype, and assigned into a model built on the meta device, so importing SAMA-14B holds the
model once in its stored precision (bf16: ~28 GB), never in fp32.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

_TOP = {
    "patch_embedding.weight": "patch_embedding.weight",
    "patch_embedding.bias": "patch_embedding.bias",
    "text_embedding.0.weight": "condition_embedder.text_embedder.linear_1.weight",
    "text_embedding.0.bias": "condition_embedder.text_embedder.linear_1.bias",
    "text_embedding.2.weight": "condition_embedder.text_embedder.linear_2.weight",
    "text_embedding.2.bias": "condition_embedder.text_embedder.linear_2.bias",
    "time_embedding.0.weight": "condition_embedder.time_embedder.linear_1.weight",
    "time_embedding.0.bias": "condition_embedder.time_embedder.linear_1.bias",
    "time_embedding.2.weight": "condition_embedder.time_embedder.linear_2.weight",
    "time_embedding.2.bias": "condition_embedder.time_embedder.linear_2.bias",
    "time_projection.1.weight": "condition_embedder.time_proj.weight",
    "time_projection.1.bias": "condition_embedder.time_proj.bias",
    "head.head.weight": "proj_out.weight",
    "head.head.bias": "proj_out.bias",
    "head.modulation": "scale_shift_table",
}
_BLOCK = {  # inside blocks.N.
    "self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0", "self_attn.norm_q": "attn1.norm_q", "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k", "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0", "cross_attn.norm_q": "attn2.norm_q", "cross_attn.norm_k": "attn2.norm_k",
    "norm3": "norm2",  # the affine LayerNorm before cross-attention
    "ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2",
}
_SAMA = {  # official SAMA module -> our SamaTransformer module (not under wan.)
    "segment_embedding.weight": "type_embedding",
    "siglip_feat_mlp.norm": "semantic_embed.0", "siglip_feat_mlp.fc1": "semantic_embed.1",
    "siglip_feat_mlp.fc2": "semantic_embed.3",
    "semantic_head.norm": "semantic_head.0", "semantic_head.proj": "semantic_head.1",
}
_BLOCK_RE = re.compile(r"blocks\.(\d+)\.(.+)\.(weight|bias)$")


def wan_name(official: str) -> str | None:
    """Diffusers ``WanTransformer3DModel`` name of an original-Wan2.1 key (None: not a Wan key)."""
    if official in _TOP:
        return _TOP[official]
    if (m := re.fullmatch(r"blocks\.(\d+)\.modulation", official)):
        return f"blocks.{m[1]}.scale_shift_table"
    if (m := _BLOCK_RE.fullmatch(official)) and m[2] in _BLOCK:
        return f"blocks.{m[1]}.{_BLOCK[m[2]]}.{m[3]}"
    return None


def our_name(official: str) -> str | None:
    """Our SamaTransformer state-dict name of an official key (None: unknown key)."""
    if official in _SAMA:
        return _SAMA[official]
    head, _, leaf = official.rpartition(".")
    if head in _SAMA:
        return f"{_SAMA[head]}.{leaf}"
    name = wan_name(official)
    return None if name is None else f"wan.{name}"


def official_name(ours: str) -> str:
    """The inverse of ``our_name`` (for writing official-format files, e.g. test fixtures)."""
    inv_sama = {v: k for k, v in _SAMA.items()}
    if ours in inv_sama:
        return inv_sama[ours]
    head, _, leaf = ours.rpartition(".")
    if head in inv_sama:
        return f"{inv_sama[head]}.{leaf}"
    name = ours.removeprefix("wan.")
    inv_top = {v: k for k, v in _TOP.items()}
    if name in inv_top:
        return inv_top[name]
    if (m := re.fullmatch(r"blocks\.(\d+)\.scale_shift_table", name)):
        return f"blocks.{m[1]}.modulation"
    inv_block = {v: k for k, v in _BLOCK.items()}
    if (m := re.fullmatch(r"blocks\.(\d+)\.(.+)\.(weight|bias)", name)) and m[2] in inv_block:
        return f"blocks.{m[1]}.{inv_block[m[2]]}.{m[3]}"
    raise KeyError(f"{ours}: no official counterpart")


def diffusers_config(wan_model: dict) -> dict:
    """``WanTransformer3DModel`` kwargs of a ``WanModel`` config (original Wan2.1 config.json)."""
    need = ("dim", "num_heads", "num_layers", "ffn_dim")
    missing = [k for k in need if k not in wan_model]
    if missing:
        raise ValueError(f"the base's WanModel config lacks {missing}; give a Wan2.1 config.json")
    if wan_model.get("has_image_input") or wan_model.get("model_type", "t2v") != "t2v":
        raise ValueError("the base is an image-to-video Wan model; SAMA is built on Wan2.1-T2V")
    dim, heads = int(wan_model["dim"]), int(wan_model["num_heads"])
    if dim % heads:
        raise ValueError(f"WanModel config: dim {dim} is not a multiple of num_heads {heads}")
    return dict(patch_size=tuple(wan_model.get("patch_size", (1, 2, 2))), num_attention_heads=heads,
                attention_head_dim=dim // heads, in_channels=int(wan_model.get("in_dim", 16)),
                out_channels=int(wan_model.get("out_dim", 16)), text_dim=int(wan_model.get("text_dim", 4096)),
                freq_dim=int(wan_model.get("freq_dim", 256)), ffn_dim=int(wan_model["ffn_dim"]),
                num_layers=int(wan_model["num_layers"]), cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=float(wan_model.get("eps", 1e-6)), rope_max_seq_len=1024)


class LazyTensors:
    """name -> tensor of safetensors files, read on demand (nothing is loaded up front)."""

    def __init__(self, files: list[Path]):
        from safetensors import SafetensorError, safe_open

        self.where: dict[str, Path] = {}
        self._handles = {}
        for f in files:
            try:
                handle = safe_open(str(f), framework="pt")
            except SafetensorError as e:  # a user's file (a cut download, a Git LFS pointer): one line
                raise ValueError(f"{f}: not a readable safetensors file ({e})") from None
            self._handles[f] = handle
            for k in handle.keys():
                self.where[k] = f

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._handles[self.where[key]].get_slice(key).get_shape())

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._handles[self.where[key]].get_tensor(key)


def _weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a model directory: those its index names, else all of them."""
    indexes = sorted(directory.glob("*.safetensors.index.json"))
    if indexes:
        names = sorted(set(json.loads(indexes[0].read_text())["weight_map"].values()))
        files = [directory / n for n in names]
        absent = [str(f) for f in files if not f.is_file()]
        if absent:
            raise FileNotFoundError(f"{indexes[0]} names shards that are absent: {absent}")
        return files
    for pattern in ("diffusion_pytorch_model*.safetensors", "model*.safetensors"):
        files = sorted(directory.glob(pattern))
        if files:
            return files
    raise FileNotFoundError(f"--base {directory}: no diffusion_pytorch_model*.safetensors (nor "
                            "model*.safetensors, nor an index)")


def read_base(base: str | Path) -> tuple[dict, str, LazyTensors]:
    """(WanTransformer3DModel kwargs, "diffusers" | "original", its tensors) of a base directory."""
    from sama.model import resolve_wan_dir

    base = Path(base).expanduser()
    try:
        directory = resolve_wan_dir(base)
    except FileNotFoundError:
        raise FileNotFoundError(f"--base {base}: no config.json (nor transformer/config.json); give a "
                                "Wan2.1-T2V directory in diffusers or original layout") from None
    config = json.loads((directory / "config.json").read_text())
    tensors = LazyTensors(_weight_files(directory))
    if config.get("_class_name") == "WanTransformer3DModel":
        from diffusers import WanTransformer3DModel

        known = set(WanTransformer3DModel.load_config(directory).keys())
        kwargs = {k: v for k, v in config.items() if not k.startswith("_") and k in known}
        return kwargs, "diffusers", tensors
    return diffusers_config(config.get("wan_model", config)), "original", tensors


def weight_sources(layout: str, base: LazyTensors, sama: LazyTensors | None = None
                   ) -> tuple[dict[str, tuple[LazyTensors, str]], list[str]]:
    """Our name -> (file, its key) of every tensor of the base, then of the SAMA file (which wins),
    and the keys that have no name in our model (``base:KEY``, ``weights:KEY``)."""
    sources: dict[str, tuple[LazyTensors, str]] = {}
    unknown = []
    for label, tensors in (("base", base), ("weights", sama)):
        for key in (tensors.where if tensors is not None else ()):
            name = f"wan.{key}" if label == "base" and layout == "diffusers" else our_name(key)
            if name is None:
                unknown.append(f"{label}:{key}")
            else:
                sources[name] = (tensors, key)
    return sources, unknown


def _sama_fields(sama: LazyTensors) -> dict:
    """ModelConfig fields the SAMA file's shapes fix (SigLIP width, MLP hidden, affine norms)."""
    fields = {}
    if "siglip_feat_mlp.fc1.weight" in sama.where:
        hidden, width = sama.shape("siglip_feat_mlp.fc1.weight")
        fields.update(semantic_dim=width, semantic_mlp_hidden=hidden,
                      semantic_mlp_affine="siglip_feat_mlp.norm.weight" in sama.where)
    if "semantic_head.proj.weight" in sama.where:
        fields.update(semantic_head=True, semantic_head_affine="semantic_head.norm.weight" in sama.where)
    return fields


def load_official(weights: str | Path, base: str | Path, **model_fields):
    """SamaTransformer (model.preset official, CPU, the stored dtype) of the SAMA file over the base.

    Every model parameter must come from the base or the SAMA file, with the model's shape; a
    key of either file that the model has no place for is an error (named), as is a missing one.
    """
    from sama.config import ModelConfig
    from sama.model import SamaTransformer

    weights = Path(weights).expanduser()
    if not weights.is_file():
        raise FileNotFoundError(f"--weights {weights}: no such file (the SAMA .safetensors)")
    wan_kwargs, layout, base_t = read_base(base)
    sama_t = LazyTensors([weights])

    sources, unknown = weight_sources(layout, base_t, sama_t)

    fields = dict(preset="official", tiny=wan_kwargs, **_sama_fields(sama_t))
    fields.update(model_fields)
    cfg = ModelConfig(**fields)
    with torch.device("meta"):
        model = SamaTransformer.from_config(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    unknown += [f"{'weights' if src is sama_t else 'base'}:{key}" for name, (src, key) in sources.items()
                if name not in expected]
    missing = sorted(k for k in expected if k not in sources)
    misshaped = [f"{key} {src.shape(key)} (model {expected[name]})" for name, (src, key) in sources.items()
                 if name in expected and src.shape(key) != expected[name]]
    problems = [f"{what} ({len(keys)}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                for what, keys in (("unknown keys", sorted(set(unknown))), ("missing keys", missing),
                                   ("mis-shaped keys", misshaped)) if keys]
    if problems:
        raise ValueError(f"--weights {weights} over --base {base}: " + "; ".join(problems))
    state = {name: src[key] for name, (src, key) in sources.items()}
    model.load_state_dict(state, assign=True, strict=True)
    model.wan.rope = _fresh_rope(model.wan)  # its tables are buffers outside the state dict
    return model


def official_state(path: str | Path, model) -> dict[str, torch.Tensor]:
    """The official file's tensors under our names, checked against ``model`` (unknown and
    mis-shaped keys named); for laying the SAMA file over a model that already holds its base."""
    tensors = LazyTensors([Path(path).expanduser()])
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    unknown = [k for k in tensors.where if our_name(k) not in expected]
    misshaped = [f"{k} {tensors.shape(k)} (model {expected[our_name(k)]})" for k in tensors.where
                 if k not in unknown and tensors.shape(k) != expected[our_name(k)]]
    if unknown or misshaped:
        raise ValueError(f"train.init_from: {path}: unknown keys {unknown[:8]}, mis-shaped keys {misshaped[:8]}; "
                         "is model.preset official and model.base_path the Wan2.1 base it was trained on?")
    return {our_name(k): tensors[k] for k in tensors.where}


def _fresh_rope(wan):
    """Wan's RoPE module rebuilt on CPU (the meta-device build left its tables empty)."""
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    c = wan.config
    return WanRotaryPosEmbed(c.attention_head_dim, c.patch_size, c.rope_max_seq_len)
