"""The stage facts the report, the cost model and `curate status` read, from each stage's own
declaration (``Stage.facts``, pipeline/stage.py) in the registry's order: a new stage is priced,
counted and ordered by declaring it, not by editing tables here."""
from __future__ import annotations


def stage_order() -> list[str]:
    from pipeline.curate.registry import STAGE_ORDER

    return list(STAGE_ORDER)


def _stages():
    from pipeline.curate.registry import STAGES

    return STAGES


def gpu_stages() -> tuple[str, ...]:
    """Stages whose real deployment computes on GPUs."""
    return tuple(name for name, s in _stages().items() if s.facts.device == "gpu")


def stage_input() -> dict[str, str]:
    """{stage: the funnel step whose survivors it reads}."""
    return {name: s.facts.reaches for name, s in _stages().items()}


def stage_counts() -> dict[str, tuple[str, str, str]]:
    """{stage: (table, rows counted, samples counted)}."""
    return {name: s.facts.counts or (s.writes[0], "count(*)", "count(*)") for name, s in _stages().items()}
