"""The numbers of the report, read with DuckDB from a run's catalog (``manifests.catalog``).

The funnel follows each dataset's samples through the stages. A step's count is what passed it;
``lost`` is what entered it and did not pass, split by reason (ingest error text before its first
colon, probe ``error_kind``, judge ``status``, filter ``rejected_by``, encode error kind, or "not
run yet" for work still pending), each reason with two example sample ids.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from manifests import catalog
from stages.judge.schema import SCORED_STATUSES

SCORED = "(" + ", ".join(f"'{s}'" for s in SCORED_STATUSES) + ")"
STEPS = ["records", "samples", "probed", "judged", "kept", "encoded keys", "sharded samples"]


@dataclass
class Step:
    name: str
    count: int
    lost: int = 0
    reasons: list[tuple[str, int, list[str]]] = field(default_factory=list)  # reason, n, two example ids


def _reason(expr: str) -> str:
    return f"left(trim(split_part({expr}, ':', 1)), 60)"


# Each step after ``samples`` is counted on its own stage's table: (step, table, what passes, the
# reason a row did not, the reason for a sample with no row yet). A stage plans over the samples
# that passed the step before it (the probe over resolved samples, the judge over probed ones), so
# its table holds only those: a step's rows are counted without joining them to the samples, and
# what has no row yet is a difference of counts.
CHAIN = [("probed", "probes", "error IS NULL", "coalesce(error_kind, 'probe error')", "not probed yet"),
         ("judged", "scores", f"status IN {SCORED}", "'judge ' || status", "not judged yet")]


def _groups(con, sql: str) -> tuple[dict[str, int], list]:
    """({dataset: rows that passed}, [(dataset, reason, n, two ids)] of the rest) of a query
    returning (dataset, reason, n, ids) with reason NULL for the passing rows."""
    ok, lost = {}, []
    for ds, reason, n, ids in con.execute(sql).fetchall():
        if reason is None:
            ok[ds] = ok.get(ds, 0) + n
        else:
            lost.append((ds, reason, n, ids or []))
    return ok, lost


def _rows(ok: dict[str, int], lost: list) -> dict[str, int]:
    """{dataset: rows} of a table, passing or not, from ``_groups``' two halves."""
    rows = dict(ok)
    for ds, _, n, _ in lost:
        rows[ds] = rows.get(ds, 0) + n
    return rows


def _one_table(table: str, passes: str, reason: str, ids: str = "sample_id", where: str = "") -> str:
    """Per (dataset, reason) over one table: reason NULL for the rows that pass, two example ids
    for the others (only theirs are kept: a top-2 over the passing millions would cost for nothing)."""
    return (f"SELECT dataset, CASE WHEN NOT coalesce({passes}, false) THEN {reason} END AS reason, count(*), "
            f"min({ids}, 2) FILTER (WHERE NOT coalesce({passes}, false)) FROM {table} {where} GROUP BY ALL")


def _not_yet(con, before: str, table: str, reason: str) -> list:
    """(dataset, reason, n, two ids) of the samples that passed the step before (``before``: their
    sample_id, dataset) and have no row in ``table`` yet: an anti-join on the ids alone, run only
    when the counts say some are missing."""
    return [(ds, reason, n, ids) for ds, n, ids in con.execute(
        f"SELECT dataset, count(*), min(sample_id, 2) FROM ({before}) ANTI JOIN "
        f"(SELECT sample_id FROM {table}) USING (sample_id) GROUP BY 1").fetchall()]


