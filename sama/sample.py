"""``sama sample``: edit one video (or image) with a trained SAMA model and write an H.264 mp4.

The source is prepared exactly as the encode stage prepares training data (with its own functions,
stages/media/buckets.py and frames.py): frames
resampled to ``fps`` on a fixed time grid from the start, the longest 4n+1 count up to
``frames``; the 480p-class bucket nearest in log aspect ratio; resize to cover and centre-crop;
pixels to [-1, 1]; the Wan VAE posterior mean normalised by ``latents_mean`` / ``latents_std``.
The instruction goes through the umT5 tokenizer and encoder unpadded.

The Euler sampler then integrates the target (and the semantic tokens, which are generated
jointly: they are unknown at inference) from noise with the EMA weights, the VAE decodes, and
PyAV writes H.264 (libx264, yuv420p). With tiny random models the result is noise; the path is real.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.devices import resolve_device

# The encode stage's own bucket and frame rules, so a source is prepared exactly like training data.
from stages.media.buckets import fit_to_bucket, generate_buckets, nearest_bucket
from stages.media.frames import frames_that_fit, largest_4n1, plan_indices

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


# ---------------------------------------------------------------- source preparation
def frame_plan(n_native: int, native_fps: float, fps: float, max_frames: int) -> list[int]:
    """Native indices of the output frames: output frame i shows time i / fps (the encode stage's
    grid); the longest 4n+1 count up to ``max_frames`` that fits."""
    n = largest_4n1(min(frames_that_fit(n_native, native_fps, fps), max_frames))
    return plan_indices(n_native, native_fps, fps, n, count=n)


def read_source(path: str | Path, fps: float, max_frames: int) -> tuple[np.ndarray, float | None]:
    """uint8 [T, H, W, 3] RGB frames on the ``fps`` grid (T = 4n+1), and the output fps (None for
    an image, which is a 1-frame video). Read by the pipeline's media reader (stages.media.read)."""
    from stages.media.locate import MediaError
    from stages.media.read import Video, read_image

    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        try:
            return read_image(str(path)), None
        except MediaError as e:  # a missing or unreadable image: the user's --source, one line
            raise ValueError(f"--source {path}: not a readable image ({e})") from None
    try:
        video = Video(str(path), "pyav")
        idx = frame_plan(video.frames, video.fps or fps, fps, max_frames)
        return video.read(idx), fps
    except MediaError as e:
        raise ValueError(f"--source {path}: no decodable video frames ({e})") from None


def pad_4n1(frames: np.ndarray) -> np.ndarray:
    """Repeat the last frame up to the next 4n+1 count (the official inference's padding)."""
    extra = (1 - len(frames)) % 4
    return np.concatenate([frames, np.repeat(frames[-1:], extra, axis=0)]) if extra else frames


def read_source_native(path: str | Path, max_frames: int) -> tuple[np.ndarray, float | None]:
    """The official reading: the first ``max_frames`` frames at the native rate, padded to 4n+1
    with the last frame; the output keeps the native fps."""
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return read_source(path, 1.0, 1)
    from stages.media.locate import MediaError
    from stages.media.read import Video

    try:
        video = Video(str(path), "pyav")
        frames = video.read(list(range(min(video.frames, max_frames))))
    except MediaError as e:
        raise ValueError(f"--source {path}: no decodable video frames ({e})") from None
    return pad_4n1(frames), video.fps or None


