"""`curate status`: per-stage counts (done, failed, pending) read from the workdir alone."""
from __future__ import annotations

import json
from pathlib import Path

from manifests import catalog


def stage_status(workdir: Path) -> list[list]:
    """Rows of [stage, done, failed, pending, note]."""
    workdir = Path(workdir)
    con = catalog.connect(workdir)
    present = set(catalog.views(con))
    rows = []
    units_file = workdir / "state" / "samples" / "_units.json"
    units = json.loads(units_file.read_text()) if units_file.exists() else []
    done_units = {p.stem for p in (workdir / "state" / "samples").glob("*/*.json")}
    if "samples" in present:
        ok, failed = con.execute(
            "SELECT count(*) FILTER (error IS NULL), count(*) FILTER (error IS NOT NULL) FROM samples"
        ).fetchone()
    else:
        ok = failed = 0
    pending_units = len(set(units) - done_units)
    rows.append(["ingest", ok, failed, f"{pending_units} units" if pending_units else 0,
                 f"{len(units) - pending_units}/{len(units)} units done"])
    if "samples" in present:
        if "probes" in present:
            done, pfail, pending = con.execute(
                "SELECT count(p.sample_id) FILTER (p.error IS NULL), count(p.sample_id) FILTER "
                "(p.error IS NOT NULL), count(*) - count(p.sample_id) FROM samples s "
                "LEFT JOIN probes p USING (sample_id) WHERE s.error IS NULL"
            ).fetchone()
        else:
            done, pfail, pending = 0, 0, ok
        rows.append(["probe", done, pfail, pending, ""])
        probed_ok = done
        if "scores" in present:
            sdone, sfail = con.execute(
                "SELECT count(*) FILTER (status IN ('ok', 'repaired')), "
                "count(*) FILTER (status NOT IN ('ok', 'repaired')) FROM scores").fetchone()
        else:
            sdone = sfail = 0
        rows.append(["vlm-filter", sdone, sfail, probed_ok - sdone - sfail, "failed = judge status not ok"])
        if "selected" in present:
            kept, rejected = con.execute(
                "SELECT count(*) FILTER (kept), count(*) FILTER (NOT kept) FROM selected").fetchone()
            rows.append(["filter", kept, 0, 0, f"{rejected} rejected by a rule"])
    return rows
