"""The encode stage's counts: kept samples and those encoded (its plan's line), and its `curate status` row."""
from __future__ import annotations

from pathlib import Path

from manifests import catalog
from pipeline.stage import StatusContext


def counts(workdir: Path) -> tuple[int, int]:
    """(kept samples, kept samples with encoded rows)."""
    con = catalog.connect(workdir)
    enc = "encoded" if "encoded" in catalog.views(con) else "(SELECT NULL::VARCHAR AS sample_id WHERE false)"
    kept, done = con.execute(f"SELECT count(*), count(*) FILTER (sample_id IN (SELECT sample_id FROM {enc})) "
                             f"FROM selected WHERE kept").fetchone()
    return int(kept), int(done)


def encode_status(sc: StatusContext) -> list[list]:
    """Keys of kept samples (ok, failed), kept samples not encoded yet, and the keys of samples
    no longer kept (left out of the shards; `curate prune` removes them). An exact count needs
    the kept ids matched with the keys: one full join of those two id columns (a kept sample
    without a key is one unmatched row, so no distinct count of the keys is needed)."""
    if "samples" not in sc.present or "selected" not in sc.present or "encoded" not in sc.present:
        return []
    ok, failed, pending, stale = sc.con.execute(
        "SELECT count(*) FILTER (k.sample_id IS NOT NULL AND e.sample_id IS NOT NULL AND e.error IS NULL), "
        "count(*) FILTER (k.sample_id IS NOT NULL AND e.error IS NOT NULL), "
        "count(*) FILTER (e.sample_id IS NULL), count(*) FILTER (k.sample_id IS NULL) "
        "FROM (SELECT sample_id FROM selected WHERE kept) k FULL JOIN (SELECT sample_id, error FROM encoded) e "
        "USING (sample_id)").fetchone()
    sc.figures["encoded_ok"] = ok
    note = "keys (sample x variant) of kept samples; pending = kept samples"
    if stale:
        note += f"; {stale} keys no longer kept (`curate prune` removes them)"
    return [["encode", ok, failed, pending, note]]
