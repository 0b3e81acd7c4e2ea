"""Ingest: one adapter per published dataset layout, mapping records into the `samples` table."""
from __future__ import annotations

from stages.ingest.base import Adapter, SourceRange

# name in the config's `datasets:` section -> adapter class (import path), filled lazily so a
# broken optional dependency of one adapter does not break the others.
ADAPTERS: dict[str, str] = {
    "ditto": "stages.ingest.ditto:DittoAdapter",
    "openve": "stages.ingest.openve:OpenVEAdapter",
    "reco": "stages.ingest.reco:ReCoAdapter",
    "koala": "stages.ingest.koala:KoalaAdapter",
    "motionbench": "stages.ingest.motionbench:MotionBenchAdapter",
    "nhr_edit": "stages.ingest.nhr_edit:NHREditAdapter",
    "gpt_image_edit": "stages.ingest.gpt_image_edit:GPTImageEditAdapter",
    "x2edit": "stages.ingest.x2edit:X2EditAdapter",
    "pico_banana": "stages.ingest.pico_banana:PicoBananaAdapter",
}


def get_adapter(name: str, cfg) -> Adapter:
    import importlib

    module, cls = ADAPTERS[name].split(":")
    return getattr(importlib.import_module(module), cls)(cfg)


__all__ = ["ADAPTERS", "Adapter", "SourceRange", "get_adapter"]
