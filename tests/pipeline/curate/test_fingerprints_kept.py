"""Moving the unit size and the decoder into shared sections changes no stage's fingerprint: a
workdir made with the old keys resumes under the new ones (same settings, same record)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from _encode_fixtures import model_overrides, tiny_models  # noqa: F401 (fixture)
from conftest import REPO
from pipeline.curate.config import load_config
from pipeline.curate.registry import STAGES
from pipeline.stage import Context

pytestmark = [pytest.mark.ray]

NEW = "media:\n  decoder: decord      # probe's decode check and encode's decode (decord|pyav)\n"
NEW_RUN = "  rows_per_task: 8        # samples per unit of probe, screen and vlm-filter\n"
OLD = "probe:\n  rows_per_task: 8\n  decode_check: decord\n"


def _old_demo(dest: Path) -> Path:
    """configs/demo.yaml as it was written before the shared sections (the probe's own keys)."""
    text = (REPO / "configs" / "demo.yaml").read_text()
    assert NEW in text and NEW_RUN in text  # the test follows the file: update both together
    path = dest / "old.yaml"
    path.write_text(text.replace(NEW_RUN, "").replace(NEW, OLD))
    return path


def _fingerprints(cfg, workdir: Path) -> dict:
    ctx = Context(cfg, workdir)
    return {name: json.dumps(s.fingerprint(ctx), sort_keys=True) for name, s in STAGES.items() if s.fingerprint}


def test_demo_fingerprints_are_the_same_under_old_and_new_keys(ray_session, tiny_models, tmp_path):
    models = model_overrides(tiny_models)  # encode fingerprints its model directories, which must exist
    new = load_config(REPO / "configs" / "demo.yaml", models)
    old = load_config(_old_demo(tmp_path), models)
    before, after = _fingerprints(old, tmp_path), _fingerprints(new, tmp_path)
    assert set(after) >= {"probe", "screen", "vlm-filter", "encode"} and before == after
    # the records keep their old shape: the probe's two keys, encode's decoder
    assert json.loads(after["probe"]) == {"all": {"probe": {"rows_per_task": 8, "decode_check": "decord"}}}
    assert json.loads(after["encode"])["all"]["decoder"] == "decord"
    # the check turned off is recorded as it was ("none"), and only in the probe's record
    off_old = load_config(_old_demo(tmp_path), [*models, "probe.decode_check=none"])
    off_new = load_config(REPO / "configs" / "demo.yaml", [*models, "probe.decode=false"])
    assert _fingerprints(off_old, tmp_path) == _fingerprints(off_new, tmp_path)
    assert json.loads(_fingerprints(off_new, tmp_path)["probe"])["all"]["probe"]["decode_check"] == "none"
