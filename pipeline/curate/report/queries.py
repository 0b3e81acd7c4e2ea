"""The numbers of the report, read with DuckDB from a run's catalog (``manifests.catalog``).

The funnel follows each dataset's samples through the stages. A step's count is what passed it;
``lost`` is what entered it and did not pass, split by reason (ingest error text before its first
colon, probe ``error_kind``, judge ``status``, filter ``rejected_by``, encode error kind, or "not
run yet" for work still pending), each reason with two example sample ids.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

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
    columns of ``funnel``'s per-sample rows (s samples, p probes, j scores, k selected: a struct each)."""
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
    every sample's probe, score and selection are gathered once, the sample is classified by the
    first step it did not pass, and counted per (dataset, step, reason) with two example ids per reason."""
    present = set(catalog.views(con))
    if "samples" not in present:
        return {}
    steps = _sample_steps(present)
    # Each sample's rows of the four tables side by side, as one aggregation over their union rather
    # than a chain of outer joins: DuckDB spills a GROUP BY under its memory limit, while the outer
    # joins' state did not fit 1 GB at 5M samples. Each table's columns arrive as one struct named
    # like the alias the steps use (s.error, p.error_kind ...); a sample without a row has NULL.
    # step -> (its table, the alias its condition uses, the columns the condition reads)
    tables = {"probed": ("probes", "p", ("sample_id", "error", "error_kind")), "judged": ("scores", "j", ("status",)),
              "kept": ("selected", "k", ("kept", "rejected_by"))}
    union = ["SELECT sample_id, dataset, {'error': error} AS s FROM samples"]
    aliases = ["s"]
    for name, _, _ in steps:
        if name in tables:
            table, alias, cols = tables[name]
            struct = ", ".join(f"'{c}': {c}" for c in cols)
            union.append(f"SELECT sample_id, {{{struct}}} AS {alias} FROM {table}")
            aliases.append(alias)
    per_sample = (f"SELECT sample_id, any_value(dataset) AS dataset, "
                  + ", ".join(f"any_value({a}) AS {a}" for a in aliases)
                  + f" FROM ({' UNION ALL BY NAME '.join(union)}) GROUP BY sample_id HAVING any_value(s) IS NOT NULL")
    lost_at = "CASE " + " ".join(f"WHEN NOT coalesce({c}, false) THEN {i}" for i, (_, c, _) in enumerate(steps, 1)) + " ELSE 0 END"
    reason = "CASE " + " ".join(f"WHEN NOT coalesce({c}, false) THEN {r}" for _, c, r in steps) + " ELSE NULL END"
    classified = f"SELECT sample_id, dataset, {lost_at} AS lost_at, {reason} AS reason FROM ({per_sample})"
    keys = [n for n, _, _ in steps][-1] == "kept" and "encoded" in present
    spill = None
    if keys:
        # The key steps need the samples that passed every step: classified once rather than the
        # same join run a second time. Into a Parquet file beside DuckDB's spill files, not a temp
        # table: an in-memory database keeps a temp table in memory, and at 5M samples that alone
        # passed the memory limit; COPY streams the join to disk in bounded memory.
        folder = Path(con.execute("SELECT current_setting('temp_directory')").fetchone()[0] or ".")
        folder.mkdir(parents=True, exist_ok=True)
        spill = folder / f"_classified-{os.getpid()}.parquet"
    try:
        if spill is not None:
            con.execute(f"COPY ({classified}) TO '{spill.as_posix()}' (FORMAT parquet)")
            con.execute(f"CREATE TEMP VIEW _classified AS SELECT * FROM read_parquet('{spill.as_posix()}')")
            classified = "SELECT * FROM _classified"
        rows = con.execute(f"SELECT dataset, lost_at, reason, count(*), min(sample_id, 2) FROM ({classified}) "
                           "GROUP BY ALL").fetchall()
        out = _tally(rows, len(steps), top)
        for ds_steps in out.values():
            for step, (name, _, _) in zip(ds_steps[1:], steps):
                step.name = name
        if spill is not None:
            con.execute("CREATE TEMP VIEW _kept AS SELECT sample_id, dataset FROM _classified WHERE lost_at = 0")
            _key_steps(con, present, out, top)
            con.execute("DROP VIEW _kept")
            con.execute("DROP VIEW _classified")
    finally:
        if spill is not None:
            spill.unlink(missing_ok=True)
    return dict(sorted(out.items()))


def _key_steps(con, present: set[str], out: dict[str, list[Step]], top: int) -> None:
    """``encoded keys`` and ``sharded samples``: keys of the kept samples (``_kept``), then samples
    in a shard."""
    # One join of the keys with the kept samples gives both the keys made (reason NULL) and the
    # failed ones by reason.
    groups = con.execute(
        f"SELECT dataset, reason, count(*), min(sample_id, 2) FROM (SELECT e.sample_id, s.dataset, "
        f"CASE WHEN e.error IS NOT NULL THEN {_reason('e.error')} END AS reason "
        "FROM encoded e JOIN _kept s USING (sample_id) UNION ALL "
        "SELECT sample_id, dataset, 'not encoded yet' FROM _kept ANTI JOIN encoded USING (sample_id)) GROUP BY ALL").fetchall()
    ok = {ds: n for ds, reason, n, _ in groups if reason is None}
    lost = [g for g in groups if g[1] is not None]
    _append(out, "encoded keys", ok, lost, top)
    if "shard_keys" in present:
        enc = "SELECT DISTINCT e.sample_id, s.dataset FROM encoded e JOIN _kept s USING (sample_id) WHERE e.error IS NULL"
        sharded = dict(con.execute("SELECT dataset, count(*) FROM (SELECT DISTINCT k.sample_id, e.dataset "
                                   "FROM shard_keys k JOIN encoded e USING (key)) GROUP BY 1").fetchall())
        lost = con.execute(f"SELECT dataset, 'not sharded yet', count(*), min(sample_id, 2) FROM ({enc}) "
                           "ANTI JOIN (SELECT DISTINCT sample_id FROM shard_keys) USING (sample_id) GROUP BY ALL").fetchall()
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
