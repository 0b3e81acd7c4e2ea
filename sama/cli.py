"""`sama`: train the SAMA transformer on the curation shards (and sample / export it).

Run under torchrun for several processes: ``torchrun --nproc_per_node 8 -m sama.cli train -c ...``.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from sama.cli_boundary import SamaErrorBoundary, device_option, version_option

app = typer.Typer(
    help="SAMA trainer: Stage 0 / Stage 1 training on the shards, sampling and export.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=SamaErrorBoundary,  # user errors of every command: one line, exit 2 (sama/cli_boundary.py)
)


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=version_option,
                                 help="print the version and exit"),
) -> None:
    """SAMA trainer: Stage 0 / Stage 1 training on the shards, sampling and export."""


def _fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


@app.command()
def train(
    config: Path = typer.Option(..., "--config", "-c", help="trainer config (YAML), e.g. configs/train/stage0.yaml"),
    set_: List[str] = typer.Option([], "--set", help="override a config field, e.g. --set optim.lr=1e-4"),
    max_steps: Optional[int] = typer.Option(None, min=1, help="shortcut for --set train.max_steps=N"),
) -> None:
    """Train (or resume: checkpoint.resume auto continues from out_dir's latest checkpoint)."""
    from sama.config import load_trainer_config

    overrides = list(set_) + ([f"train.max_steps={max_steps}"] if max_steps else [])
    cfg = load_trainer_config(config, overrides)
    from sama.train import train as run_training

    run_training(cfg)


@app.command()
def sample(
    checkpoint: Path = typer.Option(..., help="an export dir, a training checkpoint, or a run's out_dir (latest)"),
    source: Path = typer.Option(..., help="the video (or image) to edit"),
    instruction: str = typer.Option(..., help="the edit instruction"),
    out: Path = typer.Option(..., help="the H.264 mp4 to write"),
    vae: Path = typer.Option(..., help="diffusers AutoencoderKLWan dir (e.g. Wan2.1-T2V-14B-Diffusers/vae)"),
    text_encoder: Path = typer.Option(..., help="UMT5EncoderModel dir (e.g. .../text_encoder)"),
    tokenizer: Optional[Path] = typer.Option(None, help="umT5 tokenizer dir; default: the text encoder's"),
    steps: int = typer.Option(50, min=1, help="Euler steps"),
    guidance: float = typer.Option(5.0, help="classifier-free guidance scale (1: off)"),
    negative_prompt: str = typer.Option("", help="the guidance's negative prompt"),
    shift: Optional[float] = typer.Option(None, help="timestep shift; default: the training flow.shift"),
    seed: int = typer.Option(0),
    frames: int = typer.Option(81, help="at most this many frames (4n+1), resampled to --fps"),
    fps: float = typer.Option(16.0, help="frame rate the source is resampled to (Wan2.1: 16)"),
    area: int = typer.Option(832 * 480, help="bucket area in pixels (480p class)"),
    side_multiple: int = typer.Option(32, help="bucket sides are multiples of this"),
    weights: str = typer.Option("ema", help="ema | model (training checkpoints)"),
    device: str = typer.Option("auto", callback=device_option, help="auto | cpu | cuda | cuda:N"),
    dtype: str = typer.Option("auto", help="transformer weights: auto (bfloat16 on GPU) | float32 | bfloat16"),
) -> None:
    """Edit a video with a trained model (EMA weights) and write H.264."""
    from sama.sample import sample as run_sample

    if weights not in ("ema", "model"):
        _fail(f"--weights {weights}: use ema or model")
    info = run_sample(checkpoint, source, instruction, out, vae=vae, text_encoder=text_encoder,
                      tokenizer=tokenizer, steps=steps, guidance_scale=guidance,
                      negative_prompt=negative_prompt, shift=shift, seed=seed, frames=frames, fps=fps,
                      area=area, side_multiple=side_multiple, weights=weights, device=device,
                      dtype=dtype)
    typer.echo(f"wrote {info['out']}: {info['frames']} frames at {info['bucket']}, {info['steps']} steps, "
               f"{info['weights']} weights of {info['checkpoint']}")


@app.command()
def export(
    checkpoint: Path = typer.Option(..., help="a training checkpoint, or a run's out_dir (latest)"),
    out: Path = typer.Option(..., help="the export directory to write"),
    weights: str = typer.Option("ema", help="ema | model"),
    overwrite: bool = typer.Option(False, help="replace --out if it exists"),
) -> None:
    """Write transformer/ (diffusers) + sama_modules.safetensors + sama_config.json."""
    from sama.export import export as run_export

    if weights not in ("ema", "model"):
        _fail(f"--weights {weights}: use ema or model")
    path = run_export(checkpoint, out, weights=weights, overwrite=overwrite)
    typer.echo(f"exported {weights} weights of {checkpoint} to {path}")


if __name__ == "__main__":
    app()
