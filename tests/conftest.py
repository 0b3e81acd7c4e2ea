"""Shared fixtures: one Ray session per test run, the demo corpus built once, real-clip paths."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Every stage's tables registered, as the `curate` app has them: tests that open the catalog
# directly (catalog.connect) see the same views the CLI does.
import pipeline.curate.registry  # noqa: F401,E402

REPO = Path(__file__).resolve().parents[1]
SHARED_REALCLIPS = REPO.parent / "shared" / "realclips"


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray cluster (2 CPUs, no dashboard) for every Ray test of the session."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory) -> Path:
    """The embedded demo corpus (every published layout), built once per session."""
    from pipeline.curate.demo import build_corpus

    root = tmp_path_factory.mktemp("corpus")
    build_corpus(root)
    return root


def demo_config_file(corpus: Path, dest: Path, extra: str = "") -> Path:
    """configs/demo.yaml with its roots pointed at ``corpus`` (a copy, so tests can edit it)."""
    text = (REPO / "configs" / "demo.yaml").read_text().replace("runs/demo/corpus", str(corpus))
    path = dest / "demo.yaml"
    path.write_text(text + extra)
    return path


@pytest.fixture
def demo_config(demo_corpus, tmp_path) -> Path:
    return demo_config_file(demo_corpus, tmp_path)


@pytest.fixture
def realclips() -> Path:
    if not SHARED_REALCLIPS.exists():
        pytest.skip(f"{SHARED_REALCLIPS} not present (the shared real clips live beside the repo)")
    return SHARED_REALCLIPS


def part_digests(workdir: Path, table: str) -> dict[str, str]:
    """sha256 of every finished part of a table, by path relative to the workdir."""
    import hashlib

    from manifests.io import list_parts

    return {str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in list_parts(workdir, table)}


def curate_bin() -> str:
    exe = Path(os.sys.executable).parent / "curate"
    return str(exe) if exe.exists() else shutil.which("curate")
