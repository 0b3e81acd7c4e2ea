"""The ``probe:`` section. The unit size (``run.rows_per_task``) and the decoder (``media.decoder``)
are shared settings and live in shared sections; ``probe.rows_per_task`` and ``probe.decode_check``
are their old names, still accepted (``pipeline/curate/config.py`` maps them)."""
from __future__ import annotations

from pipeline.config_base import Strict


class ProbeConfig(Strict):
    # false: metadata only (PyAV demux, image headers), for a fast first pass over a corpus.
    decode: bool = True


def decode_check(cfg) -> str:
    """The probe's decode check as the probe core names it: the shared decoder, or none."""
    return cfg.media.decoder if cfg.probe.decode else "none"
