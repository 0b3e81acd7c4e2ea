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


def _sample_steps(present: set[str]) -> list[tuple[str, str, str]]:
    """(step, passes, reason it did not) of the per-sample steps after ``records``, over the
    aliases of ``funnel``'s one join (s samples, p probes, j scores, k selected)."""
    steps = [("samples", "s.error IS NULL", _reason("s.error"))]
    chain = [("probes", "probed", "p.sample_id IS NOT NULL AND p.error IS NULL",
              "coalesce(p.error_kind, CASE WHEN p.sample_id IS NULL THEN 'not probed yet' ELSE 'probe error' END)"),
             ("scores", "judged", f"j.status IN {SCORED}", "coalesce('judge ' || j.status, 'not judged yet')"),
             ("selected", "kept", "k.kept IS TRUE", "coalesce('rejected_by ' || k.rejected_by, 'not filtered yet')")]
    for table, name, passes, reason in chain:
        if table not in present:
            break
        steps.append((name, passes, reason))
    return steps


def _tally(rows, n_steps: int, top: int) -> dict[str, list[Step]]:
    """Steps per dataset from (dataset, lost_at, reason, n, two ids) groups; lost_at 0 = passed all."""
    by_ds: dict[str, dict[int, list]] = {}
    for ds, lost_at, reason, n, ids in rows:
        by_ds.setdefault(ds, {}).setdefault(lost_at, []).append((reason, n, sorted(ids)))
    out = {}
    for ds, groups in by_ds.items():
        total = sum(n for g in groups.values() for _, n, _ in g)
        steps, remaining = [Step("records", total)], total
        for i in range(1, n_steps + 1):
            reasons = sorted(groups.get(i, []), key=lambda r: (-r[1], r[0]))
            lost = sum(r[1] for r in reasons)
            remaining -= lost
            steps.append(Step("", remaining, lost, reasons[:top]))
        out[ds] = steps
    return out


def funnel(con, top: int = 3) -> dict[str, list[Step]]:
    """Per dataset, the steps in STEPS order (those whose table exists), in one scan of each table:
    every sample is joined once to its probe, score and selection, classified by the first step it
    did not pass, and counted per (dataset, step, reason) with two example ids per reason."""
    present = set(catalog.views(con))
    if "samples" not in present:
        return {}
    steps = _sample_steps(present)
    joins = {"probes": "LEFT JOIN probes p USING (sample_id)", "scores": "LEFT JOIN scores j USING (sample_id)",
             "selected": "LEFT JOIN selected k USING (sample_id)"}
    used = {"probed": "probes", "judged": "scores", "kept": "selected"}
    join_sql = " ".join(joins[used[n]] for n, _, _ in steps if n in used)
    lost_at = "CASE " + " ".join(f"WHEN NOT coalesce({c}, false) THEN {i}" for i, (_, c, _) in enumerate(steps, 1)) + " ELSE 0 END"
    reason = "CASE " + " ".join(f"WHEN NOT coalesce({c}, false) THEN {r}" for _, c, r in steps) + " ELSE NULL END"
    rows = con.execute(
        f"SELECT dataset, lost_at, reason, count(*), min(sample_id, 2) FROM (SELECT s.sample_id, s.dataset, "
        f"{lost_at} AS lost_at, {reason} AS reason FROM samples s {join_sql}) GROUP BY ALL").fetchall()
    out = _tally(rows, len(steps), top)
    for ds_steps in out.values():
        for step, (name, _, _) in zip(ds_steps[1:], steps):
            step.name = name
    if [n for n, _, _ in steps][-1] == "kept" and "encoded" in present:
        _key_steps(con, present, out, top)
    return dict(sorted(out.items()))


