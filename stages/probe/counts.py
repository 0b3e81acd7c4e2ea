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
