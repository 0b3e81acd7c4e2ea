"""Every stage, in pipeline order: the one place the runner finds them."""
from __future__ import annotations

from filters.stage import STAGE as FILTER
from pipeline.stage import Stage
from stages.encode.stage import STAGE as ENCODE
from stages.ingest.stage import STAGE as INGEST
from stages.judge.stage import STAGE as JUDGE
from stages.probe.stage import STAGE as PROBE
from stages.screen.stage import STAGE as SCREEN
from stages.shard.stage import STAGE as SHARD

STAGES: dict[str, Stage] = {s.name: s for s in (INGEST, PROBE, SCREEN, JUDGE, FILTER, ENCODE, SHARD)}
STAGE_ORDER = list(STAGES)
