"""The same stage code on an existing 2-node Ray cluster (`ray start --head` + a second node)."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from pipeline.curate import runner
from pipeline.curate.config import load_config

from conftest import curate_bin, demo_config_file, part_digests

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# The CPU stages; the judge stages have their own tests (test_judge_*.py).
STAGES = "ingest,probe"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_bin() -> str:
    return str(Path(os.sys.executable).parent / "ray")


@pytest.fixture
def two_node_cluster(tmp_path):
    port = _free_port()
    address = f"127.0.0.1:{port}"
    temp_dir = Path("/tmp") / f"ray_c{port}"  # short: unix socket paths are length-limited
    env = {**os.environ, "RAY_ADDRESS": ""}
    common = ["--num-cpus=1", "--disable-usage-stats"]
    try:
        subprocess.run([_ray_bin(), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                        "--include-dashboard=false", f"--temp-dir={temp_dir}", *common],
                       check=True, capture_output=True, env=env, timeout=180)
        subprocess.run([_ray_bin(), "start", f"--address={address}", "--node-ip-address=127.0.0.1", *common],
                       check=True, capture_output=True, env=env, timeout=180)
        yield address
    finally:
        # Stop only this cluster's processes (`ray stop` would also stop the test session's cluster).
        for p in psutil.process_iter(["cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if address in cmd or str(temp_dir) in cmd:
                try:
                    p.kill()
                except psutil.Error:
                    pass


def test_run_on_two_node_cluster_matches_local(two_node_cluster, ray_session, demo_corpus, tmp_path):
    config = demo_config_file(demo_corpus, tmp_path)
    workdir = tmp_path / "cluster"
    res = subprocess.run([curate_bin(), "run", "--config", str(config), "--stage", STAGES, "--workdir", str(workdir),
                          "--ray-address", two_node_cluster],
                         capture_output=True, text=True, timeout=500)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 nodes, 2 CPUs" in res.stderr  # it really ran on the existing 2-node cluster

    # Same rows and bytes as the in-process run of the same config (on the session's cluster).
    local = tmp_path / "local"
    runner.run(load_config(config), STAGES, local)
    for table in ("samples", "probes"):
        assert part_digests(workdir, table) == part_digests(local, table), table
