"""No benchmark rots: every script under bench/ runs in its smoke mode (tiny N, seconds) and prints
its figures. The figures stay out of the tests (speed is measured by the benches, not asserted);
found by glob, so a new bench without ``--smoke`` fails here."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHES = sorted((REPO / "bench").glob("bench_*.py"))
# Benches that need more than the repository and its two environments, and why.
NEEDS_JUDGE_ENV = {"bench_judge_vllm.py", "bench_judge_vllm_backend.py"}

pytestmark = pytest.mark.timeout(900)


@pytest.mark.parametrize("bench", BENCHES, ids=[b.name for b in BENCHES])
def test_bench_smoke_runs_and_prints_figures(bench):
    assert "--smoke" in bench.read_text(), f"{bench.name} has no --smoke mode (tiny N, seconds)"
    if bench.name in NEEDS_JUDGE_ENV:
        from stages.judge.server import judge_env_missing_reason

        missing = judge_env_missing_reason()
        if missing:
            pytest.skip(f"{bench.name} needs the judge environment: {missing}")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, str(bench), "--smoke"], capture_output=True, text=True, timeout=840,
                         cwd=REPO, env=env)
    assert res.returncode == 0, f"{bench.name} --smoke failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    assert any(ch.isdigit() for ch in res.stdout), f"{bench.name} printed no figures:\n{res.stdout}"
