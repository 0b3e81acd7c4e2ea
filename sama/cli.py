"""`sama`: train the SAMA transformer on the curation shards (and sample / export it).

Run under torchrun for several processes: ``torchrun --nproc_per_node 8 -m sama.cli train -c ...``.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from pipeline.cli_base import fail, version_option
from sama.cli_boundary import SamaErrorBoundary, device_option

app = typer.Typer(
    help="SAMA trainer: Stage 0 / Stage 1 training on the shards, sampling and export.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=SamaErrorBoundary,  # user errors of every command: one line, exit 2 (sama/cli_boundary.py)
)


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=version_option("sama"),
                                 help="print the version and exit"),
) -> None:
    """SAMA trainer: Stage 0 / Stage 1 training on the shards, sampling and export."""


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
    checkpoint: Path = typer.Option(..., help="an export dir, a training checkpoint, a run's out_dir (latest), "
                                              "or the released SAMA .safetensors (with --base)"),
    source: Path = typer.Option(..., help="the video (or image) to edit"),
    instruction: str = typer.Option(..., help="the edit instruction"),
    out: Path = typer.Option(..., help="the H.264 mp4 to write"),
    vae: Path = typer.Option(..., help="diffusers AutoencoderKLWan dir (e.g. Wan2.1-T2V-14B-Diffusers/vae)"),
    text_encoder: Path = typer.Option(..., help="UMT5EncoderModel dir (e.g. .../text_encoder)"),
    tokenizer: Optional[Path] = typer.Option(None, help="umT5 tokenizer dir; default: the text encoder's"),
    base: Optional[Path] = typer.Option(None, help="the Wan2.1-T2V base (diffusers or original layout) the "
                                                   "released SAMA file is loaded over"),
    preset: str = typer.Option("none", help="none | official: the released inference's prompt prefix "
                                            "'[Video edit] ', negative '[Video edit]', first 49 native-fps "
                                            "frames padded to 4n+1, CFG 5, 50 steps, shift 5, seed 1, tiled "
                                            "decode, its sigma schedule (options given explicitly win)"),
    steps: Optional[int] = typer.Option(None, min=1, help="Euler steps [50]"),
    guidance: Optional[float] = typer.Option(None, help="classifier-free guidance scale (1: off) [5.0]"),
    negative_prompt: Optional[str] = typer.Option(None, help="the guidance's negative prompt ['']"),
    prompt_prefix: Optional[str] = typer.Option(None, help="prepended to the instruction ['']"),
    shift: Optional[float] = typer.Option(None, help="timestep shift; default: the training flow.shift"),
    seed: Optional[int] = typer.Option(None, help="[0]"),
    frames: Optional[int] = typer.Option(None, help="at most this many frames (4n+1), resampled to --fps [81]"),
    fps: float = typer.Option(16.0, help="frame rate the source is resampled to (Wan2.1: 16)"),
    native_fps: Optional[bool] = typer.Option(None, "--native-fps/--resample-fps",
                                              help="read frames at the source's own rate, pad to 4n+1"),
    tiled: Optional[bool] = typer.Option(None, "--tiled/--no-tiled", help="tiled VAE decode (full-size video)"),
    round_timesteps_bf16: bool = typer.Option(False, help="feed bf16-rounded timesteps, as the released "
                                                          "bf16 pipeline does"),
    area: int = typer.Option(832 * 480, help="bucket area in pixels (480p class)"),
    side_multiple: int = typer.Option(32, help="bucket sides are multiples of this"),
    weights: str = typer.Option("ema", help="ema | model (training checkpoints)"),
    device: str = typer.Option("auto", callback=device_option, help="auto | cpu | cuda | cuda:N"),
    dtype: str = typer.Option("auto", help="transformer weights: auto (bfloat16 on GPU) | float32 | bfloat16"),
) -> None:
    """Edit a video with a trained model (EMA weights) or the released SAMA weights; write H.264."""
    from sama.sample import OFFICIAL_SAMPLING
    from sama.sample import sample as run_sample

    if weights not in ("ema", "model"):
        fail(f"--weights {weights}: use ema or model")
    if preset not in ("none", "official"):
        fail(f"--preset {preset}: use none or official")
    given = {"steps": steps, "guidance_scale": guidance, "negative_prompt": negative_prompt, "seed": seed,
             "frames": frames, "prompt_prefix": prompt_prefix, "native_fps": native_fps, "tiled": tiled,
             "shift": shift}
    # what neither the preset nor the command line sets keeps sama.sample.sample's own default
    chosen = {**(OFFICIAL_SAMPLING if preset == "official" else {}),
              **{k: v for k, v in given.items() if v is not None}}
    info = run_sample(checkpoint, source, instruction, out, vae=vae, text_encoder=text_encoder,
                      tokenizer=tokenizer, fps=fps, area=area, side_multiple=side_multiple, weights=weights,
                      device=device, dtype=dtype, base=base, round_timesteps_bf16=round_timesteps_bf16,
                      **chosen)
    typer.echo(f"wrote {info['out']}: {info['frames']} frames at {info['bucket']}, {info['steps']} steps, "
               f"{info['weights']} weights of {info['checkpoint']}")


@app.command(name="import")
def import_(
    weights: Path = typer.Option(..., help="the released SAMA .safetensors (official key names)"),
    base: Path = typer.Option(..., help="Wan2.1-T2V base: a diffusers WanTransformer3DModel dir or the original "
                                        "layout (config.json + diffusion_pytorch_model-*.safetensors)"),
    out: Path = typer.Option(..., help="the export directory to write"),
    overwrite: bool = typer.Option(False, help="replace --out if it exists"),
) -> None:
    """Convert the released SAMA weights over their base into an export (model.preset official)."""
    from sama.export import import_official

    path = import_official(weights, base, out, overwrite=overwrite)
    typer.echo(f"imported {weights} over {base} to {path}")


@app.command()
def parity(
    fixture: Path = typer.Option(..., help="a fixture dir: model.safetensors (official keys), config.json, "
                                           "cases.safetensors (e.g. ../shared/sama_parity)"),
    forward_tol: float = typer.Option(1e-4, help="max abs error allowed on forward outputs"),
    sampling_tol: float = typer.Option(5e-4, help="max abs error allowed on the sampling run"),
) -> None:
    """Our model (loaded through `sama import`'s path) against official-code outputs; exit 1 above tolerance."""
    import torch

    from sama.parity import run

    torch.use_deterministic_algorithms(True)
    report = run(fixture, forward_tol, sampling_tol)
    for name, err, tol in report["checks"]:
        typer.echo(f"{name:34s} max abs err {err:.3e}  tol {tol:.0e}  {'ok' if err <= tol else 'FAIL'}")
    typer.echo("parity: ok" if report["ok"] else "parity: FAILED")
    if not report["ok"]:
        raise typer.Exit(1)


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
        fail(f"--weights {weights}: use ema or model")
    path = run_export(checkpoint, out, weights=weights, overwrite=overwrite)
    typer.echo(f"exported {weights} weights of {checkpoint} to {path}")


if __name__ == "__main__":
    app()
