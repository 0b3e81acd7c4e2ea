"""The ``probe:`` section."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.config_base import Strict


class ProbeConfig(Strict):
    rows_per_task: int = Field(1000, ge=1, description="samples probed by one Ray task")
    # The decoder that must be able to read a clip; the encode stage uses the same one.
    decode_check: Literal["decord", "pyav", "none"] = "decord"
