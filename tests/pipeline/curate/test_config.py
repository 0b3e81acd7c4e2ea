"""Config validation: unknown keys, wrong types, missing roots and overrides fail or apply clearly."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.curate.config import Config, load_config
from pipeline.config_base import ConfigError
from pipeline.curate.registry import STAGES
from pipeline.stage import check_dataset_roots, run_stage

REPO = Path(__file__).resolve().parents[3]


def test_defaults_are_the_papers_numbers():
    cfg = Config()
    assert cfg.judge.model == "Qwen/Qwen2.5-VL-72B-Instruct"
    assert cfg.filter.image.at_least == {"instruction_following": 9, "visual_quality": 9, "content_preservation": 9}
    assert cfg.filter.video.at_least == {"instruction_following": 8, "visual_quality": 8, "content_preservation": 8}
    assert cfg.filter.video.greater_than == {"motion_consistency": 8}
    assert cfg.filter.keep_categories["ditto"] == ["style"]
    assert set(cfg.filter.keep_categories["openve"]) == {"local_change", "background", "style", "subtitles"}
    assert cfg.encode.target_area == 399_360 and cfg.encode.num_frames == 81
    assert cfg.encode.anchor_frames == 1 and cfg.encode.siglip_pool_grid == 8
    assert cfg.pretext.weights == {"none": 1, "cube": 2, "speed": 3, "tube": 4}
    assert cfg.pretext.cube_mask_ratio == 0.3 and cfg.pretext.speed_factor == 2.0
    assert cfg.pretext.tube_grid == (2, 2, 2)


def test_unknown_key_names_the_field(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("run:\n  workdir: x\n  sead: 3\n")
    with pytest.raises(ConfigError, match=r"run\.sead: unknown key"):
        load_config(p)


def test_wrong_type_names_the_field_and_value():
    with pytest.raises(ConfigError, match=r"run\.rows_per_task: .*integer.*'many'"):
        load_config(None, ["run.rows_per_task=many"])


def test_missing_root_says_what_to_do(tmp_path):
    """The disk is checked when a stage that reads the media starts, not when the config loads."""
    cfg = load_config(None, [f"datasets.ditto.root={tmp_path / 'nope'}"])
    with pytest.raises(ConfigError) as e:
        check_dataset_roots(cfg)
    msg = str(e.value)
    assert "datasets.ditto.root" in msg and "does not exist" in msg and "enabled: false" in msg


def test_missing_root_fails_the_stages_that_read_media_only(tmp_path):
    """`curate run --stage probe` fails at once naming the field; the filter stage (scores only)
    gets past the check and stops at its own input."""
    cfg = load_config(None, [f"datasets.ditto.root={tmp_path / 'nope'}"])
    with pytest.raises(ConfigError, match=r"datasets\.ditto\.root: .* does not exist"):
        run_stage(STAGES["probe"], cfg, tmp_path / "run")
    with pytest.raises(ConfigError, match="no scores yet"):
        run_stage(STAGES["filter"], cfg, tmp_path / "run")


def test_disabled_dataset_needs_no_root(tmp_path):
    cfg = load_config(None, [f"datasets.ditto.root={tmp_path / 'nope'}", "datasets.ditto.enabled=false"])
    assert cfg.datasets.enabled() == {}
    check_dataset_roots(cfg)


def test_overrides_keep_yaml_types(tmp_path):
    cfg = load_config(None, ["run.seed=7", "media.decoder=pyav", f"datasets.ditto.root={tmp_path}",
                             "filter.keep_categories.ditto=[style, local_change]"])
    assert cfg.run.seed == 7 and cfg.media.decoder == "pyav"
    assert cfg.filter.keep_categories["ditto"] == ["style", "local_change"]


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="FIELD=VALUE"):
        load_config(None, ["run.seed"])


def test_frames_must_be_4n_plus_1():
    with pytest.raises(ConfigError, match=r"encode\.num_frames: must be of the form 4n\+1"):
        load_config(None, ["encode.num_frames=80"])


@pytest.mark.parametrize("name", ["sama_stage0.yaml", "sama_stage1.yaml"])
def test_real_mix_configs_parse_and_ask_for_roots(name):
    """The shipped real-data configs are valid except for the roots (and files) the user must point at."""
    with pytest.raises(ConfigError) as e:
        check_dataset_roots(load_config(REPO / "configs" / name))
    lines = str(e.value).splitlines()[1:]
    assert lines and all(re.search(r"(root|_csv): /data/", l) and "does not exist" in l for l in lines), lines


def test_demo_config_is_valid(demo_config):
    cfg = load_config(demo_config)
    assert set(cfg.datasets.enabled()) == {
        "ditto", "openve", "reco", "koala", "motionbench", "nhr_edit", "gpt_image_edit", "x2edit", "pico_banana"}


def test_old_probe_keys_map_onto_the_shared_ones_with_a_notice(capsys):
    cfg = load_config(None, ["probe.rows_per_task=64", "probe.decode_check=pyav"])
    assert (cfg.run.rows_per_task, cfg.media.decoder, cfg.probe.decode) == (64, "pyav", True)
    notes = capsys.readouterr().err.splitlines()
    assert notes == ["config: probe.rows_per_task is deprecated; use run.rows_per_task",
                     "config: probe.decode_check is deprecated; use media.decoder"]
    assert cfg == load_config(None, ["run.rows_per_task=64", "media.decoder=pyav"])
    # "none" turned the check off; encode decoded with decord then, the shared default now
    off = load_config(None, ["probe.decode_check=none"])
    assert (off.probe.decode, off.media.decoder) == (False, "decord")
    assert "use probe.decode: false" in capsys.readouterr().err
    # an old key that agrees with its new one is no conflict
    assert load_config(None, ["probe.rows_per_task=5", "run.rows_per_task=5"]).run.rows_per_task == 5


@pytest.mark.parametrize("overrides, fields", [
    (["probe.rows_per_task=3", "run.rows_per_task=4"], r"probe\.rows_per_task and run\.rows_per_task: 3 and 4"),
    (["probe.decode_check=pyav", "media.decoder=decord"], r"probe\.decode_check and media\.decoder: 'pyav' and"),
    (["probe.decode_check=none", "probe.decode=true"], r"probe\.decode_check and probe\.decode: 'none' and True"),
    (["probe.decode_check=decord", "probe.decode=false"], r"probe\.decode_check and probe\.decode"),
])
def test_old_and_new_keys_that_disagree_fail_naming_both(overrides, fields):
    with pytest.raises(ConfigError, match=fields + r".*keep only"):
        load_config(None, overrides)


def test_a_bad_old_decode_check_names_the_field_and_the_new_keys():
    with pytest.raises(ConfigError, match=r"probe\.decode_check: 'opencv' is not decord, pyav or none.*media\.decoder"):
        load_config(None, ["probe.decode_check=opencv"])
