"""The three encoders of the pre-computation, loaded once from local directories.

- Wan2.1 VAE (diffusers ``AutoencoderKLWan``): clips [T, H, W, 3] uint8 -> the posterior mean,
  normalised per channel with the checkpoint's ``latents_mean`` / ``latents_std`` (as Wan's
  pipelines do), shape [16, (T - 1) / 4 + 1, H / 8, W / 8].
- SigLIP vision tower (transformers ``SiglipVisionModel`` + its image processor): each anchor frame
  -> its patch grid (27x27 for so400m-patch14-384) average-pooled to ``siglip_pool_grid`` squared
  local tokens (row-major), then the pooled (attention-head) output as one global token.
- umT5 encoder (transformers ``UMT5EncoderModel`` + tokenizer): the final instruction -> its hidden
  states without padding (length = the attention mask's sum), truncated at ``text_max_length``.

The same code loads a user's real checkpoints and the tiny random ones the tests and the demo
build (``pipeline.curate.demo.tiny_encoders``): nothing here knows which it is, except that a directory
holding a ``TINY_MODEL.json`` with ``random_init: true`` is reported as random weights.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from pipeline import devices
from pipeline.config_base import ConfigError

TINY_MARKER = "TINY_MODEL.json"

# (config field, what it must hold, the usual place of the real checkpoint)
_MODEL_FIELDS = {
    "vae_path": ("a diffusers AutoencoderKLWan directory (config.json + weights)",
                 "Wan2.1-T2V-14B-Diffusers/vae"),
    "siglip_path": ("a SigLIP checkpoint directory with its preprocessor_config.json",
                    "siglip-so400m-patch14-384"),
    "text_encoder_path": ("a UMT5EncoderModel directory", "Wan2.1-T2V-14B-Diffusers/text_encoder"),
    "tokenizer_path": ("the umT5 tokenizer directory", "Wan2.1-T2V-14B-Diffusers/tokenizer"),
}


def model_dirs(cfg) -> dict[str, Path]:
    """The model directories the stage needs (``cfg``: EncodeConfig), resolved; a missing or unset
    one raises ConfigError naming its field. The tokenizer defaults to the text encoder's directory."""
    wanted = ["vae_path", "siglip_path"] + (["text_encoder_path", "tokenizer_path"] if cfg.text else [])
    out, problems = {}, []
    for name in wanted:
        value = getattr(cfg, name)
        if name == "tokenizer_path" and value is None:
            value = cfg.text_encoder_path
        what, where = _MODEL_FIELDS[name]
        if value is None:
            problems.append(f"encode.{name}: not set; point it at {what} (e.g. .../{where})"
                            + (" or set encode.text: false" if name == "text_encoder_path" else ""))
            continue
        path = Path(value).expanduser().resolve()
        if not path.is_dir():
            problems.append(f"encode.{name}: {value} is not a directory; point it at {what} "
                            f"(e.g. .../{where})")
        elif name != "tokenizer_path" and not (path / "config.json").exists():
            problems.append(f"encode.{name}: {value} has no config.json; point it at {what} "
                            f"(e.g. .../{where})")
        out[name] = path
    if problems:
        raise ConfigError("\n".join(problems))
    return out


def is_random_init(path: Path) -> bool:
    marker = Path(path) / TINY_MARKER
    if not marker.exists():
        return False
    try:
        return bool(json.loads(marker.read_text()).get("random_init", False))
    except ValueError:
        return False


def dir_identity(path: Path) -> dict:
    """What the fingerprint remembers of a model directory: its config and its files' names and
    sizes (cheap; a different checkpoint in the same place changes it)."""
    path = Path(path)
    config = path / "config.json"
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name != TINY_MARKER)
    return {"path": str(path),
            "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest() if config.exists() else None,
            "files": [[str(p.relative_to(path)), p.stat().st_size] for p in files]}


def models_record(cfg) -> dict:
    """The ``models`` JSON of every row: where each encoder came from and whether it is random."""
    dirs = model_dirs(cfg)
    rec = {"vae": {"path": str(dirs["vae_path"]), "random_init": is_random_init(dirs["vae_path"])},
           "siglip": {"path": str(dirs["siglip_path"]), "random_init": is_random_init(dirs["siglip_path"])},
           "text": None}
    if cfg.text:
        rec["text"] = {"path": str(dirs["text_encoder_path"]), "tokenizer": str(dirs["tokenizer_path"]),
                       "random_init": is_random_init(dirs["text_encoder_path"])}
    return rec


