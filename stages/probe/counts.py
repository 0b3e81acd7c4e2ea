"""Per-dataset probe counts over the catalog: the probe stage's summary and `curate status`."""
from __future__ import annotations

from manifests import catalog


def probe_counts(con) -> list[list]:
    """Per dataset: [dataset, to probe, probed ok, failed, pending] over the samples ingest resolved."""
    if "probes" not in catalog.views(con):
        sql = "SELECT dataset, count(*), 0, 0, count(*) FROM samples WHERE error IS NULL GROUP BY 1 ORDER BY 1"
    else:
        sql = ("SELECT s.dataset, count(*), count(p.sample_id) FILTER (p.error IS NULL), "
               "count(p.sample_id) FILTER (p.error IS NOT NULL), count(*) - count(p.sample_id) "
               "FROM samples s LEFT JOIN probes p USING (sample_id) WHERE s.error IS NULL GROUP BY 1 ORDER BY 1")
    return [list(r) for r in con.execute(sql).fetchall()]


def probe_status(sc) -> list[list]:
    """The probe's `curate status` row: every probes row is one distinct sample ingest resolved
    (the probe plans over those), so what is pending is their difference - counts of each table,
    not a join of the manifest with the probes."""
    if "samples" not in sc.present:
        return []
    done = failed = 0
    if "probes" in sc.present:
        done, failed = sc.con.execute(
            "SELECT count(*) FILTER (error IS NULL), count(*) FILTER (error IS NOT NULL) FROM probes").fetchone()
    sc.figures["probed_ok"] = done
    return [["probe", done, failed, max(0, sc.figures.get("samples_ok", 0) - done - failed), ""]]
