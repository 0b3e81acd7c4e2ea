"""The DuckDB catalog: views per stage table, the joined view, de-duplication, read-only guard."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from manifests import catalog
from manifests.io import list_parts, write_part
from manifests.schema import PROBES, SAMPLES, SCHEMA_VERSION, empty_sample, make_sample_id


def _samples(workdir: Path, dataset: str, n: int, part: str = "u-00000", errors: int = 0) -> list[str]:
    rows = []
    for i in range(n):
        sid = make_sample_id(dataset, i)
        rows.append(empty_sample(dataset, sid, modality="video", task="edit", category="style",
                                 target_uri=f"/x/{i}.mp4", native_scores={"q": i / 10},
                                 error="bad record" if i < errors else None))
    write_part(workdir / "tables" / "samples" / dataset / f"{part}.parquet",
               pa.Table.from_pylist(rows, schema=SAMPLES))
    return [r["sample_id"] for r in rows]


def test_views_and_join(tmp_path):
    ids = _samples(tmp_path, "ditto", 5, errors=1)
    _samples(tmp_path, "koala", 3)
    probe_rows = [{f.name: None for f in PROBES} | {"sample_id": s, "dataset": "ditto", "target_width": 832,
                                                    "schema_version": SCHEMA_VERSION} for s in ids[1:3]]
    probe_rows[1]["error"], probe_rows[1]["error_kind"] = "target: missing", "missing"
    write_part(tmp_path / "tables" / "probes" / "ditto" / "p.parquet",
               pa.Table.from_pylist(probe_rows, schema=PROBES))
    con = catalog.connect(tmp_path)
    assert {"samples", "probes", "samples_full"} <= set(catalog.views(con))
    assert con.execute("SELECT dataset, count(*) FROM samples GROUP BY 1 ORDER BY 1").fetchall() == [
        ("ditto", 5), ("koala", 3)]
    full = con.execute("SELECT sample_id, target_width, probe_error_kind, error FROM samples_full "
                       "WHERE dataset='ditto' ORDER BY sample_id").fetchall()
    assert len(full) == 5
    by_id = {r[0]: r for r in full}
    assert by_id[ids[1]][1] == 832 and by_id[ids[2]][2] == "missing" and by_id[ids[0]][3] == "bad record"
    # native_scores is a real MAP
    assert con.execute(f"SELECT native_scores['q'] FROM samples WHERE sample_id='{ids[3]}'").fetchone()[0] == 0.3


@pytest.mark.parametrize("sql", [
    "CREATE TABLE t AS SELECT 1",
    "COPY (SELECT * FROM samples) TO '/tmp/leak.csv'",
    "INSERT INTO samples VALUES (1)",
    "SELECT 1; DROP VIEW samples",
    "ATTACH '/tmp/x.db' AS x",
    "SET threads = 1",
])
def test_writes_are_refused(tmp_path, sql):
    _samples(tmp_path, "ditto", 2)
    with pytest.raises(catalog.ReadOnlyError, match="read-only"):
        catalog.query(tmp_path, sql)


def test_query_returns_arrow(tmp_path):
    _samples(tmp_path, "ditto", 4)
    t = catalog.query(tmp_path, "SELECT count(*) AS n FROM samples")
    assert t.to_pylist() == [{"n": 4}]


def test_duplicates_keep_first(tmp_path):
    from manifests.repeats import mark as mark_duplicates

    _samples(tmp_path, "ditto", 3, part="a-00000")
    _samples(tmp_path, "ditto", 2, part="b-00000")  # ids 0 and 1 again
    assert mark_duplicates(tmp_path) == 2
    con = catalog.connect(tmp_path)
    assert con.execute("SELECT count(*), count(DISTINCT sample_id) FROM samples").fetchone() == (3, 3)


def test_probe_units_skip_repeated_rows(tmp_path):
    """The repeats the samples view drops are handed to the probe units that hold them, per slice."""
    from manifests.repeats import mark as mark_duplicates
    from stages.probe.stage import probe_units

    _samples(tmp_path, "ditto", 3, part="a-00000")
    _samples(tmp_path, "ditto", 5, part="b-00000")  # rows 0-2 repeat part a's ids
    mark_duplicates(tmp_path)
    units = {(Path(u.params["part"]).stem, u.params["offset"]): u.params["drop"]
             for u in probe_units(tmp_path, rows_per_task=2)}
    assert units == {("a-00000", 0): [], ("a-00000", 2): [],
                     ("b-00000", 0): [0, 1], ("b-00000", 2): [0], ("b-00000", 4): []}


def test_repeats_are_marked_incrementally(tmp_path):
    """A later ingest scans only its new parts and adds a part; earlier parts and what they kept stay."""
    from manifests import repeats

    _samples(tmp_path, "ditto", 3, part="b-00000")
    assert repeats.mark(tmp_path) == 0
    _samples(tmp_path, "ditto", 4, part="a-00000")  # ids 0-2 again, in a part that sorts first
    _samples(tmp_path, "koala", 2, part="a-00000")
    first = list_parts(tmp_path, "duplicates")
    assert repeats.mark(tmp_path) == 3
    parts = list_parts(tmp_path, "duplicates")
    assert len(parts) == 1 and not first  # one new part; nothing rewritten
    before = parts[0].read_bytes()
    assert repeats.mark(tmp_path) == 3 and parts[0].read_bytes() == before  # nothing new: nothing done
    con = catalog.connect(tmp_path)
    # The rows an earlier run kept stay kept: the repeats are in the part added later.
    assert con.execute("SELECT DISTINCT part FROM repeats").fetchall() == [("ditto/a-00000.parquet",)]
    assert con.execute("SELECT count(*), count(DISTINCT sample_id) FROM samples").fetchone() == (6, 6)
    assert con.execute("SELECT dataset, count(*) FROM samples GROUP BY 1 ORDER BY 1").fetchall() == [
        ("ditto", 4), ("koala", 2)]


def test_views_do_not_unify_every_file(tmp_path):
    """Parts in the registered schema are read by glob without union_by_name; an older first part
    lacking a declared column falls back to it, and both read the same rows."""
    _samples(tmp_path, "ditto", 3)
    con = catalog.connect(tmp_path)
    sql = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'samples'").fetchone()[0]
    assert "union_by_name" not in sql
    old = pa.Table.from_pylist([{"sample_id": "old:1", "dataset": "old", "schema_version": SCHEMA_VERSION}])
    write_part(tmp_path / "tables" / "samples" / "old" / "a-00000.parquet", old)
    con = catalog.connect(tmp_path)
    assert "union_by_name" in con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'samples'").fetchone()[0]
    assert con.execute("SELECT count(*), count(skip_frames) FROM samples").fetchone() == (4, 0)


def test_connection_memory_is_bounded_and_spills_under_the_workdir(tmp_path, monkeypatch):
    monkeypatch.setenv(catalog.MEMORY_LIMIT_ENV, "256MB")
    con = catalog.connect(tmp_path)
    limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    spill = con.execute("SELECT current_setting('temp_directory')").fetchone()[0]
    assert limit.replace(" ", "").upper() in {"256.0MB", "244.1MIB", "256MB"}, limit
    assert spill == (tmp_path / "state" / "duckdb_tmp").as_posix()
    monkeypatch.setenv(catalog.MEMORY_LIMIT_ENV, "lots")
    with pytest.raises(ValueError, match=catalog.MEMORY_LIMIT_ENV):
        catalog.connect(tmp_path)
