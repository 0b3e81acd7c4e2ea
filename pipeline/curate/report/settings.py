"""The `report` config section: the corpus the cost model prices, and the time to finish it in.

Default corpus sizes are the published sizes of the nine datasets. ``CORPUS_SOURCES`` says where
each number comes from; "estimate" means the dataset's name or card gives only a round figure.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from pipeline.config_base import Strict

# (rows, where the number comes from)
CORPUS_SOURCES: dict[str, tuple[int, str]] = {
    "koala": (36_060_536, "rows of Koala_36M_{1..10}.csv (DATASETS.md, likely)"),
    "x2edit": (6_026_214, "pairs in the 1,396 tars (DATASETS.md, likely)"),
    "openve": (3_000_000, "estimate: the dataset's name (OpenVE-3M)"),
    "gpt_image_edit": (1_500_000, "estimate: the dataset's name (GPT-Image-Edit-1.5M)"),
    "ditto": (1_000_000, "estimate: the card's 'one million' triplets (Ditto-1M)"),
    "reco": (500_000, "estimate: the paper's '500K instruction-video pairs' (ReCo, arXiv 2512.17650)"),
    "pico_banana": (400_000, "estimate: the dataset's name (Pico-Banana-400K, all splits)"),
    "nhr_edit": (358_000, "estimate: '358K rows' of the parquet form (DATASETS.md, likely)"),
    "motionbench": (5_000, "estimate: the caption split's card says 1K-10K videos"),
}


class ReportConfig(Strict):
    # Samples per dataset that the cost model prices (datasets left out are not priced).
    corpus: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: {k: v[0] for k, v in CORPUS_SOURCES.items()})
    # The cluster is sized to finish every stage of the whole corpus in this many hours.
    finish_in_hours: float = Field(168.0, gt=0, description="hours the whole corpus should take")
    # Share of an allocated core / GPU that does useful work (scheduling gaps, stragglers, I/O waits).
    utilisation: float = Field(0.8, gt=0, le=1, description="useful fraction of allocated cores/GPUs")
    # GPUs behind judge.urls when the judge is an external server the runner cannot see.
    judge_server_gpus: int | None = Field(None, ge=0, description="GPUs of the external judge server(s)")
    # Samples reaching each stage: all (every sample through every stage: an upper bound), or
    # measured (this run's per-dataset share of records that reached the stage).
    reach: Literal["all", "measured"] = "all"
    # Examples shown per threshold side in the contact sheets.
    examples_per_side: int = Field(2, ge=1, le=8)