def resolve_device(device: str) -> torch.device:
    return devices.resolve_device(device, "encode.device")


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """encode.dtype on ``device`` (the encode stage records it in its fingerprint)."""
    return devices.resolve_dtype(dtype, device, "encode.dtype")


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _load(cls, field: str, dirs: dict[str, Path], **kwargs):
    """``cls.from_pretrained`` of a local directory, quietly (a full SigLIP checkpoint lists every
    text-tower weight as unused), but failing, naming the field, when weights of ``cls`` are
    missing: a model left partly random must never encode a corpus unnoticed."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        # safetensors only: a checkpoint directory is data, never code to unpickle
        model, info = cls.from_pretrained(dirs[field], output_loading_info=True, use_safetensors=True, **kwargs)
    except (OSError, ValueError) as e:
        raise ConfigError(f"encode.{field}: {dirs[field]} does not load as {cls.__name__} "
                          f"(safetensors weights expected): {str(e).splitlines()[0][:300]}") from None
    finally:
        hf_logging.set_verbosity(level)
    missing = list(info.get("missing_keys") or [])
    if missing:
        raise ConfigError(f"encode.{field}: {dirs[field]} lacks {len(missing)} weights of {cls.__name__} "
                          f"(e.g. {', '.join(sorted(missing)[:3])}); is it the right checkpoint?")
    return model


class Encoders:
    """VAE, SigLIP and umT5 loaded once (per Ray actor); batched, no-grad encoding calls."""

    def __init__(self, cfg):
        from diffusers import AutoencoderKLWan
        from transformers import AutoImageProcessor, AutoTokenizer, SiglipVisionModel, UMT5EncoderModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.cfg = cfg
        dirs = model_dirs(cfg)
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = False  # same algorithms every run: same bytes
        self.vae = _load(AutoencoderKLWan, "vae_path", dirs, torch_dtype=self.dtype).to(self.device).eval()
        if cfg.vae_tiling:
            self.vae.enable_tiling()
        if cfg.vae_slicing:
            self.vae.enable_slicing()
        vc = self.vae.config
        self.latents_mean = torch.tensor(vc.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
        self.latents_std = torch.tensor(vc.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)
        if vc.z_dim != cfg.latent_channels:
            raise ConfigError(f"encode.vae_path: the VAE has {vc.z_dim} latent channels, "
                              f"encode.latent_channels says {cfg.latent_channels}")
        # A SigLIP release is a full SiglipModel: its text tower's weights are simply not loaded.
        self.siglip = _load(SiglipVisionModel, "siglip_path", dirs, dtype=self.dtype).to(self.device).eval()
        self.processor = AutoImageProcessor.from_pretrained(dirs["siglip_path"])
        self.text_model = self.tokenizer = None
        if cfg.text:
            self.tokenizer = AutoTokenizer.from_pretrained(dirs["tokenizer_path"])
            self.text_model = _load(UMT5EncoderModel, "text_encoder_path", dirs,
                                    dtype=self.dtype).to(self.device).eval()
        self.models = models_record(cfg)

    # ---------------------------------------------------------------- VAE
    def _to_pixels(self, clips: list[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack(clips)).to(self.device)  # [B, T, H, W, 3] uint8
        x = x.permute(0, 4, 1, 2, 3).to(self.dtype)
        return x / 127.5 - 1.0

    @torch.inference_mode()
    def vae_latents(self, clips: list[np.ndarray]) -> list[torch.Tensor]:
        """Normalised latents (float32, CPU) of uint8 clips [T, H, W, 3], batched by shape."""
        out: list[torch.Tensor | None] = [None] * len(clips)
        by_shape: dict[tuple, list[int]] = {}
        for i, c in enumerate(clips):
            by_shape.setdefault(c.shape, []).append(i)
        for shape in sorted(by_shape):
            for idx in _chunks(by_shape[shape], self.cfg.batch_size):
                mu = self.vae.encode(self._to_pixels([clips[i] for i in idx])).latent_dist.mode()
                z = (mu.float().cpu() - self.latents_mean) / self.latents_std
                for k, i in enumerate(idx):
                    out[i] = z[k].clone()
        return out

    @torch.inference_mode()
    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1], [B, 3, T, H, W], of normalised latents [B, 16, T_lat, h, w]."""
        z = latents.float() * self.latents_std + self.latents_mean
        return self.vae.decode(z.to(self.device, self.dtype)).sample.float().cpu()

    # ---------------------------------------------------------------- SigLIP
    @torch.inference_mode()
    def semantic_tokens(self, frames: list[np.ndarray]) -> torch.Tensor:
        """[len(frames), grid^2 + 1, D] (float32, CPU) for uint8 frames [H, W, 3]."""
        g = self.cfg.siglip_pool_grid
        outs = []
        for chunk in _chunks(frames, self.cfg.batch_size):
            pixels = self.processor(images=list(chunk), return_tensors="pt")["pixel_values"]
            res = self.siglip(pixel_values=pixels.to(self.device, self.dtype))
            patches = res.last_hidden_state.float()  # [B, P, D]
            b, p, d = patches.shape
            side = int(round(p ** 0.5))
            if side * side != p:
                raise ValueError(f"SigLIP gave {p} patch tokens, not a square grid")
            grid = patches.transpose(1, 2).reshape(b, d, side, side)
            local = torch.nn.functional.adaptive_avg_pool2d(grid, g).flatten(2).transpose(1, 2)
            pooled = res.pooler_output
            glob = (pooled.float() if pooled is not None else patches.mean(dim=1)).unsqueeze(1)
            outs.append(torch.cat([local, glob], dim=1).cpu())
        return torch.cat(outs)

    # ---------------------------------------------------------------- umT5
    @torch.inference_mode()
    def text_embeddings(self, texts: list[str]) -> list[torch.Tensor]:
        """Unpadded [L, D] (float32, CPU) per text."""
        out = []
        for chunk in _chunks(texts, self.cfg.batch_size):
            tok = self.tokenizer(list(chunk), padding="longest", truncation=True,
                                 max_length=self.cfg.text_max_length, return_tensors="pt")
            mask = tok["attention_mask"]
            hidden = self.text_model(input_ids=tok["input_ids"].to(self.device),
                                     attention_mask=mask.to(self.device)).last_hidden_state.float().cpu()
            out += [hidden[i, :int(mask[i].sum())].clone() for i in range(len(chunk))]
        return out