def write_h264(frames: np.ndarray, path: str | Path, fps: float, crf: int = 18) -> Path:
    """uint8 [T, H, W, 3] -> H.264 mp4 (libx264, yuv420p), written to a temporary name and renamed."""
    import av
    from fractions import Fraction

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    _, h, w, _ = frames.shape
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[: h - h % 2, : w - w % 2]), format="rgb24")
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------- encoders
@dataclass
class Vae:
    model: object
    mean: torch.Tensor  # [1, 16, 1, 1, 1]
    std: torch.Tensor

    @classmethod
    def load(cls, path: str | Path, device: torch.device) -> "Vae":
        from diffusers import AutoencoderKLWan

        vae = AutoencoderKLWan.from_pretrained(Path(path).expanduser()).to(device).eval()
        c = vae.config
        view = (1, -1, 1, 1, 1)
        return cls(vae, torch.tensor(c.latents_mean, device=device).view(view),
                   torch.tensor(c.latents_std, device=device).view(view))

    @torch.no_grad()
    def encode(self, frames: np.ndarray) -> torch.Tensor:
        """Normalised posterior mean [1, 16, T_lat, H/8, W/8] of uint8 frames [T, H, W, 3]."""
        x = torch.from_numpy(frames).to(self.mean.device).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0
        mu = self.model.encode(x).latent_dist.mode().float()
        return (mu - self.mean) / self.std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """uint8 [T, H, W, 3] of normalised latents [1, 16, T_lat, h, w]."""
        z = latents.float().to(self.mean.device) * self.std + self.mean
        pixels = self.model.decode(z).sample.float().clamp(-1, 1)[0]  # [3, T, H, W]
        return ((pixels + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()


@torch.no_grad()
def encode_texts(texts: list[str], text_encoder: str | Path, tokenizer: str | Path | None,
                 max_length: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(embedding [1, L, D], mask [1, L] bool) per text: umT5 hidden states without padding."""
    from transformers import AutoTokenizer, UMT5EncoderModel

    tok = AutoTokenizer.from_pretrained(Path(tokenizer or text_encoder).expanduser())
    enc = UMT5EncoderModel.from_pretrained(Path(text_encoder).expanduser()).to(device).eval()
    out = []
    for text in texts:
        t = tok([text], truncation=True, max_length=max_length, return_tensors="pt")
        hidden = enc(input_ids=t["input_ids"].to(device),
                     attention_mask=t["attention_mask"].to(device)).last_hidden_state.float()
        out.append((hidden, torch.ones(hidden.shape[:2], dtype=torch.bool, device=device)))
    return out


# ---------------------------------------------------------------- the command
# sama sample --preset official: infer_sh/run_sama.sh of the released code (with --prompt-prefix)
OFFICIAL_SAMPLING = {"prompt_prefix": "[Video edit] ", "negative_prompt": "[Video edit]", "frames": 49,
                     "native_fps": True, "steps": 50, "guidance_scale": 5.0, "shift": 5.0, "seed": 1,
                     "tiled": True, "official_schedule": True}


def sample(checkpoint: str | Path, source: str | Path, instruction: str, out: str | Path, *,
           vae: str | Path, text_encoder: str | Path, tokenizer: str | Path | None = None,
           steps: int = 50, guidance_scale: float = 5.0, negative_prompt: str = "",
           shift: float | None = None, seed: int = 0, frames: int = 81, fps: float = 16.0,
           area: int = 832 * 480, side_multiple: int = 32, min_aspect: float = 0.5, max_aspect: float = 2.0,
           weights: str = "ema", device: str = "auto", dtype: str = "auto", progress=None,
           base: str | Path | None = None, prompt_prefix: str = "", native_fps: bool = False,
           tiled: bool = False, official_schedule: bool = False, round_timesteps_bf16: bool = False) -> dict:
    """Edit ``source`` by ``instruction``; write ``out`` (mp4). Returns what was done (dict).

    ``base``: the Wan2.1 base when ``checkpoint`` is the released SAMA file. ``native_fps``: read
    the first ``frames`` frames at the source's rate, padded to 4n+1 (the official reading).
    ``tiled``: tiled VAE decode (full-size video in bounded memory). ``official_schedule``: the
    official sampler's float32 sigmas. ``round_timesteps_bf16``: timesteps rounded as the released
    bf16 pipeline feeds them."""
    from sama.export import load_trained
    from sama.flow import euler_sample, official_sigmas
    from sama.model import cast_weights

    if not native_fps and (frames < 1 or (frames - 1) % 4):
        raise ValueError(f"--frames {frames}: must be of the form 4n+1 (e.g. 81, 49)")
    dev = resolve_device(device, "--device")
    if dtype == "auto":
        dtype = "bfloat16" if dev.type == "cuda" else "float32"
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"--dtype {dtype}: use auto, float32 or bfloat16")
    model, info = load_trained(checkpoint, weights, base=base, torch_dtype=getattr(torch, dtype))
    cast_weights(model, getattr(torch, dtype))  # bf16 halves a 14B model's memory
    model.to(dev)
    cfg, flow = model.cfg, info["flow"]

    pixels, out_fps = read_source_native(source, frames) if native_fps else read_source(source, fps, frames)
    if len(pixels) == 0:
        raise ValueError(f"--source {source}: too short for one frame at {fps:g} fps")
    bucket = nearest_bucket(pixels.shape[2], pixels.shape[1],
                            generate_buckets(area, side_multiple, min_aspect, max_aspect))
    pixels = fit_to_bucket(pixels, bucket)

    codec = Vae.load(vae, dev)
    if tiled:
        codec.model.enable_tiling()
    source_latents = codec.encode(pixels)
    (text, mask), (neg, neg_mask) = encode_texts([prompt_prefix + instruction, negative_prompt], text_encoder,
                                                 tokenizer, cfg.text_len, dev)
    shift = flow.shift if shift is None else shift

    use_semantic = info["semantic"] and model.semantic_head is not None
    generator = torch.Generator(device=dev).manual_seed(seed)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    with autocast:
        latents, _ = euler_sample(
            model, text, mask, tuple(source_latents.shape), source=source_latents,
            num_semantic_tokens=cfg.semantic_tokens if use_semantic else 0, semantic_dim=cfg.semantic_dim,
            steps=steps, shift=shift, generator=generator,
            sem_target=flow.sem_target, num_train_timesteps=flow.num_train_timesteps,
            guidance_scale=guidance_scale, negative_text=neg, negative_mask=neg_mask, callback=progress,
            sigmas=official_sigmas(steps, shift) if official_schedule else None,
            round_timesteps_bf16=round_timesteps_bf16)
    video = codec.decode(latents)
    write_h264(video, out, out_fps or fps)
    return {"out": str(out), "frames": int(video.shape[0]), "bucket": f"{bucket[0]}x{bucket[1]}",
            "latent_shape": list(source_latents.shape[1:]), "steps": steps, "checkpoint": info["source"],
            "checkpoint_step": info["step"], "weights": info["weights"], "device": str(dev), "dtype": dtype}
