"""The ``media:`` section, shared by the stages that decode media: the probe's decode check must
use the decoder the encode stage will use, or a clip could pass the probe and then fail to encode."""
from __future__ import annotations

from typing import Literal

from pipeline.config_base import Strict


class MediaConfig(Strict):
    # decord: the paper's decoder; pyav where decord is not installed or misreads a codec.
    decoder: Literal["decord", "pyav"] = "decord"
