"""`curate run --stage vlm-filter` and `--stage filter` through Ray, against a real HTTP judge server
on 127.0.0.1 that injects faults (tests/fake_judge.py), on the demo corpus."""
from __future__ import annotations

import os
import subprocess

import pytest

from manifests import catalog
from pipeline.curate import runner
from pipeline.curate.config import load_config
from fake_judge import FakeJudgeServer

from conftest import curate_bin, demo_config_file, part_digests

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

# The curation stages up to the filter (encode and shard need encoder checkpoints; see test_encode_stage).
JUDGE_STAGES = "ingest,probe,vlm-filter,filter"

FAST = ["judge.max_frames=4", "judge.min_frames=2", "judge.video_min_pixels=3136", "judge.video_max_pixels=12544", "judge.image_min_pixels=3136", "judge.image_max_pixels=12544",
        "judge.max_attempts=8", "judge.backoff_base_s=0.05", "judge.backoff_max_s=0.2"]


def _cfg(demo_corpus, tmp_path, url, extra=()):
    return load_config(demo_config_file(demo_corpus, tmp_path), [f"judge.urls=[{url}]", *FAST, *extra])


def test_judge_and_filter_stages_with_faults(ray_session, demo_corpus, tmp_path):
    with FakeJudgeServer() as clean:
        cfg = _cfg(demo_corpus, tmp_path, clean.url)
        ref = tmp_path / "clean"
        runner.run(cfg, JUDGE_STAGES, ref)
    with FakeJudgeServer(fault_rate=0.3, seed=5, retry_after="0", hang_s=1.0,
                         faults=("http500", "http429", "drop", "empty", "timeout")) as faulty:
        cfg = _cfg(demo_corpus, tmp_path, faulty.url, ["judge.request_timeout_s=0.5"])
        work = tmp_path / "faulty"
        reports = runner.run(cfg, JUDGE_STAGES, work)
        assert sum(faulty.stats.faults.values()) > 0
    assert [r.stage for r in reports] == ["ingest", "probe", "vlm-filter", "filter"]

    con = catalog.connect(work)
    probed_ok = con.execute("SELECT count(*) FROM probes WHERE error IS NULL").fetchone()[0]
    n, distinct, ok = con.execute(
        "SELECT count(*), count(DISTINCT sample_id), count(*) FILTER (status = 'ok') FROM scores").fetchone()
    assert n == distinct == probed_ok  # every measured sample has one scores row, despite the faults
    # all scored, but evaluation inputs without an edit (OpenVE-Bench), which cannot be judged
    unscorable = con.execute("SELECT count(*) FROM samples_full WHERE judge_status = 'input_error' "
                             "AND target_uri IS NULL").fetchone()[0]
    assert ok == n - unscorable and unscorable == 1
    # retried scores equal those of the fault-free run
    assert part_digests(work, "scores").keys() == part_digests(ref, "scores").keys()
    cols = "sample_id, instruction_following, visual_quality, instruction_following_expected"
    a = con.execute(f"SELECT {cols} FROM scores ORDER BY 1").fetchall()
    b = catalog.connect(ref).execute(f"SELECT {cols} FROM scores ORDER BY 1").fetchall()
    assert a == b
    # the selected table covers every sample and says which rule rejected it
    total, sel, kept_ok = con.execute(
        "SELECT (SELECT count(*) FROM samples), count(*), bool_and(kept = (rejected_by IS NULL)) FROM selected").fetchone()
    assert total == sel and kept_ok
    rules = {r[0] for r in con.execute("SELECT DISTINCT rejected_by FROM selected WHERE NOT kept").fetchall()}
    assert "sample_error" in rules
    # the joined view carries the judge columns
    assert con.execute("SELECT count(*) FROM samples_full WHERE judge_status = 'ok' AND kept IS NOT NULL").fetchone()[0] == ok


def chained_phases(monkeypatch) -> list[str]:
    """The names of the phases ``run_phases`` chains into its Ray Data pipelines, as they are chained."""
    from pipeline import stage as contract

    chained: list[str] = []
    real = contract._chain

    def spy(ds, phase, actor):
        chained.append(phase.name)
        return real(ds, phase, actor)

    monkeypatch.setattr(contract, "_chain", spy)
    return chained


def declared_phases(cfg, work, stages: str) -> list[str]:
    from pipeline.curate.registry import STAGES
    from pipeline.curate.runner import resolve_stages
    from pipeline.stage import Context

    return [p.name for s in resolve_stages(stages) for p in STAGES[s].phases(Context(cfg, work))]


def test_filter_explain_cli_writes_nothing(ray_session, demo_corpus, tmp_path, monkeypatch):
    chained = chained_phases(monkeypatch)
    with FakeJudgeServer() as server:
        cfg_file = demo_config_file(demo_corpus, tmp_path)
        work = tmp_path / "w"
        cfg = load_config(cfg_file, [f"judge.urls=[{server.url}]", *FAST])
        runner.run(cfg, JUDGE_STAGES, work)
        # Every phase every stage declares is what ran (the filter's and the judge's too), in order.
        assert chained == declared_phases(cfg, work, JUDGE_STAGES)
    before = part_digests(work, "selected")
    res = subprocess.run([curate_bin(), "filter", "--config", str(cfg_file), "--workdir", str(work),
                          "--set", "filter.image.at_least.visual_quality=1"],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    assert "filter yields" in res.stdout and "visual_quality" in res.stdout
    assert part_digests(work, "selected") == before


def test_a_run_whose_every_request_fails_exits_non_zero(ray_session, demo_corpus, tmp_path):
    """A server that answers every request with HTTP 500: the run keeps a row per sample but fails
    (JudgeRunFailed, a ConfigError: `curate run` exits 2) with the commonest error, and the filter
    does not run on a table of failures."""
    from stages.judge.outcome import JudgeRunFailed

    with FakeJudgeServer(fault_rate=1.0, faults=("http500",)) as broken:
        cfg = _cfg(demo_corpus, tmp_path, broken.url, ["judge.max_attempts=2"])
        work = tmp_path / "work"
        with pytest.raises(JudgeRunFailed, match=r"^vlm-filter: all (\d+) judged rows are engine_error; "
                                                 r"the commonest \(\1 rows\): 'HTTP 500: "):
            runner.run(cfg, JUDGE_STAGES, work)
    con = catalog.connect(work)
    probed_ok = con.execute("SELECT count(*) FROM probes WHERE error IS NULL").fetchone()[0]
    n, failed, unscorable = con.execute(
        "SELECT count(*), count(*) FILTER (status = 'engine_error'), count(*) FILTER (status = 'input_error') "
        "FROM scores").fetchone()
    assert n == probed_ok and failed == n - unscorable and unscorable == 1  # nothing lost
    assert not (work / "tables" / "selected").exists()
