"""bench/bench_screen.py --smoke runs end to end and prints every table it promises."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_bench_screen_smoke(realclips):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, str(REPO / "bench" / "bench_screen.py"), "--smoke"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=840)
    assert r.returncode == 0, r.stderr[-2000:]
    for line in ("duplicates (goal", "contamination (benchmark", "images: JPEG stills", "copied edits at",
                 "still / camera-only", "CPU per video sample", "grouping at scale"):
        assert line in r.stdout, r.stdout
    assert "reencode" in r.stdout and "zoom" in r.stdout and "2000 samples" in r.stdout and "distinct stills" in r.stdout
