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


def _lost(con, sql: str, dataset: str, top: int) -> tuple[int, list]:
    """``sql`` selects (sample_id, dataset, reason) of the lost rows."""
    rows = con.execute(
        f"SELECT reason, count(*) AS n, list(sample_id ORDER BY sample_id)[1:2] FROM ({sql}) "
        f"WHERE dataset = ? GROUP BY reason ORDER BY n DESC, reason", [dataset]).fetchall()
    return sum(r[1] for r in rows), [(r[0], r[1], list(r[2])) for r in rows[:top]]


def _count(con, sql: str, dataset: str) -> int:
    return con.execute(f"SELECT count(*) FROM ({sql}) WHERE dataset = ?", [dataset]).fetchone()[0]


def funnel(con, top: int = 3) -> dict[str, list[Step]]:
    """Per dataset, the steps in STEPS order (those whose table exists)."""
    present = set(catalog.views(con))
    if "samples" not in present:
        return {}
    ok = "SELECT sample_id, dataset FROM samples WHERE error IS NULL"
    # (count query, lost query) per step; each later step reads the previous step's survivors.
    steps = [("records", "SELECT sample_id, dataset FROM samples", None),
             ("samples", ok, f"SELECT sample_id, dataset, {_reason('error')} AS reason FROM samples "
                             "WHERE error IS NOT NULL")]
    if "probes" in present:
        probed = f"SELECT s.sample_id, s.dataset FROM ({ok}) s JOIN probes p USING (sample_id) WHERE p.error IS NULL"
        steps.append(("probed", probed, f"SELECT s.sample_id, s.dataset, coalesce(p.error_kind, "
                      f"CASE WHEN p.sample_id IS NULL THEN 'not probed yet' ELSE 'probe error' END) AS reason "
                      f"FROM ({ok}) s LEFT JOIN probes p USING (sample_id) WHERE p.sample_id IS NULL OR p.error IS NOT NULL"))
        if "scores" in present:
            judged = f"SELECT s.sample_id, s.dataset FROM ({probed}) s JOIN scores j USING (sample_id) WHERE j.status IN {SCORED}"
            steps.append(("judged", judged, f"SELECT s.sample_id, s.dataset, coalesce('judge ' || j.status, "
                          f"'not judged yet') AS reason FROM ({probed}) s LEFT JOIN scores j USING (sample_id) "
                          f"WHERE j.sample_id IS NULL OR j.status NOT IN {SCORED}"))
            if "selected" in present:
                kept = f"SELECT s.sample_id, s.dataset FROM ({judged}) s JOIN selected k USING (sample_id) WHERE k.kept"
                steps.append(("kept", kept, f"SELECT s.sample_id, s.dataset, coalesce('rejected_by ' || k.rejected_by, "
                              f"'not filtered yet') AS reason FROM ({judged}) s LEFT JOIN selected k USING (sample_id) "
                              "WHERE k.kept IS NOT TRUE"))
                if "encoded" in present:
                    keys = f"SELECT e.key, e.sample_id, e.dataset FROM encoded e JOIN ({kept}) s USING (sample_id) WHERE e.error IS NULL"
                    steps.append(("encoded keys", keys, f"SELECT e.sample_id, e.dataset, {_reason('e.error')} AS reason "
                                  f"FROM encoded e JOIN ({kept}) s USING (sample_id) WHERE e.error IS NOT NULL UNION ALL "
                                  f"SELECT s.sample_id, s.dataset, 'not encoded yet' FROM ({kept}) s "
                                  "WHERE s.sample_id NOT IN (SELECT sample_id FROM encoded)"))
                    if "shard_keys" in present:
                        sharded = ("SELECT DISTINCT k.sample_id, e.dataset FROM shard_keys k JOIN encoded e USING (key)")
                        encoded_samples = f"SELECT DISTINCT sample_id, dataset FROM ({keys})"
                        steps.append(("sharded samples", sharded, f"SELECT s.sample_id, s.dataset, 'not sharded yet' AS reason "
                                      f"FROM ({encoded_samples}) s WHERE s.sample_id NOT IN (SELECT sample_id FROM shard_keys)"))
    datasets = [r[0] for r in con.execute("SELECT DISTINCT dataset FROM samples ORDER BY 1").fetchall()]
    out = {}
    for ds in datasets:
        rows = []
        for name, count_sql, lost_sql in steps:
            n = _count(con, count_sql, ds)
            lost, reasons = _lost(con, lost_sql, ds, top) if lost_sql else (0, [])
            rows.append(Step(name, n, lost, reasons))
        out[ds] = rows
    return out