def funnel(con, top: int = 3) -> dict[str, list[Step]]:
    """Per dataset, the steps in STEPS order (those whose table exists), each counted per (dataset,
    reason) with two example ids per reason.

    ``records`` and ``samples``, ``probed`` and ``judged`` are aggregates of one table each (one scan
    of the few columns a step reads, grouped by dataset and reason); what a stage has not reached yet
    is the previous step's count less its table's rows, and only when that is not zero an anti-join
    of the ids names two of them. ``kept`` is the one join of the judged samples with their
    selection (the selection holds every sample, whichever step it failed); the key steps join the
    kept samples with their keys."""
    present = set(catalog.views(con))
    if "samples" not in present:
        return {}
    ok, lost = _groups(con, _one_table("samples", "error IS NULL", _reason("error")))
    records = _rows(ok, lost)
    datasets = sorted(records)
    out = {ds: [Step("records", records[ds])] for ds in datasets}
    _append(out, "samples", ok, lost, top)
    before = "SELECT sample_id, dataset FROM samples WHERE error IS NULL"
    kept = None
    for name, table, passes, reason, pending in CHAIN:
        if table not in present:
            break
        prev = {ds: steps[-1].count for ds, steps in out.items()}
        ok, lost = _groups(con, _one_table(table, passes, reason))
        rows = _rows(ok, lost)
        if any(prev[ds] > rows.get(ds, 0) for ds in datasets):
            lost += _not_yet(con, before, table, pending)
        _append(out, name, ok, lost, top)
        before = f"SELECT sample_id, dataset FROM {table} WHERE {passes}"
    else:
        if "selected" in present:
            # The selection has a row for every sample (rejected_by names the first rule it failed,
            # from the sample's error on), so its rows are joined with the judged ones rather than
            # counted alone; a judged sample without a row has not been filtered yet.
            ok, lost = _groups(con, (
                "SELECT j.dataset, CASE WHEN NOT coalesce(k.kept, false) THEN coalesce('rejected_by ' || "
                "k.rejected_by, 'not filtered yet') END AS reason, count(*), min(j.sample_id, 2) FILTER "
                f"(WHERE NOT coalesce(k.kept, false)) FROM ({before}) j LEFT JOIN "
                "(SELECT sample_id, kept, rejected_by FROM selected) k USING (sample_id) GROUP BY ALL"))
            _append(out, "kept", ok, lost, top)
            kept = "SELECT sample_id, dataset FROM selected WHERE kept"
            # The filter keeps only judged samples, so its kept rows are the kept step's; where they
            # are more (the selection predates a rescore), only the judged ones are.
            if con.execute(f"SELECT count(*) FROM ({kept})").fetchone()[0] != sum(ok.values()):
                kept += f" AND sample_id IN (SELECT sample_id FROM ({before}))"
    if kept and "encoded" in present:
        _key_steps(con, present, out, top, kept)
    return dict(sorted(out.items()))


def _key_steps(con, present: set[str], out: dict[str, list[Step]], top: int, kept: str) -> None:
    """``encoded keys`` and ``sharded samples``: keys of the kept samples (``kept``: their
    sample_id, dataset), then samples in a shard."""
    # One join of the kept samples with their keys gives the keys made (reason NULL), the failed
    # ones by reason and the samples with no key yet.
    ok, lost = _groups(con, (
        "SELECT s.dataset, CASE WHEN e.sample_id IS NULL THEN 'not encoded yet' WHEN e.error IS NOT NULL "
        f"THEN {_reason('e.error')} END AS reason, count(*), min(s.sample_id, 2) FILTER (WHERE e.sample_id IS NULL "
        f"OR e.error IS NOT NULL) FROM ({kept}) s LEFT JOIN (SELECT sample_id, error FROM encoded) e "
        "USING (sample_id) GROUP BY ALL"))
    _append(out, "encoded keys", ok, lost, top)
    if "shard_keys" in present:
        # A key names its sample (stages/encode/schema.key_of), so the encoded rows of the keys in a
        # shard give the sharded samples and their dataset.
        sharded = dict(con.execute("SELECT dataset, count(DISTINCT sample_id) FROM (SELECT key, sample_id, dataset "
                                   "FROM encoded) SEMI JOIN (SELECT key FROM shard_keys) USING (key) GROUP BY 1").fetchall())
        lost = con.execute(f"SELECT dataset, 'not sharded yet', count(*), min(sample_id, 2) FROM ({kept}) s SEMI JOIN "
                           "(SELECT sample_id FROM encoded WHERE error IS NULL) USING (sample_id) ANTI JOIN "
                           "(SELECT sample_id FROM shard_keys) USING (sample_id) GROUP BY ALL").fetchall()
        _append(out, "sharded samples", sharded, lost, top)


def _append(out: dict[str, list[Step]], name: str, ok: dict, lost_rows, top: int) -> None:
    lost: dict[str, list] = {}
    for ds, reason, n, ids in lost_rows:
        lost.setdefault(ds, []).append((reason, n, sorted(ids)))
    for ds, steps in out.items():
        reasons = sorted(lost.get(ds, []), key=lambda r: (-r[1], r[0]))
        steps.append(Step(name, ok.get(ds, 0), sum(r[1] for r in reasons), reasons[:top]))


EXPECTED_EDGES = [0.5 + 0.25 * i for i in range(41)]  # the expected-score density's bins


