"""The encode stage's settings record (``state/encoded/_fingerprint-all.json``) as older runs wrote
it, brought to today's shape before it is compared, so those workdirs resume."""
from __future__ import annotations

import json
from pathlib import Path

from manifests.io import atomic_write_json
from pipeline.stage import state_dir

_NO_LONGER_FINGERPRINTED = ("selection", "samples_per_unit")


def upgrade_record(workdir: Path) -> None:
    """A workdir encoded before re-curation was incremental fingerprinted the selection and the
    unit size: drop them from its record, so a re-threshold there is not refused either. One
    encoded while the decoder was the probe's setting recorded "none" where the probe's check was
    off, though decord decoded it: record the decoder that was used, which is what the setting now
    names."""
    path = state_dir(workdir, "encoded") / "_fingerprint-all.json"
    if path.exists():
        old = json.loads(path.read_text())
        new = {k: v for k, v in old.items() if k not in _NO_LONGER_FINGERPRINTED}
        if new.get("decoder") == "none":
            new["decoder"] = "decord"
        if new != old:
            atomic_write_json(path, new)
