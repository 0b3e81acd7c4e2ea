"""Every stage, in pipeline order: the one place the runner finds them. Importing it registers
every stage's tables (``manifests.tables``), in the same order, for the catalog and the runner."""
from __future__ import annotations

from filters.stage import STAGE as FILTER
from manifests.tables import register
from pipeline.stage import Stage
from stages.encode.stage import STAGE as ENCODE
from stages.ingest.stage import STAGE as INGEST
from stages.judge.stage import STAGE as JUDGE
from stages.probe.stage import STAGE as PROBE
from stages.screen.stage import STAGE as SCREEN
from stages.shard.stage import STAGE as SHARD

STAGES: dict[str, Stage] = {s.name: s for s in (INGEST, PROBE, SCREEN, JUDGE, FILTER, ENCODE, SHARD)}
STAGE_ORDER = list(STAGES)


def _check_declarations(stage: Stage) -> None:
    """A stage declares exactly the tables it writes, each naming it as the writer."""
    names = tuple(t.name for t in stage.tables)
    if names != stage.writes:
        raise ValueError(f"stage {stage.name}: declares tables {names}, writes {stage.writes}")
    for t in stage.tables:
        if t.stage != stage.name:
            raise ValueError(f"stage {stage.name}: its table {t.name} names stage {t.stage} as its writer")


for _stage in STAGES.values():
    _check_declarations(_stage)
    register(*_stage.tables)