def score_values(con, metric: str, kind: str) -> tuple[list[int], list[float]]:
    """One metric of one sample kind's scored samples, binned in DuckDB: (count per integer score
    1..10, count per EXPECTED_EDGES bin of the expected score)."""
    cols = {r[0] for r in con.execute("DESCRIBE scores").fetchall()}
    if metric not in cols:
        return [0] * 10, []
    where = f'status IN {SCORED} AND kind = ? AND "{metric}" IS NOT NULL'
    ints = dict(con.execute(f'SELECT CAST("{metric}" AS INTEGER), count(*) FROM scores WHERE {where} GROUP BY 1',
                            [kind]).fetchall())
    expected = []
    if f"{metric}_expected" in cols:
        e = f'"{metric}_expected"'
        binned = dict(con.execute(
            f"SELECT least(greatest(CAST(floor(({e} - 0.5) / 0.25) AS INTEGER), 0), 39), count(*) FROM scores "
            f"WHERE {where} AND {e} BETWEEN 0.5 AND 10.5 GROUP BY 1", [kind]).fetchall())
        expected = [binned.get(i, 0) for i in range(40)] if binned else []
    return [ints.get(v, 0) for v in range(1, 11)], expected


def binned(con, column: str, where: str = "true", bins: int = 30) -> tuple[list[int], list[float]]:
    """(counts, edges) of ``column`` over ``scores`` in ``bins`` equal bins from its min to max."""
    lo, hi = con.execute(f"SELECT min({column}), max({column}) FROM scores WHERE {column} IS NOT NULL AND {where}").fetchone()
    if lo is None:
        return [], []
    lo, hi = float(lo), float(hi)
    width = (hi - lo) / bins if hi > lo else 1.0
    got = dict(con.execute(f"SELECT least(CAST(floor(({column} - ?) / ?) AS INTEGER), {bins - 1}), count(*) FROM scores "
                           f"WHERE {column} IS NOT NULL AND {where} GROUP BY 1", [lo, width]).fetchall())
    return [got.get(i, 0) for i in range(bins)], [lo + width * i for i in range(bins + 1)]


def metric_kinds(con, judge_cfg) -> list[tuple[str, str]]:
    """(kind, metric) pairs that have scores, in the judge config's order."""
    kinds = [r[0] for r in con.execute(f"SELECT DISTINCT kind FROM scores WHERE status IN {SCORED} ORDER BY 1").fetchall()]
    return [(k, m) for k in ("video_edit", "image_edit", "clip") if k in kinds for m in judge_cfg.metrics_for(k)]


def near_threshold(con, kind: str, metric: str, op: str, value: float, field: str, n: int) -> tuple[list, list]:
    """Up to n samples just above (kept by this rule) and n just below (failed by it), nearest first."""
    return near_thresholds(con, [(kind, metric, op, value)], field, n)[0]


def near_thresholds(con, rules: list[tuple[str, str, str, float]], field: str, n: int) -> list[tuple[list, list]]:
    """``near_threshold`` of each (kind, metric, op, value), with one ``samples`` lookup for the
    candidates of every rule (each lookup is a scan of the manifest's ids)."""
    cols = {r[0] for r in con.execute("DESCRIBE scores").fetchall()}
    candidates = max(4 * int(n), 16)
    plans = []
    for kind, metric, op, value in rules:
        score = f'CAST("{metric}" AS DOUBLE)'
        if field == "expected" and f"{metric}_expected" in cols:
            score = f'coalesce("{metric}_expected", {score})'
        passes = f"score {op} {float(value)!r}"
        for where, order in ((passes, "score, sample_id"), (f"NOT ({passes})", "score DESC, sample_id")):
            plans.append((kind, score, where, order, _top(con, kind, score, where, order, candidates)))
    have = _sampled(con, [c[0] for *_, top in plans for c in top])
    sides = []
    for kind, score, where, order, top in plans:
        rows, size = [c for c in top if c[0] in have][:n], candidates
        while len(rows) < n and len(top) == size:  # too few candidates had a sample: take more
            size *= 4
            top = _top(con, kind, score, where, order, size)
            have |= _sampled(con, [c[0] for c in top if c[0] not in have])
            rows = [c for c in top if c[0] in have][:n]
        sides.append(rows)
    texts = _texts(con, [c[0] for rows in sides for c in rows])  # the few shown, not the candidates
    sides = [[(*c, *texts[c[0]]) for c in rows] for rows in sides]
    return [(sides[i], sides[i + 1]) for i in range(0, len(sides), 2)]


