"""`curate report` on one demo run (fake judge server with faults, tiny real encoders, mid-range
thresholds so samples fall on both sides), made once by `curate run` for the whole module."""
from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from PIL import Image

from manifests import catalog
from pipeline.curate.config import load_config
from fake_judge import FakeJudgeServer

from conftest import curate_bin, demo_config_file

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SECTIONS = ["funnel", "screen", "scores", "yields", "thresholds", "judge", "stages", "pretext", "cost"]
FAST_JUDGE = ["judge.max_frames=4", "judge.min_frames=2", "judge.video_min_pixels=3136",
              "judge.video_max_pixels=12544", "judge.image_min_pixels=3136", "judge.image_max_pixels=12544"]
# The fake judge scores uniformly in 1..10: thresholds at 3 keep about half and cut the rest.
THRESHOLDS = ["filter.image.at_least={instruction_following: 3, visual_quality: 3, content_preservation: 3}",
              "filter.video.at_least={instruction_following: 3, visual_quality: 3, content_preservation: 3}",
              "filter.video.greater_than={motion_consistency: 2}",
              "filter.clip.at_least={caption_alignment: 3, visual_quality: 3}",
              "filter.clip.greater_than={motion_consistency: 2}"]
SCORED = ("ok", "repaired")


@pytest.fixture(scope="module")
def run(demo_corpus, tmp_path_factory):
    from pipeline.curate.demo.tiny_encoders import build_tiny_encoders

    tmp = tmp_path_factory.mktemp("report")
    models = [f"encode.{k}={v}" for k, v in build_tiny_encoders(tmp / "models").items()]
    work = tmp / "run"
    faults = ("http500", "malformed", "out_of_range", "garbage")
    with FakeJudgeServer(fault_rate=0.15, latency_s=0.02, faults=faults) as judge:
        overrides = [f"judge.urls=[{judge.url}]", *FAST_JUDGE, *THRESHOLDS, *models, "shard.target_bytes=200000"]
        config = demo_config_file(demo_corpus, tmp)
        args = [curate_bin(), "run", "-c", str(config), "--workdir", str(work), "--set", "ray.num_cpus=2"]
        for o in overrides:
            args += ["--set", o]
        res = subprocess.run(args, capture_output=True, text=True, timeout=800)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return work, load_config(config, overrides), res.stdout + res.stderr


class Page(HTMLParser):
    """Section ids, image sources, funnel cells and the histograms' threshold attributes."""

    def __init__(self):
        super().__init__()
        self.sections, self.images, self.hists, self.funnel = [], [], [], {}
        self._table = self._row = self._cell = None
        self._text = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id"))
        elif tag == "img":
            self.images.append(a["src"])
        elif tag == "figure" and "score-hist" in a.get("class", ""):
            self.hists.append((a["data-kind"], a["data-metric"], json.loads(a["data-thresholds"])))
        elif tag == "table" and "funnel" in a.get("class", ""):
            self._table = a["data-dataset"]
        elif tag == "tr" and self._table and "data-step" in a:
            self._row = a["data-step"]
        elif tag == "td" and self._row and a.get("class") in ("count", "lost"):
            self._cell, self._text = a["class"], ""

    def handle_data(self, data):
        if self._cell:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell:
            self.funnel.setdefault(self._table, {}).setdefault(self._row, {})[self._cell] = int(self._text)
            self._cell = None
        elif tag == "table":
            self._table = None


@pytest.fixture(scope="module")
def page(run):
    work, _, out = run
    path = work / "report.html"
    assert path.exists(), "curate run did not write the report at its end:\n" + out[-2000:]
    p = Page()
    p.feed(path.read_text(encoding="utf-8"))
    p.close()
    return p


def test_report_has_every_section_and_every_image_decodes(page):
    assert page.sections == SECTIONS
    assert len(page.images) > 10
    for src in page.images:
        assert src.startswith("data:image/png;base64,")  # embedded: the page needs no network
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        img.verify()
        assert img.width > 10 and img.height > 10


def test_funnel_numbers_equal_the_tables(run, page):
    work, _, _ = run
    con = catalog.connect(work)
    sc = "('ok', 'repaired')"
    q = {
        "records": "SELECT dataset, count(*) FROM samples GROUP BY 1",
        "samples": "SELECT dataset, count(*) FROM samples WHERE error IS NULL GROUP BY 1",
        "probed": "SELECT s.dataset, count(*) FROM samples s JOIN probes p USING (sample_id) "
                  "WHERE s.error IS NULL AND p.error IS NULL GROUP BY 1",
        "judged": f"SELECT s.dataset, count(*) FROM samples s JOIN probes p USING (sample_id) JOIN scores j "
                  f"USING (sample_id) WHERE s.error IS NULL AND p.error IS NULL AND j.status IN {sc} GROUP BY 1",
        "kept": f"SELECT s.dataset, count(*) FROM samples s JOIN scores j USING (sample_id) JOIN selected k "
                f"USING (sample_id) WHERE k.kept AND j.status IN {sc} GROUP BY 1",
        "encoded keys": "SELECT e.dataset, count(*) FROM encoded e JOIN selected k USING (sample_id) "
                        "WHERE k.kept AND e.error IS NULL GROUP BY 1",
        "sharded samples": "SELECT e.dataset, count(DISTINCT k.sample_id) FROM shard_keys k JOIN encoded e "
                           "USING (key) GROUP BY 1",
    }
    datasets = [r[0] for r in con.execute("SELECT DISTINCT dataset FROM samples ORDER BY 1").fetchall()]
    assert sorted(page.funnel) == datasets
    for step, sql in q.items():
        counts = dict(con.execute(sql).fetchall())
        for ds in datasets:
            assert page.funnel[ds][step]["count"] == counts.get(ds, 0), (ds, step)
    lost = dict(con.execute("SELECT dataset, count(*) FROM samples WHERE error IS NOT NULL GROUP BY 1").fetchall())
    for ds in datasets:
        steps = page.funnel[ds]
        assert steps["samples"]["lost"] == lost.get(ds, 0)
        # every step before encode loses exactly what did not pass it
        for before, after in [("samples", "probed"), ("probed", "judged"), ("judged", "kept")]:
            assert steps[after]["lost"] == steps[before]["count"] - steps[after]["count"], (ds, after)
    assert sum(s["kept"]["count"] for s in page.funnel.values()) > 0
    assert sum(s["kept"]["lost"] for s in page.funnel.values()) > 0  # the thresholds cut something


