"""The whole pipeline so far on the demo corpus, through a real local Ray cluster."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from manifests import catalog
from pipeline.curate import runner
from pipeline.config_base import ConfigError
from pipeline.curate.config import load_config
from pipeline.curate.demo import DATASETS

from conftest import curate_bin, part_digests

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

# The CPU stages; the judge stages have their own tests (test_judge_*.py).
STAGES = "ingest,probe"


@pytest.fixture(scope="module")
def demo_run(ray_session, demo_corpus, tmp_path_factory):
    from conftest import demo_config_file

    tmp = tmp_path_factory.mktemp("run")
    cfg = load_config(demo_config_file(demo_corpus, tmp))
    workdir = tmp / "work"
    reports = runner.run(cfg, STAGES, workdir)
    return cfg, workdir, reports


def test_every_dataset_ingested_with_expected_rows(demo_run, demo_corpus):
    from pipeline.curate.demo import build_corpus

    expected = build_corpus(demo_corpus)  # idempotent: returns the builders' facts
    _, workdir, reports = demo_run
    con = catalog.connect(workdir)
    got = {d: (n, e) for d, n, e in con.execute(
        "SELECT dataset, count(*), count(*) FILTER (error IS NOT NULL) FROM samples GROUP BY 1").fetchall()}
    assert set(got) == set(DATASETS)
    for name in DATASETS:
        assert got[name] == (expected[name]["rows"], expected[name]["errors"]), name
    # ids are unique and dataset-prefixed
    n, distinct, prefixed = con.execute(
        "SELECT count(*), count(DISTINCT sample_id), bool_and(starts_with(sample_id, dataset || ':')) FROM samples"
    ).fetchone()
    assert n == distinct and prefixed
    assert [r.stage for r in reports] == ["ingest", "probe"]  # the CPU stages asked for


def test_probe_measured_real_clips(demo_run):
    _, workdir, _ = demo_run
    con = catalog.connect(workdir)
    # every resolvable sample got exactly one probe row
    n_ok, n_probed, n_distinct = con.execute(
        "SELECT (SELECT count(*) FROM samples WHERE error IS NULL), count(*), count(DISTINCT sample_id) FROM probes"
    ).fetchone()
    assert n_ok == n_probed == n_distinct
    # the bundled 1280x720 real clip is measured as such wherever it is a source
    rows = con.execute(
        "SELECT DISTINCT source_width, source_height, source_codec FROM samples_full "
        "WHERE source_uri LIKE '%hl01%' AND probe_error IS NULL").fetchall()
    for w, h, codec in rows:
        assert (w, h) == (1280, 720) and codec == "h264"
    # images are measured too, and failures carry a kind and a reason
    assert con.execute("SELECT count(*) FROM samples_full WHERE modality='image' AND target_width > 0").fetchone()[0] > 0
    bad = con.execute("SELECT count(*) FROM probes WHERE error IS NOT NULL AND (error_kind IS NULL OR error = '')").fetchone()[0]
    assert bad == 0


def test_rerun_skips_everything_and_changes_no_byte(demo_run):
    cfg, workdir, _ = demo_run
    before = {t: part_digests(workdir, t) for t in ("samples", "probes")}
    reports = runner.run(cfg, STAGES, workdir)
    assert [r.units_run for r in reports] == [0, 0]
    assert {t: part_digests(workdir, t) for t in ("samples", "probes")} == before


def test_same_config_elsewhere_gives_same_bytes(demo_run, tmp_path):
    cfg, workdir, _ = demo_run
    other = tmp_path / "again"
    runner.run(cfg, "ingest", other)
    assert part_digests(other, "samples") == part_digests(workdir, "samples")


def test_changed_settings_refuse_to_mix(demo_run):
    cfg, workdir, _ = demo_run
    changed = cfg.model_copy(deep=True)
    changed.media.decoder = "pyav"
    with pytest.raises(ConfigError, match="different settings.*--overwrite"):
        runner.run(changed, "probe", workdir)


def test_cli_query_status_and_read_only(demo_run):
    _, workdir, _ = demo_run
    res = subprocess.run(
        [curate_bin(), "query", "--workdir", str(workdir),
         "SELECT dataset, count(*) AS n FROM samples GROUP BY 1 ORDER BY 1", "--format", "csv"],
        capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0] == '"dataset","n"' and len(lines) == 1 + len(DATASETS)

    res = subprocess.run([curate_bin(), "query", "--workdir", str(workdir), "--format", "json",
                          "SELECT sample_id, probe_error_kind FROM samples_full LIMIT 3"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and len([json.loads(l) for l in res.stdout.splitlines()]) == 3

    res = subprocess.run([curate_bin(), "query", "--workdir", str(workdir), "DROP VIEW samples"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "read-only" in res.stderr

    res = subprocess.run([curate_bin(), "status", "--workdir", str(workdir)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "ingest" in res.stdout and "probe" in res.stdout


def test_filter_before_any_scores_says_so(demo_run):
    """`curate filter` and `run --stage filter` on a run without scores: "no scores yet", exit 2,
    not a yield table in which every sample is rejected as unscored."""
    _, workdir, _ = demo_run
    assert not (workdir / "tables" / "scores").exists()
    config = workdir.parent / "demo.yaml"  # the fixture's config file
    for args in (["filter"], ["run", "--stage", "filter"]):
        res = subprocess.run([curate_bin(), *args, "--config", str(config), "--workdir", str(workdir)],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert "no scores yet; run `curate run --stage vlm-filter` first" in res.stderr, args
        assert "yield" not in res.stdout, args


def test_status_counts(demo_run):
    from pipeline.curate.status import stage_status

    _, workdir, _ = demo_run
    rows = {r[0]: r for r in stage_status(workdir)}
    con = catalog.connect(workdir)
    ok, failed = con.execute("SELECT count(*) FILTER (error IS NULL), count(*) FILTER (error IS NOT NULL) FROM samples").fetchone()
    assert rows["ingest"][1:4] == [ok, failed, 0]
    assert rows["probe"][1] + rows["probe"][2] == ok and rows["probe"][3] == 0


def test_limit_then_continue(ray_session, demo_corpus, tmp_path):
    """--limit on probe runs whole units only; a later run finishes the rest."""
    from conftest import demo_config_file

    cfg = load_config(demo_config_file(demo_corpus, tmp_path), ["run.rows_per_task=2"])
    workdir = tmp_path / "w"
    runner.run(cfg, "ingest", workdir)
    runner.run(cfg, "probe", workdir, limit=3)
    from pipeline.curate.status import stage_status

    pending = {r[0]: r for r in stage_status(workdir)}["probe"][3]
    assert pending > 0
    runner.run(cfg, "probe", workdir)
    assert {r[0]: r for r in stage_status(workdir)}["probe"][3] == 0


def test_cli_help_lists_commands():
    res = subprocess.run([curate_bin(), "--help"], capture_output=True, text=True, timeout=60)
    for cmd in ("run", "query", "status"):
        assert cmd in res.stdout
    for cmd in ("run", "query", "status", "demo"):
        assert subprocess.run([curate_bin(), cmd, "--help"], capture_output=True, timeout=60).returncode == 0


def test_bad_config_fails_fast_naming_the_field(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(f"datasets:\n  ditto:\n    root: {tmp_path}/missing\n")
    work = tmp_path / "work"
    res = subprocess.run([curate_bin(), "run", "--config", str(p), "--workdir", str(work)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "datasets.ditto.root" in res.stderr and "does not exist" in res.stderr
    assert not work.exists() and "Ray" not in res.stdout  # refused before Ray starts or anything is written


def test_judge_without_a_server_fails_fast_naming_the_field(demo_run):
    """No judge answering at judge.urls: a clear error at once, not hours of retries per sample."""
    import socket

    cfg, workdir, _ = demo_run
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = cfg.model_copy(deep=True)
    cfg.judge.urls = [f"http://127.0.0.1:{port}/v1"]
    with pytest.raises(ConfigError, match=r"judge\.urls: nothing answers at"):
        runner.run(cfg, "vlm-filter", workdir)
    assert not (workdir / "tables" / "scores").exists()