def _top(con, kind: str, score: str, where: str, order: str, limit: int) -> list[tuple]:
    """The first ``limit`` scored rows of ``kind`` in ``order``: (sample_id, dataset, score).

    A top-n scan over ``scores`` alone; only the few ids it names are then looked up in ``samples``
    (``_sampled``, then ``_texts`` for those shown). Joining every score with every sample first, as a plain query would, is a hash
    join over the whole manifest and dominated the report at 1M rows."""
    return con.execute(f"SELECT * FROM (SELECT sample_id, dataset, {score} AS score FROM scores "
                       f"WHERE status IN {SCORED} AND kind = ? AND {score} IS NOT NULL) WHERE {where} "
                       f"ORDER BY {order} LIMIT {int(limit)}", [kind]).fetchall()


def ids_where(ids: list[str], column: str = "sample_id") -> tuple[str, list[str]]:
    """(SQL condition, its parameters) that holds for the rows whose ``column`` is one of ``ids``.

    Written as an OR of closed ranges, not ``IN (...)``: DuckDB uses an IN list only to skip Parquet
    row groups (then decodes every column of the row groups left, and captions of ~1 KB a row made
    a lookup of a few ids cost as much as reading the whole manifest's text), while the ranges are
    evaluated inside the scan, which then decodes the other columns of the matching rows only."""
    if not ids:
        return "false", []
    return " OR ".join([f"({column} >= ? AND {column} <= ?)"] * len(ids)), [x for i in ids for x in (i, i)]


def _sampled(con, ids: list[str]) -> set[str]:
    """Those of ``ids`` that have a ``samples`` row (a scan of the ids alone)."""
    if not ids:
        return set()
    marks = ", ".join("?" * len(ids))
    return {r[0] for r in con.execute(f"SELECT sample_id FROM samples WHERE sample_id IN ({marks})", list(ids)).fetchall()}


def _texts(con, ids: list[str]) -> dict[str, tuple]:
    """{sample_id: (instruction, caption)} of ``ids``: one filtered scan that decodes the text
    columns of the matching rows only (``ids_where``)."""
    if not ids:
        return {}
    where, params = ids_where(sorted(set(ids)))
    return {r[0]: r[1:] for r in con.execute(
        f"SELECT sample_id, instruction, caption FROM samples WHERE {where}", params).fetchall()}


def judge_health(con) -> dict:
    if "scores" not in catalog.views(con):
        return {}
    status = con.execute("SELECT status, count(*) FROM scores GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()
    attempts = con.execute("SELECT attempts, count(*) FROM scores GROUP BY 1 ORDER BY 1").fetchall()
    tokens = con.execute(
        "SELECT count(*), avg(prompt_tokens), quantile_cont(prompt_tokens, 0.5), quantile_cont(prompt_tokens, 0.95), "
        "avg(output_tokens), quantile_cont(output_tokens, 0.5), quantile_cont(output_tokens, 0.95) "
        "FROM scores WHERE prompt_tokens IS NOT NULL").fetchone()
    lat = con.execute("SELECT quantile_cont(latency_s, 0.5), quantile_cont(latency_s, 0.95), max(latency_s) "
                      "FROM scores WHERE latency_s IS NOT NULL").fetchone()
    models = con.execute("SELECT model, backend, count(*) FROM scores GROUP BY 1, 2 ORDER BY 3 DESC").fetchall()
    return {"status": status, "attempts": attempts, "latency": binned(con, "latency_s"), "latency_q": lat,
            "tokens": tokens, "prompt_tokens": binned(con, "prompt_tokens"),
            "output_tokens": binned(con, "output_tokens", "prompt_tokens IS NOT NULL"), "models": models}


def stage_rows(con) -> dict[str, tuple[int, int]]:
    """{stage: (rows, samples) it wrote}, counted as the stage declares (``StageFacts.counts``)."""
    from pipeline.curate.report.stages import stage_counts

    present = set(catalog.views(con))
    out = {}
    for stage, (table, rows, samples) in stage_counts().items():
        if table in present:
            out[stage] = tuple(con.execute(f"SELECT {rows}, {samples} FROM {table}").fetchone())
    return out


def variant_mix(con) -> list[tuple[str, int]]:
    """Keys per pretext variant drawn for raw clips (stage0 keys of t2v samples)."""
    if "encoded" not in catalog.views(con):
        return []
    return con.execute("SELECT variant, count(*) FROM encoded WHERE variant IN ('none', 'cube', 'speed', 'tube') "
                       "GROUP BY 1 ORDER BY 1").fetchall()
