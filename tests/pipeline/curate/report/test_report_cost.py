"""The stage clock and the cost model, without Ray or a run."""
from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from pipeline.curate.config import Config
from pipeline.curate.report import cost
from pipeline.curate.report.queries import Step
from pipeline.curate.report.timings import StageClock, load_runs

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.8: pass\n"


def _report(seconds=1.0):
    return SimpleNamespace(seconds=seconds, units_total=3, units_run=2)


def test_clock_counts_cpu_of_a_child_that_exits_before_the_stage_ends(tmp_path):
    with StageClock(tmp_path, "encode", Config(), overwrite=False, remote=False) as clock:
        subprocess.run([sys.executable, "-c", BURN], check=True)  # exits (and is reaped) inside the stage
        clock.report = _report()
    (path,) = (tmp_path / "state" / "_timings").glob("*-encode.json")
    rec = json.loads(path.read_text())
    assert rec["cpu_s"] >= 0.6  # the child's 0.8 s, seen by the sampler or through children_* times
    assert rec["wall_s"] >= 0.8 and rec["units_run"] == 2 and rec["gpu_stage"] and rec["device"] == "cpu"
    assert rec["gpu_s"] == 0 and rec["cpu_scope"].startswith("process tree")


def test_a_failed_stage_leaves_no_timing(tmp_path):
    with pytest.raises(RuntimeError):
        with StageClock(tmp_path, "probe", Config(), overwrite=False, remote=False):
            raise RuntimeError("boom")
    assert not (tmp_path / "state" / "_timings").exists()


def test_runs_since_the_last_overwrite_and_only_the_last_filter(tmp_path):
    d = tmp_path / "state" / "_timings"
    d.mkdir(parents=True)
    recs = [("a", "probe", False, 5), ("b", "probe", True, 7), ("c", "probe", False, 2),
            ("d", "filter", False, 1), ("e", "filter", False, 3)]
    for stamp, stage, overwrite, wall in recs:
        (d / f"{stamp}-{stage}.json").write_text(json.dumps({"stage": stage, "overwrite": overwrite, "wall_s": wall}))
    runs = load_runs(tmp_path)
    assert [r["wall_s"] for r in runs["probe"]] == [7, 2]
    assert [r["wall_s"] for r in runs["filter"]] == [3]


def _rec(stage, wall, cpu, gpus=0, device="cpu"):
    return {"stage": stage, "wall_s": wall, "cpu_s": cpu, "cpus": 4, "gpus": gpus, "gpus_used": gpus,
            "gpu_s": wall * gpus, "device": device, "cpu_scope": "process tree (local Ray cluster)"}


def test_corpus_cost_scales_measured_rates_and_never_invents_gpu_hours():
    runs = {"probe": [_rec("probe", 10, 20)], "encode": [_rec("encode", 100, 50, gpus=2, device="cuda")],
            "vlm-filter": [_rec("vlm-filter", 30, 60, device="local judge server, cpu")]}
    rows = {"probe": (100, 100), "encode": (40, 10), "vlm-filter": (100, 100)}
    costs = {c.stage: c for c in cost.stage_costs(runs, rows, None)}
    assert costs["encode"].per_1000(costs["encode"].gpu_s) == pytest.approx(1000 * 200 / 10)
    assert costs["probe"].alloc_core_s == 40 and costs["probe"].rows_per_s == 10
    assert "ran on CPU" in costs["vlm-filter"].note
    out = {r.stage: r for r in cost.corpus_cost(list(costs.values()), {"koala": 3600, "x2edit": 3600}, {}, "all")}
    assert out["probe"].core_hours == pytest.approx(7200 * 0.2 / 3600)
    assert out["encode"].gpu_hours == pytest.approx(7200 * 20 / 3600)
    assert out["vlm-filter"].gpu_hours is None and "not extrapolated" in out["vlm-filter"].flag
    # measured reach: koala keeps half its records, x2edit none
    funnel = {"koala": [Step("records", 10), Step("kept", 5)], "x2edit": [Step("records", 4), Step("kept", 0)]}
    measured = {r.stage: r for r in cost.corpus_cost(list(costs.values()), {"koala": 3600, "x2edit": 3600}, funnel, "measured")}
    assert measured["encode"].samples == pytest.approx(1800)
    cores, gpus = cost.cluster_needed(list(out.values()), hours=2, utilisation=0.5)
    assert cores == pytest.approx(sum(r.core_hours for r in out.values())) and gpus == pytest.approx(40)


def test_external_judge_gpus_come_from_the_config():
    runs = {"vlm-filter": [_rec("vlm-filter", 50, 5, device="external judge server")]}
    (c,) = cost.stage_costs(runs, {"vlm-filter": (10, 10)}, judge_server_gpus=8)
    assert c.gpu_s == 400 and c.ran_on_gpu
    (c,) = cost.stage_costs(runs, {"vlm-filter": (10, 10)}, judge_server_gpus=None)
    assert not c.ran_on_gpu and "not visible" in c.note


def test_report_section_validates():
    from pipeline.config_base import ConfigError
    from pipeline.curate.config import load_config

    cfg = load_config(None, ["report.finish_in_hours=24"])
    assert cfg.report.finish_in_hours == 24 and cfg.report.corpus["koala"] == 36_060_536
    with pytest.raises(ConfigError, match="report.utilisation"):
        load_config(None, ["report.utilisation=0"])


def test_a_remote_cluster_is_priced_at_allocated_cores():
    rec = {**_rec("probe", 10, 1), "cpu_scope": "driver only (remote Ray cluster)"}
    (c,) = cost.stage_costs({"probe": [rec]}, {"probe": (100, 100)}, None)
    assert c.cpu_s == 40 and "allocated" in c.note  # wall 10 s x 4 CPUs, not the driver's 1 s


def test_storage_totals_two_copies_and_one_after_the_sharded_prune():
    """The encoded table and the shards each hold every key's tensors; after `curate prune
    --sharded` the shards' copy and the rows' metadata remain."""
    corpus = {"koala": 1_000_000, "ditto": 10_000, "x2edit": 500}
    t = cost.storage_totals(corpus)
    tensors = (1_000_000 * cost.KEY_BYTES["clip"] + 10_000 * cost.KEY_BYTES["video_edit"]
               + 500 * cost.KEY_BYTES["image_edit"]) / 1e12
    keys = sum(corpus.values())
    assert abs(t["table"] - tensors) < 1e-9
    assert abs(t["shards"] - (tensors + keys * cost.SHARD_KEY_OVERHEAD / 1e12)) < 1e-9
    assert abs(t["both"] - t["table"] - t["shards"]) < 1e-9
    assert abs(t["pruned"] - (t["shards"] + keys * cost.PRUNED_ROW_BYTES / 1e12)) < 1e-9
    assert t["pruned"] < 0.51 * t["both"]
