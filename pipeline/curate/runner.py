"""The stage runner: which stages to run, Ray, and one ``run_stage`` per stage (pipeline.stage);
the stages themselves come from ``pipeline.curate.registry``."""
from __future__ import annotations

from pathlib import Path

from pipeline.curate.config import Config
from pipeline.config_base import ConfigError
from pipeline.progress import console
from pipeline.ray_runtime import init_ray
from pipeline.curate.registry import STAGE_ORDER, STAGES
from pipeline.curate.report.timings import StageClock
from pipeline.stage import StageReport, check_dataset_roots, print_report, run_stage


def resolve_stages(stage: str) -> list[str]:
    """``all``, one stage, or a comma-separated list (run in pipeline order)."""
    if stage == "all":
        return list(STAGE_ORDER)
    names = [s.strip() for s in stage.split(",") if s.strip()]
    unknown = [s for s in names if s not in STAGES]
    if unknown or not names:
        raise ConfigError(f"--stage {stage!r}: unknown stage; choose from {', '.join(STAGE_ORDER)}, "
                          f"a comma-separated list of them, or all")
    return [s for s in STAGE_ORDER if s in names]


def run(cfg: Config, stage: str = "all", workdir: Path | None = None, limit: int | None = None,
        ray_address: str | None = None, overwrite: bool = False) -> list[StageReport]:
    # Absolute: Ray workers do not share the driver's cwd (nothing a run writes may depend on how the
    # workdir is spelled; the tables name parts relative to it, see manifests/repeats.py).
    workdir = Path(workdir or cfg.run.workdir).absolute()
    stages = resolve_stages(stage)  # before anything is written: a bad --stage leaves no workdir
    if any(STAGES[name].needs_media for name in stages):
        check_dataset_roots(cfg)  # a missing root fails before Ray starts or the workdir is made
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(cfg.model_dump_json(indent=2))
    where = init_ray(ray_address or cfg.ray.address, cfg.ray.num_cpus)
    console.print(f"run: {', '.join(stages)} in {workdir} on {where}")
    reports = []
    for name in stages:
        with StageClock(workdir, name, cfg, overwrite, remote=where.startswith("Ray cluster at")) as clock:
            report = clock.report = run_stage(STAGES[name], cfg, workdir, limit, overwrite)
        print_report(report)
        reports.append(report)
    return reports
