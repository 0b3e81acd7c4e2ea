"""The demo config's paths, moved to the workdir a user names (`curate demo --workdir X`)."""
from __future__ import annotations

from pathlib import Path

from pipeline.config_base import read_document


def relocated_paths(config: Path, workdir: Path) -> list[str]:
    """Overrides that move the config's paths under its own ``run.workdir`` into ``workdir``.

    The demo config names its corpus and models under runs/demo; a demo in another workdir builds
    them there, and must not read (or fail on) runs/demo's."""
    doc = read_document(config, [], example_file="configs/demo.yaml", sections_hint="run, datasets, ...",
                        example_set="run.seed=3")
    home = Path((doc.get("run") or {}).get("workdir") or "runs/demo")
    if Path(workdir) == home:
        return []
    overrides = []
    for section in ("datasets", "encode"):
        for key, value in dotted_strings(doc.get(section) or {}, section):
            if Path(value).is_relative_to(home):
                overrides.append(f"{key}={Path(workdir) / Path(value).relative_to(home)}")
    return overrides


def dotted_strings(node: dict, prefix: str):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from dotted_strings(value, f"{prefix}.{key}")
        elif isinstance(value, str):
            yield f"{prefix}.{key}", value
