"""Bounded samples parts: a Koala CSV read as many byte-range units ends each unit on a short part;
ingest re-cuts those into full parts, keeping every row, and a resumed run ends with the bytes of
an uninterrupted one wherever it was stopped (during the units or inside the re-cut)."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from manifests import catalog, recut, repeats
from manifests.io import list_parts
from pipeline.curate import runner
from pipeline.curate.config import load_config
from pipeline.curate.demo import koala as demo
from stages.ingest.core import bound_parts, ingest_adapter, ingest_unit
from stages.ingest.koala import KoalaAdapter

from conftest import part_digests

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

ROWS_PER_PART = 1000
FILES, ROWS_PER_FILE, REPEATED = 2, 6_000, 12


@pytest.fixture(scope="module")
def koala_root(tmp_path_factory) -> Path:
    """Two CSVs of ~2 MB (each read as several 1 MB byte ranges) in the published columns, eight
    windows per video, the first rows of the first file listed again at the end of the second."""
    root = tmp_path_factory.mktemp("koala")
    ts = "['0:00:0{}.000', '0:00:0{}.500']"
    first = []
    for f in range(1, FILES + 1):
        rows = [[f"f{f}v{i // 8}_{i % 8}", f"https://www.youtube.com/watch?v=f{f}v{i // 8:08d}",
                 ts.format(i % 8, i % 8), f"clip {i} of file {f}, " + "w" * 300, 0.5, 5.0, 0.3, 0.9]
                for i in range(ROWS_PER_FILE)]
        first = first or rows[:REPEATED]
        if f == FILES:
            rows += first
        with open(root / f"Koala_36M_{f}.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(demo.COLUMNS)
            w.writerows(rows)
    (root / "videos").mkdir()
    return root


def _config(root: Path, tmp_path: Path):
    path = tmp_path / "koala.yaml"
    path.write_text(f"run:\n  rows_per_part: {ROWS_PER_PART}\nray:\n  num_cpus: 2\n"
                    f"datasets:\n  koala:\n    root: {root}\n    video_root: {root / 'videos'}\n"
                    f"    download: youtube\n    unit_mb: 1\n    read_block_mb: 1\n")
    return load_config(path)


def _digest(workdir: Path, table: str = "samples") -> tuple[int, int]:
    """(rows, order-free digest of every column of every row) through the catalog view."""
    con = catalog.connect(workdir)
    return con.execute(f"SELECT count(*), sum(hash(t)::HUGEINT) FROM {table} t").fetchone()


def _state(workdir: Path) -> dict[str, bytes]:
    root = workdir / "state" / "samples"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.json"))
            if p.name != "_units.json" and not p.name.startswith("_fingerprint")}


@pytest.fixture(scope="module")
def reference(ray_session, koala_root, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("reference")
    runner.run(_config(koala_root, work), "ingest", work / "w")
    return work / "w"


def test_parts_are_bounded_by_rows_and_every_row_is_kept(koala_root, reference, tmp_path):
    cfg = _config(koala_root, tmp_path)
    adapter = KoalaAdapter(cfg.datasets.koala)
    assert len(adapter.units()) >= 2 * FILES  # byte ranges: each ends on a short part

    # the same units written as they were before the re-cut: a short part per unit
    plain = tmp_path / "plain"
    ingest_adapter(adapter, plain, ROWS_PER_PART)
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in list_parts(plain, "samples"))
    assert rows == FILES * ROWS_PER_FILE + REPEATED
    assert _digest(plain)[0] == rows  # no repeats marked yet: the view shows every row
    repeats.mark(plain)

    parts = list_parts(reference, "samples")
    assert len(parts) == math.ceil(rows / ROWS_PER_PART) <= rows / ROWS_PER_PART + 1
    assert len(list_parts(plain, "samples")) > len(parts)
    assert recut.entries(reference, "samples"), "the short parts were re-cut"
    assert all(pq.ParquetFile(p).metadata.num_rows == ROWS_PER_PART for p in parts[:-1])
    # nothing lost or doubled: the view (repeats dropped) and the repeats themselves are the same
    # rows, with the same ids, as without the re-cut
    assert _digest(reference) == _digest(plain)
    assert _digest(reference, "repeats")[0] == _digest(plain, "repeats")[0] == REPEATED
    con = catalog.connect(reference)
    assert con.execute("SELECT count(*) = count(DISTINCT sample_id) FROM samples").fetchone()[0]
    # a batch of fewer rows than one part (the demo's case) is left as the units wrote it
    small = tmp_path / "small"
    ingest_adapter(adapter, small, ROWS_PER_PART)
    before = part_digests(small, "samples")
    assert bound_parts(small, rows_per_part=10 * rows) == 0 and part_digests(small, "samples") == before


@pytest.mark.parametrize("stop", ["units", 1, 2, 3, 4])
def test_resume_after_interruption_is_byte_identical(koala_root, reference, tmp_path, stop):
    """Stopped half-way through the units, or after each step of the re-cut (temps written; ledger
    committed; one output renamed; all renamed): the view never shows a row twice or loses one,
    and the re-run ends with the reference's parts, repeats and ledger, byte for byte."""
    cfg = _config(koala_root, tmp_path)
    adapter = KoalaAdapter(cfg.datasets.koala)
    victim = tmp_path / "victim"
    units = adapter.units()
    if stop == "units":
        for u in units[: len(units) // 2]:
            ingest_unit(adapter, u, victim, ROWS_PER_PART)
    else:
        ingest_adapter(adapter, victim, ROWS_PER_PART)
        repeats.mark(victim)  # what bound_parts does first: the view then hides the repeats
        whole = _digest(victim)
        assert bound_parts(victim, ROWS_PER_PART, stop_after=stop) > 0
        assert _digest(victim) == whole  # what a reader sees while the re-cut is stopped there
    runner.run(cfg, "ingest", victim)
    assert part_digests(victim, "samples") == part_digests(reference, "samples")
    assert part_digests(victim, "duplicates") == part_digests(reference, "duplicates")
    assert _state(victim) == _state(reference)
    assert not list(victim.rglob(".*" + recut.TEMP_SUFFIX)) and not list(victim.rglob("*.tmp"))


def test_parts_stay_bounded_across_ingest_runs_that_add_units(koala_root, reference, tmp_path):
    """Three ingest runs, each adding units: each run's re-cut takes the short last part of the
    earlier ones too, so the parts stay at ceil(rows / rows_per_part) with every row and repeat
    kept; a short part a later stage has read (a probe part named after it) is left alone."""
    cfg = _config(koala_root, tmp_path)
    adapter = KoalaAdapter(cfg.datasets.koala)
    units = adapter.units()
    work = tmp_path / "runs"
    for upto in (2, 4, len(units)):
        for u in units[:upto]:
            ingest_unit(adapter, u, work, ROWS_PER_PART)
        bound_parts(work, ROWS_PER_PART)
        rows = sum(pq.ParquetFile(p).metadata.num_rows for p in list_parts(work, "samples"))
        assert len(list_parts(work, "samples")) == math.ceil(rows / ROWS_PER_PART)
        assert _digest(work)[0] + _digest(work, "repeats")[0] == rows
    # the same rows kept and the same rows repeating (where each repeat sits depends on the cuts)
    same = "(SELECT * EXCLUDE (part, part_row) FROM repeats)"
    assert _digest(work) == _digest(reference) and _digest(work, same) == _digest(reference, same)
    entries = recut.entries(work, "samples")
    assert len(entries) >= 2 and any("/merged-b" in p for e in entries[1:] for p in e["replaces"])  # across runs
    assert not list(work.rglob(".*" + recut.TEMP_SUFFIX)) and not list(work.rglob("*.tmp"))

    # a probe read the last (short) part: the next run that adds rows leaves it as it is
    last = list_parts(work, "samples")[-1]
    assert pq.ParquetFile(last).metadata.num_rows < ROWS_PER_PART
    probe = work / "tables" / "probes" / "koala" / f"{last.stem}-r000000000.parquet"
    probe.parent.mkdir(parents=True)
    probe.write_bytes(b"")
    rows_csv = [[f"x{i}", f"https://www.youtube.com/watch?v=x{i:010d}", "['0:00:01.000', '0:00:02.000']",
                 f"extra {i}", 0.5, 5.0, 0.3, 0.9] for i in range(ROWS_PER_PART + 10)]
    with open(koala_root / "Koala_36M_9.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(demo.COLUMNS)
        w.writerows(rows_csv)
    try:
        for u in KoalaAdapter(cfg.datasets.koala).units():
            ingest_unit(adapter, u, work, ROWS_PER_PART)
        before = pq.ParquetFile(last).metadata.num_rows
        bound_parts(work, ROWS_PER_PART)
        assert last.exists() and pq.ParquetFile(last).metadata.num_rows == before
    finally:
        (koala_root / "Koala_36M_9.csv").unlink()  # the module's other tests read this folder