def score_values(con, metric: str, kind: str) -> tuple[list[int], list[float]]:
    """The scored samples' integers and expected scores for one metric and sample kind."""
    cols = {r[0] for r in con.execute("DESCRIBE scores").fetchall()}
    if metric not in cols:
        return [], []
    exp = f'"{metric}_expected"' if f"{metric}_expected" in cols else "NULL"
    rows = con.execute(f'SELECT "{metric}", {exp} FROM scores WHERE status IN {SCORED} AND kind = ? '
                       f'AND "{metric}" IS NOT NULL', [kind]).fetchall()
    return [int(r[0]) for r in rows], [float(r[1]) for r in rows if r[1] is not None]


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
    base = (f"SELECT j.sample_id, j.dataset, {score} AS score, s.instruction, s.caption FROM scores j "
            f"JOIN samples s USING (sample_id) WHERE j.status IN {SCORED} AND j.kind = ? AND {score} IS NOT NULL")
    above = con.execute(f"SELECT * FROM ({base}) WHERE {passes} "
                        f"ORDER BY score, sample_id LIMIT {int(n)}", [kind]).fetchall()
    below = con.execute(f"SELECT * FROM ({base}) WHERE NOT ({passes}) "
                        f"ORDER BY score DESC, sample_id LIMIT {int(n)}", [kind]).fetchall()
    return above, below


def judge_health(con) -> dict:
    if "scores" not in catalog.views(con):
        return {}
    status = con.execute("SELECT status, count(*) FROM scores GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()
    attempts = con.execute("SELECT attempts, count(*) FROM scores GROUP BY 1 ORDER BY 1").fetchall()
    latency = [r[0] for r in con.execute("SELECT latency_s FROM scores WHERE latency_s IS NOT NULL").fetchall()]
    tokens = con.execute(
        "SELECT count(*), avg(prompt_tokens), quantile_cont(prompt_tokens, 0.5), quantile_cont(prompt_tokens, 0.95), "
        "avg(output_tokens), quantile_cont(output_tokens, 0.5), quantile_cont(output_tokens, 0.95) "
        "FROM scores WHERE prompt_tokens IS NOT NULL").fetchone()
    lat = con.execute("SELECT quantile_cont(latency_s, 0.5), quantile_cont(latency_s, 0.95), max(latency_s) "
                      "FROM scores WHERE latency_s IS NOT NULL").fetchone()
    tokens_each = con.execute("SELECT prompt_tokens, output_tokens FROM scores WHERE prompt_tokens IS NOT NULL").fetchall()
    models = con.execute("SELECT model, backend, count(*) FROM scores GROUP BY 1, 2 ORDER BY 3 DESC").fetchall()
    return {"status": status, "attempts": attempts, "latency": latency, "latency_q": lat, "tokens": tokens,
            "prompt_tokens": [r[0] for r in tokens_each], "output_tokens": [r[1] for r in tokens_each if r[1] is not None],
            "models": models}


# Rows per stage: (table, rows counted, samples counted) - what rows/s and cost per 1,000 samples divide by.
STAGE_ROWS = {
    "ingest": ("samples", "count(*)", "count(*)"),
    "probe": ("probes", "count(*)", "count(*)"),
    "vlm-filter": ("scores", "count(*)", "count(*)"),
    "filter": ("selected", "count(*)", "count(*)"),
    "encode": ("encoded", "count(*)", "count(DISTINCT sample_id)"),
    "shard": ("shard_keys", "count(*)", "count(DISTINCT sample_id)"),
}


def stage_rows(con) -> dict[str, tuple[int, int]]:
    present = set(catalog.views(con))
    out = {}
    for stage, (table, rows, samples) in STAGE_ROWS.items():
        if table in present:
            out[stage] = tuple(con.execute(f"SELECT {rows}, {samples} FROM {table}").fetchone())
    return out


def variant_mix(con) -> list[tuple[str, int]]:
    """Keys per pretext variant drawn for raw clips (stage0 keys of t2v samples)."""
    if "encoded" not in catalog.views(con):
        return []
    return con.execute("SELECT variant, count(*) FROM encoded WHERE variant IN ('none', 'cube', 'speed', 'tube') "
                       "GROUP BY 1 ORDER BY 1").fetchall()
