"""`curate run --stage screen` on the demo corpus through Ray: a row per sample, resume, --limit,
fingerprint refusal, kill -9 byte-identity, benchmarks, the filter's and the judge's use of the
verdicts, and screening off reproducing a run without it."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from manifests import catalog
from manifests.io import list_parts
from pipeline.curate import runner
from pipeline.config_base import ConfigError
from pipeline.curate.config import load_config

from conftest import REPO, curate_bin, demo_config_file, part_digests

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def probed(ray_session, demo_corpus, tmp_path_factory):
    """A workdir with ingest and probe done (copied per test)."""
    root = tmp_path_factory.mktemp("screen")
    cfg = load_config(demo_config_file(demo_corpus, root))
    runner.run(cfg, "ingest,probe", root / "probed")
    return root / "probed"


def _copy(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    return dst


def _cfg(demo_corpus, tmp_path, *overrides, extra=""):
    return load_config(demo_config_file(demo_corpus, tmp_path, extra), list(overrides))


def test_every_sample_gets_a_row_and_a_rerun_changes_nothing(probed, demo_corpus, tmp_path):
    wd = _copy(probed, tmp_path / "wd")
    cfg = _cfg(demo_corpus, tmp_path)
    report = runner.run(cfg, "screen", wd)[0]
    assert report.units_run == report.units_total > 0
    con = catalog.connect(wd)
    n_samples, n_screens, n_verdicts = con.execute(
        "SELECT (SELECT count(*) FROM samples s JOIN probes USING (sample_id)), (SELECT count(*) FROM screens), "
        "(SELECT count(*) FROM screen_verdicts)").fetchone()
    assert n_samples == n_screens == n_verdicts
    # the probe's failures are error rows here, not lost
    assert con.execute("SELECT count(*) FROM samples_full WHERE probe_error IS NOT NULL AND "
                       "screen_error_kind IS NULL").fetchone()[0] == 0
    # the demo reuses clips across datasets on purpose: grouped, but kept (configs/demo.yaml)
    assert con.execute("SELECT count(*) FROM screen_verdicts WHERE duplicate_of IS NOT NULL").fetchone()[0] > 0
    assert con.execute("SELECT count(*) FROM screen_verdicts WHERE screen_drop = 'screen.duplicate'").fetchone()[0] == 0
    before = {t: part_digests(wd, t) for t in ("screens", "screen_verdicts")}
    again = runner.run(cfg, "screen", wd)[0]
    assert again.units_run == 0
    assert {t: part_digests(wd, t) for t in ("screens", "screen_verdicts")} == before
    with pytest.raises(ConfigError, match="different settings"):
        runner.run(_cfg(demo_corpus, tmp_path, "screen.frame_step_s=0.5"), "screen", wd)


def test_limit_then_the_rest_equals_one_run(probed, demo_corpus, tmp_path):
    ref = _copy(probed, tmp_path / "ref")
    part = _copy(probed, tmp_path / "part")
    cfg = _cfg(demo_corpus, tmp_path)
    runner.run(cfg, "screen", ref)
    first = runner.run(cfg, "screen", part, limit=5)[0]
    assert 0 < first.units_run < first.units_total
    runner.run(cfg, "screen", part)
    for t in ("screens", "screen_verdicts"):
        assert part_digests(part, t) == part_digests(ref, t)


def test_kill9_mid_screen_then_resume_matches_uninterrupted(probed, ray_session, demo_corpus, tmp_path):
    config = demo_config_file(demo_corpus, tmp_path)
    ref = _copy(probed, tmp_path / "ref")
    cfg = load_config(config)
    runner.run(cfg, "screen", ref)
    victim = _copy(probed, tmp_path / "victim")
    address = ray_session.get_runtime_context().gcs_address
    proc = subprocess.Popen([curate_bin(), "run", "--config", str(config), "--stage", "screen", "--workdir",
                             str(victim), "--ray-address", address], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(list_parts(victim, "screens")) < 2:
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    time.sleep(1.0)
    runner.run(cfg, "screen", victim)
    for t in ("screens", "screen_verdicts"):
        assert sorted(part_digests(victim, t).values()) == sorted(part_digests(ref, t).values())
    assert not list(victim.rglob("*.tmp"))


def test_benchmarks_filter_judge_and_screening_off(probed, demo_corpus, tmp_path):
    from filters.selection import selected_catalog
    from stages.judge.units import judge_todo, judge_units

    bench = tmp_path / "vie-bench"
    bench.mkdir()
    os.symlink(REPO / "demo" / "clips" / "hl07_source.mp4", bench / "clip1.mp4")
    text = (REPO / "configs" / "demo.yaml").read_text()
    assert "screen:\n  drop_duplicates: false\n" in text
    wd = _copy(probed, tmp_path / "wd")
    cfg = _cfg(demo_corpus, tmp_path, f"screen.benchmarks={{vie: {bench}}}")
    runner.run(cfg, "screen", wd)
    con = catalog.connect(wd)
    hits = con.execute("SELECT sample_id, benchmark_clip FROM screen_verdicts WHERE benchmark = 'vie'").fetchall()
    assert hits and all(c.endswith("clip1.mp4") for _, c in hits)
    selected = selected_catalog(con, cfg.filter)
    rejected = dict(zip(selected["sample_id"].to_pylist(), selected["rejected_by"].to_pylist()))
    assert all(rejected[s] == "screen.contaminated" for s, _ in hits)
    # the report shows every hit, a thumbnail pair for each
    from pipeline.curate.report.screen import screen_section

    html = screen_section(con, set(catalog.views(con)), cfg)
    assert html.count("data:image/png") >= len(hits) + 2 and "judge requests saved" in html
    # the judge does not pay for what the screen drops
    units = judge_units(wd, cfg.run.rows_per_task)
    todo = {s for u in units for s in judge_todo(u.item())["sample_id"].to_pylist()}
    assert todo and not todo & {s for s, _ in hits}
    # screening off: its tables go, and the selection is that of a run that never screened
    baseline = selected_catalog(catalog.connect(probed), cfg.filter)
    runner.run(_cfg(demo_corpus, tmp_path, "screen.enabled=false"), "screen", wd)
    assert not list_parts(wd, "screens") and not list_parts(wd, "screen_verdicts")
    assert selected_catalog(catalog.connect(wd), cfg.filter).equals(baseline)
