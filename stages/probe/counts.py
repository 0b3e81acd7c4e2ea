"""Per-dataset probe counts over the catalog: the probe stage's summary and `curate status`."""
from __future__ import annotations

from manifests import catalog


def probe_counts(con) -> list[list]:
    """Per dataset: [dataset, to probe, probed ok, failed, pending] over the samples ingest resolved.

    Counts of each table, not a join: every probes row is one distinct resolved sample (the probe
    plans over those), so pending is the difference, as in ``probe_status``."""
    rows = {ds: [n, 0, 0] for ds, n in con.execute(
        "SELECT dataset, count(*) FROM samples WHERE error IS NULL GROUP BY 1").fetchall()}
    if "probes" in catalog.views(con):
        for ds, ok, failed in con.execute("SELECT dataset, count(*) FILTER (error IS NULL), "
                                          "count(*) FILTER (error IS NOT NULL) FROM probes GROUP BY 1").fetchall():
            if ds in rows:
                rows[ds][1:] = [ok, failed]
    return [[ds, n, ok, failed, max(0, n - ok - failed)] for ds, (n, ok, failed) in sorted(rows.items())]


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
