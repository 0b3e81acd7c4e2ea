"""`curate status` counts each table on its own (no joins of whole tables): its numbers must be
those of the views the user queries, also where repeated ids and failed rows meet (a failed row
that repeats an id is dropped from `samples` like any repeat)."""
from __future__ import annotations

import pyarrow as pa

from manifests import catalog, repeats
from manifests.io import dataset_dir, write_part
from manifests.schema import SAMPLES
from pipeline.curate.status import stage_status
from stages.probe.counts import probe_counts


def _samples(ids: list[str], errors: list[str | None]) -> pa.Table:
    n = len(ids)
    cols = {f.name: pa.nulls(n, f.type) for f in SAMPLES}
    cols.update(sample_id=pa.array(ids), dataset=pa.array(["koala"] * n), error=pa.array(errors, pa.string()),
                schema_version=pa.array([1] * n, pa.int16()))
    return pa.table(cols).cast(SAMPLES)


def test_status_counts_equal_the_views_with_failed_repeats(tmp_path):
    part = dataset_dir(tmp_path, "samples", "koala")
    # a and c repeat within the first part, b and a across parts; some of the repeats failed,
    # some first occurrences failed too
    write_part(part / "part-00000.parquet", _samples(
        ["a", "b", "a", "c", "c", "d"], [None, "bad", "bad", None, "bad", None]))
    write_part(part / "part-00001.parquet", _samples(["b", "e", "a", "f"], [None, "bad", None, None]))
    assert repeats.mark(tmp_path) == 4

    con = catalog.connect(tmp_path)
    ok, failed = con.execute("SELECT count(*) FILTER (error IS NULL), count(*) FILTER (error IS NOT NULL) "
                             "FROM samples").fetchone()
    assert (ok, failed) == (4, 2)  # by their first rows: a, c, d, f ok; b, e failed
    rows = {r[0]: r for r in stage_status(tmp_path)}
    assert rows["ingest"][1:3] == [ok, failed]
    assert rows["repeats"][1] == con.execute("SELECT count(*) FROM repeats").fetchone()[0] == 4
    # nothing probed yet: every sample ingest resolved is pending, as the per-dataset join says
    to_probe = probe_counts(con)
    assert rows["probe"][1:4] == [0, 0, sum(r[4] for r in to_probe)] == [0, 0, 4]


def test_probe_counts_per_table_equal_the_join(tmp_path):
    """The probe stage's summary counts each table; on what the probe writes (a row per resolved
    sample it reached) that is the join of the resolved samples with their probes."""
    from manifests.schema import PROBES

    for ds, n in (("koala", 9), ("ditto", 5)):
        ids = [f"{ds}:{i}" for i in range(n)]
        write_part(dataset_dir(tmp_path, "samples", ds) / "part-00000.parquet",
                   _samples(ids, [None if i % 4 else "bad" for i in range(n)]).set_column(
                       1, SAMPLES.field("dataset"), pa.array([ds] * n)))
        probed = [s for i, s in enumerate(ids) if i % 4][:-1]  # the last resolved one not reached yet
        cols = {f.name: pa.nulls(len(probed), f.type) for f in PROBES}
        cols.update(sample_id=pa.array(probed), dataset=pa.array([ds] * len(probed)),
                    error=pa.array(["broken" if i % 3 == 0 else None for i in range(len(probed))], pa.string()),
                    schema_version=pa.array([1] * len(probed), pa.int16()))
        write_part(dataset_dir(tmp_path, "probes", ds) / "part-00000.parquet", pa.table(cols).cast(PROBES))
    con = catalog.connect(tmp_path)
    joined = con.execute(
        "SELECT s.dataset, count(*), count(p.sample_id) FILTER (p.error IS NULL), "
        "count(p.sample_id) FILTER (p.error IS NOT NULL), count(*) - count(p.sample_id) "
        "FROM samples s LEFT JOIN probes p USING (sample_id) WHERE s.error IS NULL GROUP BY 1 ORDER BY 1").fetchall()
    assert probe_counts(con) == [list(r) for r in joined]
    assert all(r[4] == 1 for r in joined) and any(r[3] for r in joined)  # pending and failed both seen