def test_funnel_equals_the_classification_of_every_sample(run):
    """The funnel counted per table gives, on a whole demo run (screened, with judge faults and
    thresholds), every figure, reason and example id of joining each sample with all its rows."""
    from pipeline.curate.report.queries import funnel

    from _funnel import classified

    work, _, _ = run
    con = catalog.connect(work)
    present = set(catalog.views(con))
    assert {"probes", "scores", "selected", "encoded", "shard_keys"} <= present
    assert funnel(con, top=100) == classified(con, present, top=100)
    assert funnel(con) == classified(con, present)


def test_thresholds_drawn_are_the_configs(run, page):
    _, cfg, _ = run
    sections = {"video_edit": cfg.filter.video, "image_edit": cfg.filter.image, "clip": cfg.filter.clip}
    assert {k for k, _, _ in page.hists} == set(sections)  # the demo has every kind of sample
    for kind, metric, drawn in page.hists:
        rule = sections[kind]
        want = [[">=", float(rule.at_least[metric])]] if metric in rule.at_least else []
        want += [[">", float(rule.greater_than[metric])]] if metric in rule.greater_than else []
        assert drawn == want, (kind, metric)
        assert metric in cfg.judge.metrics_for(kind)


def test_every_stage_run_is_timed_and_priced(run):
    from pipeline.curate.report import cost, queries
    from pipeline.curate.report.timings import load_runs

    work, cfg, _ = run
    runs = load_runs(work)
    from pipeline.curate.registry import STAGE_ORDER

    assert sorted(runs) == sorted(STAGE_ORDER)  # every stage of `curate run --stage all`, screen included
    for stage, recs in runs.items():
        (rec,) = recs
        assert rec["wall_s"] > 0 and rec["cpu_s"] >= 0 and rec["cpus"] == 2 and rec["gpus"] == 0, rec
    assert runs["encode"][0]["device"] == "cpu" and runs["encode"][0]["gpu_stage"]
    # The model: corpus samples x CPU seconds per sample; a GPU stage on CPU gets no GPU-hours.
    costs = cost.stage_costs(runs, queries.stage_rows(catalog.connect(work)), None)
    rows = {r.stage: r for r in cost.corpus_cost(costs, {"koala": 1_000_000}, {}, "all")}
    enc = runs["encode"][0]
    n_enc = catalog.connect(work).execute("SELECT count(DISTINCT sample_id) FROM encoded").fetchone()[0]
    assert rows["encode"].core_hours == pytest.approx(1_000_000 * enc["cpu_s"] / n_enc / 3600)
    assert rows["encode"].gpu_hours is None and "run on CPU" in rows["encode"].flag
    assert rows["vlm-filter"].gpu_hours is None
    cores, gpus = cost.cluster_needed(list(rows.values()), 10, 0.5)
    assert cores == pytest.approx(sum(r.core_hours for r in rows.values()) / 5) and gpus is None
    html = (work / "report.html").read_text()
    assert "Rates measured on a CPU-only run" in html and "GPU stage that ran on CPU" in html


def test_report_cli_prices_another_corpus_and_escapes_text(run, tmp_path):
    from pipeline.curate.report.build import render, report_data

    work, cfg, _ = run
    out = tmp_path / "r.html"
    res = subprocess.run([curate_bin(), "report", "--workdir", str(work), "--out", str(out), "--set",
                          "report.corpus={koala: 1000}", "--set", "report.finish_in_hours=10"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    html = out.read_text()
    assert "To finish in 10 hours" in html and "report.corpus (config)" in html and "x2edit" not in html.split(
        'id="cost"')[1]
    data = report_data(work, cfg)
    ds = next(iter(data["funnel"]))
    data["funnel"][ds][1].reasons.insert(0, ("<script>alert(1)</script>", 1, ["<b>id</b>"]))
    page = render(data)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<b>id</b>" not in page


def test_report_renders_in_headless_chromium(run, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium); the HTML checks above still ran")
    work, _, _ = run
    url = (work / "report.html").resolve().as_uri()
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
             "--user-data-dir=" + str(tmp_path / "profile")]
    shot = tmp_path / "shot.png"
    res = subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,2000", url],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    console = [line for line in res.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    img = Image.open(shot).convert("L")
    assert img.size == (1280, 2000) and img.getextrema()[1] - img.getextrema()[0] > 100  # not blank
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0 and all(f'id="{s}"' in dom.stdout for s in SECTIONS)
    assert not [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