def _key_steps(con, present: set[str], out: dict[str, list[Step]], top: int) -> None:
    """``encoded keys`` and ``sharded samples``: keys of kept samples, then samples in a shard."""
    kept = ("CREATE TEMP TABLE _kept AS SELECT s.sample_id, s.dataset FROM samples s JOIN probes p USING (sample_id) "
            f"JOIN scores j USING (sample_id) JOIN selected k USING (sample_id) WHERE s.error IS NULL AND p.error IS NULL "
            f"AND j.status IN {SCORED} AND k.kept")
    con.execute(kept)  # the kept ids: one column pair, as large as the selection (DuckDB spills it)
    lost = con.execute(
        f"SELECT dataset, reason, count(*), min(sample_id, 2) FROM (SELECT e.sample_id, s.dataset, {_reason('e.error')} AS reason "
        "FROM encoded e JOIN _kept s USING (sample_id) WHERE e.error IS NOT NULL UNION ALL "
        "SELECT sample_id, dataset, 'not encoded yet' FROM _kept ANTI JOIN encoded USING (sample_id)) GROUP BY ALL").fetchall()
    ok = dict(con.execute("SELECT s.dataset, count(*) FROM encoded e JOIN _kept s USING (sample_id) "
                          "WHERE e.error IS NULL GROUP BY 1").fetchall())
    _append(out, "encoded keys", ok, lost, top)
    if "shard_keys" in present:
        enc = "SELECT DISTINCT e.sample_id, s.dataset FROM encoded e JOIN _kept s USING (sample_id) WHERE e.error IS NULL"
        sharded = dict(con.execute("SELECT dataset, count(*) FROM (SELECT DISTINCT k.sample_id, e.dataset "
                                   "FROM shard_keys k JOIN encoded e USING (key)) GROUP BY 1").fetchall())
        lost = con.execute(f"SELECT dataset, 'not sharded yet', count(*), min(sample_id, 2) FROM ({enc}) "
                           "ANTI JOIN (SELECT DISTINCT sample_id FROM shard_keys) USING (sample_id) GROUP BY ALL").fetchall()
        _append(out, "sharded samples", sharded, lost, top)
    con.execute("DROP TABLE _kept")


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
    cols = {r[0] for r in con.execute("DESCRIBE scores").fetchall()}
    score = f'CAST("{metric}" AS DOUBLE)'
    if field == "expected" and f"{metric}_expected" in cols:
        score = f'coalesce("{metric}_expected", {score})'
    passes = f"score {op} {float(value)!r}"
    return (_nearest(con, kind, score, passes, "score, sample_id", n),
            _nearest(con, kind, score, f"NOT ({passes})", "score DESC, sample_id", n))


def _nearest(con, kind: str, score: str, where: str, order: str, n: int) -> list:
    """The first n scored rows of ``kind`` in ``order`` that have a sample, with its text.

    The order is taken over ``scores`` alone (a top-n scan) and only those few candidates are joined
    with ``samples``: joining every score with every sample first, as a plain query would, is a hash
    join over the whole manifest and dominated the report at 1M rows. A candidate without a sample
    row is skipped, so when too few survive the join the candidate list grows (same rows either way).
    """
    candidates = max(4 * int(n), 16)
    while True:
        top = (f"SELECT * FROM (SELECT sample_id, dataset, {score} AS score FROM scores "
               f"WHERE status IN {SCORED} AND kind = ? AND {score} IS NOT NULL) WHERE {where} "
               f"ORDER BY {order} LIMIT {candidates}")
        found = con.execute(f"SELECT count(*) FROM ({top})", [kind]).fetchone()[0]
        rows = con.execute(f"SELECT c.sample_id, c.dataset, c.score, s.instruction, s.caption FROM ({top}) c "
                           f"JOIN samples s USING (sample_id) ORDER BY {order.replace('score', 'c.score').replace('sample_id', 'c.sample_id')} "
                           f"LIMIT {int(n)}", [kind]).fetchall()
        if len(rows) >= n or found < candidates:
            return rows
        candidates *= 4


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
