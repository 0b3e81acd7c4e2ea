"""`curate status`: per-stage counts (done, failed, pending) read from the workdir alone."""
from __future__ import annotations

import json
from pathlib import Path

import pipeline.curate.registry  # noqa: F401  (registers every stage's tables: the catalog's views)
from manifests import catalog, repeats
from stages.probe.counts import probe_counts
from stages.judge.counts import judge_counts


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
    n_repeats = repeats.count(workdir)
    if "samples" in present:
        rows.append(["repeats", n_repeats, 0, 0, "rows repeating an earlier sample id, dropped from "
                     "samples (query the `repeats` view)"])
    if "samples" in present:
        probed = probe_counts(con)  # once: a join of the whole manifest with the probes
        done, pfail, pending = (sum(r[i] for r in probed) for i in (2, 3, 4))
        rows.append(["probe", done, pfail, pending, ""])
        probed_ok = done
        skipped = 0
        if "screen_verdicts" in present:  # the screen stage: its rows, and what the judge skips
            screened, serr, skipped = con.execute(
                "SELECT count(*), count(*) FILTER (error_kind IS NOT NULL), (SELECT count(*) FILTER (judge_skip) "
                "FROM screen_verdicts) FROM screens").fetchone()
            rows.append(["screen", screened - serr, serr, 0, f"{skipped} dropped before the judge"])
        judged = judge_counts(con) if "scores" in present else []
        sdone, sfail = (sum(r[i] for r in judged) for i in (2, 3))
        rows.append(["vlm-filter", sdone, sfail, max(0, probed_ok - sdone - sfail - skipped),
                     "failed = judge status not ok"])
        if "selected" in present:
            kept, rejected = con.execute(
                "SELECT count(*) FILTER (kept), count(*) FILTER (NOT kept) FROM selected").fetchone()
            rows.append(["filter", kept, 0, 0, f"{rejected} rejected by a rule"])
            if "encoded" in present:
                rows.append(encode_row(con, kept))
                enc_ok = rows[-1][1]
            if "shard_keys" in present:
                sharded, n_shards = con.execute(
                    "SELECT count(*), count(DISTINCT shard) FROM shard_keys").fetchone()
                rows.append(["shard", sharded, 0, max(0, (enc_ok if "encoded" in present else 0) - sharded),
                             f"{n_shards} shards; `curate verify` checks them"])
    return rows


def encode_row(con, kept: int) -> list:
    """Keys of kept samples (ok, failed), kept samples not encoded yet, and the keys of samples
    no longer kept (left out of the shards; `curate prune` removes them)."""
    ok, failed, done, stale = con.execute(
        "WITH e AS (SELECT e.sample_id, e.error, coalesce(sel.kept, false) AS kept FROM encoded e "
        "LEFT JOIN selected sel USING (sample_id)) "
        "SELECT count(*) FILTER (kept AND error IS NULL), count(*) FILTER (kept AND error IS NOT NULL), "
        "count(DISTINCT sample_id) FILTER (kept), count(*) FILTER (NOT kept) FROM e").fetchone()
    note = "keys (sample x variant) of kept samples; pending = kept samples"
    if stale:
        note += f"; {stale} keys no longer kept (`curate prune` removes them)"
    return ["encode", ok, failed, max(0, kept - done), note]
