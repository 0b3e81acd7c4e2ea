"""The official SAMA code's data conventions as options: the "[Video edit] " instruction prefix,
the anchor frame (first | middle | uniform), and the public pretext preset (temporal_block cube,
0.5x / 2x speed, 4x4x4 tubes) beside the paper's default."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.curate.config import EncodeConfig, PretextConfig
from stages.encode.core import _text
from stages.encode.decode import anchor_indices
from stages.pretext import speed_factor_for, speed_plan


def test_public_pretext_preset_and_paper_default():
    paper = PretextConfig()
    assert (paper.preset, paper.cube_layout, paper.speed_factors, paper.tube_grid) == ("paper", "cubes", None, (2, 2, 2))
    public = PretextConfig(preset="public")
    assert (public.cube_layout, public.speed_factors, public.tube_grid) == ("temporal_block", [0.5, 2.0], (4, 4, 4))
    assert PretextConfig(preset="public", tube_grid=(2, 2, 2)).tube_grid == (2, 2, 2)  # explicit wins
    with pytest.raises(ValidationError, match="speed_factors"):
        PretextConfig(speed_factors=[1.0])


def test_speed_factor_is_drawn_per_sample_from_the_seed():
    public = PretextConfig(preset="public")
    draws = [speed_factor_for(public, 7, f"ds:{i}") for i in range(64)]
    assert draws == [speed_factor_for(public, 7, f"ds:{i}") for i in range(64)]
    assert set(draws) == {0.5, 2.0}
    assert draws != [speed_factor_for(public, 8, f"ds:{i}") for i in range(64)]
    assert speed_factor_for(PretextConfig(), 7, "ds:0") == 2.0
    target, source = speed_plan(100, 32.0, 16.0, 17, 0.5)  # a slowed source: every native frame twice
    assert len(target) == len(source) == 17 and source[:5] == [0, 1, 2, 3, 4] and target[:3] == [0, 2, 4]


def test_anchor_modes():
    assert anchor_indices(81, 1) == [40] == anchor_indices(81, 1, "middle")
    assert anchor_indices(81, 1, "first") == [0]
    assert anchor_indices(81, 3, "first") == [0, 40, 80]
    assert anchor_indices(1, 1, "first") == [0] == anchor_indices(1, 1)
    assert EncodeConfig().anchor == "uniform" and EncodeConfig(anchor="first").anchor == "first"


def test_instruction_prefix_goes_on_edit_instructions_only():
    sample = {"instruction": "Make the sky red.", "caption": "a beach"}
    cfg = PretextConfig()
    assert _text(sample, "edit", cfg, "[Video edit] ") == ("[Video edit] Make the sky red.", None)
    assert _text(sample, "edit", cfg) == ("Make the sky red.", None)
    assert not _text(sample, "cube", cfg, "[Video edit] ")[0].startswith("[Video edit]")
    assert EncodeConfig().instruction_prefix == ""
