"""The ``shard:`` section."""
from __future__ import annotations

from pydantic import Field

from pipeline.config_base import Strict


class ShardConfig(Strict):
    """WebDataset shards of the encoded keys (stages/shard)."""

    # A shard is cut before it would pass this size (a key larger than it gets a shard of its own).
    target_bytes: int = Field(1 << 30, ge=1, description="about how many bytes one shard tar holds")
    plan_batch_rows: int = Field(65536, ge=1, description="rows the planner streams from DuckDB at once")
