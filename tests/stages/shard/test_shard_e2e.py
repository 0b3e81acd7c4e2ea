"""End to end on the demo corpus: ingest .. filter (fake judge server), encode with the tiny real
encoders, shard, `curate verify`, `curate preview`; plus the pretext records against the pixels."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from PIL import Image

from manifests import catalog
from pipeline.curate import runner
from pipeline.curate.config import load_config
from stages.shard.verify import verify_workdir
from fake_judge import FakeJudgeServer

from conftest import curate_bin, demo_config_file

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(900)]

FAST_JUDGE = ["judge.max_frames=4", "judge.min_frames=2", "judge.video_min_pixels=3136",
              "judge.video_max_pixels=12544", "judge.image_min_pixels=3136", "judge.image_max_pixels=12544"]
# Every sample passes (the fake judge's scores are not the point here); every pretext variant.
KEEP_ALL = ["filter.image.at_least={}", "filter.video.at_least={}", "filter.video.greater_than={}",
            "filter.clip.at_least={}", "filter.clip.greater_than={}", "pretext.mode=all"]


@pytest.fixture(scope="module")
def tiny_encoders(tmp_path_factory):
    from pipeline.curate.demo.tiny_encoders import build_tiny_encoders

    return build_tiny_encoders(tmp_path_factory.mktemp("tiny-encoders"))


def test_demo_run_through_shard_verify_and_preview(ray_session, demo_corpus, tiny_encoders, tmp_path):
    work = tmp_path / "run"
    models = [f"encode.{k}={v}" for k, v in tiny_encoders.items()]
    with FakeJudgeServer() as judge:
        cfg = load_config(demo_config_file(demo_corpus, tmp_path),
                          [f"judge.urls=[{judge.url}]", *FAST_JUDGE, *KEEP_ALL, *models,
                           "shard.target_bytes=200000"])
        reports = runner.run(cfg, "all", work)
    assert [r.stage for r in reports] == runner.STAGE_ORDER
    con = catalog.connect(work)
    n_ok = con.execute("SELECT count(*) FROM encoded WHERE error IS NULL AND sample_id IN "
                       "(SELECT sample_id FROM selected WHERE kept)").fetchone()[0]
    assert n_ok > 0
    assert con.execute("SELECT count(*), count(DISTINCT key) FROM shard_keys").fetchone() == (n_ok, n_ok)
    purposes = {r[0] for r in con.execute("SELECT DISTINCT purpose FROM shards").fetchall()}
    assert purposes == {"stage0", "stage1"}

    res = subprocess.run([curate_bin(), "verify", "--workdir", str(work)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr

    # a raw clip with all four variants, and a video edit pair
    raw = con.execute("SELECT sample_id FROM encoded WHERE error IS NULL AND variant = 'tube' AND sample_id IN "
                      "(SELECT sample_id FROM encoded WHERE error IS NULL AND variant = 'speed') "
                      "ORDER BY 1 LIMIT 1").fetchone()[0]
    edit = con.execute("SELECT sample_id FROM encoded WHERE error IS NULL AND purpose = 'stage1' "
                       "ORDER BY 1 LIMIT 1").fetchone()[0]
    out = tmp_path / "sheet.png"
    res = subprocess.run([curate_bin(), "preview", "--workdir", str(work), "--sample", raw, "--sample", edit,
                          "--out", str(out), "--gif"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    sheet = Image.open(out)
    assert sheet.width > 400 and sheet.height > 5 * 96  # 1 + 3 rows (raw: target + 3 sources) + 2 (edit)
    gif = Image.open(out.with_suffix(".gif"))
    assert gif.n_frames == 9  # demo clips: 9 frames
    res = subprocess.run([curate_bin(), "preview", "--workdir", str(work), "--n", "2", "--out",
                          str(tmp_path / "n.png")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and (tmp_path / "n.png").exists(), res.stderr

    # the record in the shard JSON rebuilds exactly the source the encode stage perturbed
    from stages.pretext import apply_record, perturb_source, pretext_rng
    from stages.shard.preview import sample_rows

    sid, pretext = con.execute("SELECT sample_id, pretext FROM encoded WHERE error IS NULL AND variant = 'cube' "
                               "ORDER BY 1 LIMIT 1").fetchone()
    record = json.loads(pretext)
    title, rows = sample_rows(con, sid, None)
    target = rows[0][1]
    again, rec2 = perturb_source("cube", target, cfg.pretext, pretext_rng(cfg.run.seed, sid, "cube"))
    assert rec2 == record  # same seed, same boxes: the shard's record is the one encode used
    assert np.array_equal(apply_record(target, record), again)
    assert verify_workdir(work).ok
