"""Yields per rule and dataset (``curate filter --explain``), and the same rules as DuckDB SQL.

``explain`` answers "how much does each rule cost" without writing anything, so thresholds can
be tuned without re-scoring. Per dataset and rule (in rule order):

* ``checked``   rows the rule applies to (a threshold applies to its kind of sample only)
* ``failed``    rows it would reject on its own
* ``rejected``  rows it rejects first (what ``rejected_by`` says in the `selected` table)
* ``remaining`` rows still kept after it and every rule before it; ``yield`` = remaining / rows

Two evaluations of one rule list: Arrow (``filters.rules``, per batch) and SQL over the run's
catalog (``explain_catalog``, ``selected_catalog``: DuckDB streams a 36M-row manifest); a test
checks that they agree.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from filters.rules import SECTION_OF_KIND, Rule, failures, rules_for, sample_kinds, select_table
from filters.screen import screen_fails_sql, screen_join
from manifests.io import list_parts
from stages.judge.schema import ALL_METRICS, SCORES

EXPLAIN = pa.schema([
    pa.field("dataset", pa.string()),
    pa.field("step", pa.int32()),
    pa.field("rule", pa.string()),
    pa.field("rows", pa.int64()),
    pa.field("checked", pa.int64()),
    pa.field("failed", pa.int64()),
    pa.field("rejected", pa.int64()),
    pa.field("remaining", pa.int64()),
    pa.field("yield", pa.float64()),
])
TOTAL = "(all)"
# Scores columns that are not metric values (everything else is a metric or its _expected).
SCORE_META_COLUMNS = {f.name for f in SCORES} - {c for m in ALL_METRICS for c in (m, m + "_expected")}  # the dataset name of the rows summed over datasets


def _grouped_rows(per_rule: dict[str, dict[str, list[int]]], names: list[str]) -> pa.Table:
    """per_rule[name][dataset] = [rows, checked, failed, rejected] -> the explain table."""
    datasets = sorted({d for counts in per_rule.values() for d in counts})
    out = []
    for dataset in [*datasets, TOTAL]:
        remaining = None
        for step, name in enumerate(names, 1):
            if dataset == TOTAL:
                rows, checked, failed, rejected = (sum(per_rule[name].get(d, [0] * 4)[k] for d in datasets)
                                                   for k in range(4))
            else:
                rows, checked, failed, rejected = per_rule[name].get(dataset, [0, 0, 0, 0])
            remaining = (rows if remaining is None else remaining) - rejected
            out.append(dict(dataset=dataset, step=step, rule=name, rows=rows, checked=checked, failed=failed,
                            rejected=rejected, remaining=remaining, **{"yield": remaining / rows if rows else None}))
    return pa.Table.from_pylist(out, schema=EXPLAIN)


def explain(joined: pa.Table, cfg) -> pa.Table:
    """Yields per rule and dataset over a joined samples+scores table (Arrow)."""
    rules = rules_for(cfg, joined.column_names)
    names = list(dict.fromkeys(r.name for r in rules))
    selected = select_table(joined, cfg)
    kinds = sample_kinds(joined)
    dataset = pc.fill_null(pc.cast(joined.column("dataset"), pa.string()), "")
    per_rule: dict[str, dict[str, list[int]]] = {}
    for name in names:
        applies = failed = None
        for rule in (r for r in rules if r.name == name):  # "category" is one rule per dataset
            a, f = failures(joined, rule, cfg.score_field, kinds)
            applies = a if applies is None else pc.or_(applies, a)
            failed = f if failed is None else pc.or_(failed, f)
        first = pc.fill_null(pc.equal(selected.column("rejected_by"), name), False)
        t = pa.table({"dataset": dataset, "one": pa.chunked_array([pa.array([1] * joined.num_rows, pa.int64())]) if joined.num_rows else pa.chunked_array([], pa.int64()),
                      "checked": pc.cast(applies, pa.int64()), "failed": pc.cast(failed, pa.int64()),
                      "rejected": pc.cast(first, pa.int64())})
        sums = t.group_by("dataset").aggregate([("one", "sum"), ("checked", "sum"), ("failed", "sum"), ("rejected", "sum")])
        per_rule[name] = {row["dataset"]: [row["one_sum"], row["checked_sum"], row["failed_sum"], row["rejected_sum"]]
                          for row in sums.to_pylist()}
    return _grouped_rows(per_rule, names)


# ------------------------------------------------------------------ SQL (DuckDB)
def _lit(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


# The kind a sample's own columns imply; a scores row's kind comes first where there is one.
DERIVED_KIND_SQL = ("CASE WHEN modality = 'image' THEN 'image_edit' WHEN task = 't2v' OR source_uri IS NULL "
                    "THEN 'clip' ELSE 'video_edit' END")
KIND_SQL = f"coalesce(judge_kind, {DERIVED_KIND_SQL})"


def applies_sql(rule: Rule) -> str:
    if rule.what in ("category", "instruction"):
        return f"coalesce(dataset = {_lit(rule.dataset)}, false)"
    if rule.what == "threshold":
        return f"coalesce({KIND_SQL} = {_lit(rule.kind)}, false)"
    return "true"


def fails_sql(rule: Rule, field: str, columns: set[str]) -> str:
    if rule.what == "sample_error":
        return "sample_error IS NOT NULL"
    if rule.what == "probe_error":
        return "probe_error_kind IS NOT NULL"
    if rule.what == "screen":
        return screen_fails_sql(rule.name)
    if rule.what == "category":
        allowed = ", ".join(_lit(c) for c in rule.allowed) or "NULL"
        return f"({applies_sql(rule)} AND NOT coalesce(category IN ({allowed}), false))"
    if rule.what == "instruction":
        words = " OR ".join(f"contains(lower(coalesce(instruction, '')), {_lit(w)})" for w in rule.allowed)
        # CASE, not AND: DuckDB evaluates both sides of an AND on every row, and lowering every
        # instruction of the corpus (captions of ~1 KB) cost more than the rest of the rules together;
        # CASE evaluates the words on the rule's dataset's rows only.
        return f"(CASE WHEN {applies_sql(rule)} THEN ({words or 'false'}) ELSE false END)"
    if rule.what == "judge_status":
        allowed = ", ".join(_lit(s) for s in rule.allowed) or "NULL"
        return f"NOT coalesce(judge_status IN ({allowed}), false)"
    return f"({applies_sql(rule)} AND {below_sql(rule, field, columns)})"


def below_sql(rule: Rule, field: str, columns: set[str]) -> str:
    """A threshold rule's comparison alone, whatever the sample's kind: true where the score does
    not pass (a null score does not)."""
    if rule.metric not in columns:
        raise ValueError(f"filter: no column {rule.metric!r} in the scores; the judge config has no such metric")
    m = f'"{rule.metric}"'
    score = f"CAST({m} AS DOUBLE)"
    if field == "expected" and f"{rule.metric}_expected" in columns:
        score = f'coalesce(CAST("{rule.metric}_expected" AS DOUBLE), {score})'
    return f"NOT coalesce({score} {rule.op} {rule.value!r}, false)"


def rejected_by_sql(cfg, columns: list[str]) -> str:
    """A SQL expression naming the first failing rule (NULL when kept), over ``joined_sql``'s columns."""
    cols = set(columns)
    whens = [f"WHEN {fails_sql(r, cfg.score_field, cols)} THEN {_lit(r.name)}" for r in rules_for(cfg, columns)]
    return "CASE " + " ".join(whens) + " END"


def joined_sql(views: list[str], score_columns: list[str] | None = None,
               instruction_datasets: list[str] | None = None) -> str:
    """One row per sample of a run's catalog: the columns the filter rules read.

    ``instruction_datasets``: the datasets whose instruction a rule reads (None: every dataset).
    The others get a NULL instruction, read from a join restricted to those datasets: the
    instructions are most of the manifest's bytes (Koala's captions, ~1 KB a row), and a dataset
    filter lets DuckDB skip their row groups instead of decoding every one of them into the join."""
    metrics = [c for c in (score_columns or []) if c not in SCORE_META_COLUMNS]
    instruction = "s.instruction"
    joins = []
    if instruction_datasets is not None:
        instruction = "si.instruction"
        wanted = " OR ".join(f"dataset = {_lit(d)}" for d in sorted(instruction_datasets)) or "false"
        joins.append(f"LEFT JOIN (SELECT sample_id, instruction FROM samples WHERE {wanted}) si USING (sample_id)")
    cols = ["s.sample_id", "s.dataset", "s.modality", "s.task", "s.source_uri", "s.category",
            f"{instruction} AS instruction", "s.error AS sample_error"]
    if "probes" in views:
        cols.append("p.error_kind AS probe_error_kind")
        joins.append("LEFT JOIN probes p USING (sample_id)")
    screen_cols, screen_joins = screen_join(views)
    cols, joins = cols + screen_cols, joins + screen_joins
    if "scores" in views:
        cols += ["sc.status AS judge_status", "sc.kind AS judge_kind"] + [f'sc."{c}"' for c in metrics]
        joins.append("LEFT JOIN scores sc USING (sample_id)")
    else:
        cols += ["NULL::VARCHAR AS judge_status", "NULL::VARCHAR AS judge_kind"]
        for m in ALL_METRICS:
            cols += [f'NULL::SMALLINT AS "{m}"', f'NULL::DOUBLE AS "{m}_expected"']
    return f"SELECT {', '.join(cols)} FROM samples s {' '.join(joins)}"


def _catalog_joined(con, cfg) -> tuple[str, list[str]]:
    from manifests.catalog import views

    present = views(con)
    if "samples" not in present:
        raise ValueError("no samples in this workdir; run the ingest stage first")
    score_columns = None
    if "scores" in present:
        score_columns = [r[0] for r in con.execute("SELECT column_name FROM (DESCRIBE scores)").fetchall()]
    worded = [d for d, words in cfg.reject_instruction_words.items() if words]
    sql = joined_sql(present, score_columns, worded)
    columns = [r[0] for r in con.execute(f"SELECT column_name FROM (DESCRIBE {sql})").fetchall()]
    return sql, columns


def selected_sql(con, cfg) -> str:
    sql, columns = _catalog_joined(con, cfg)
    return (f"SELECT sample_id, dataset, rejected_by IS NULL AS kept, rejected_by FROM "
            f"(SELECT sample_id, dataset, {rejected_by_sql(cfg, columns)} AS rejected_by FROM ({sql})) "
            f"ORDER BY sample_id")


def selected_catalog(con, cfg) -> pa.Table:
    """The `selected` table computed by DuckDB over a run's catalog views (whole, for small runs
    and tests; the filter stage streams it to Parquet with ``write_selected`` instead)."""
    from filters.rules import SELECTED

    return con.sql(selected_sql(con, cfg)).to_arrow_table().cast(SELECTED)


def write_selected(con, cfg, path, batch_rows: int = 100_000) -> int:
    """Stream the `selected` table from DuckDB into the Parquet part ``path`` (atomic); its rows.

    Record batches go through one ParquetWriter, so memory is bounded by a batch, not by the 49M-row
    table. Rows are re-cut into row groups of exactly ``ROW_GROUP_ROWS``: DuckDB's batch sizes are
    its own, and the row groups (so the bytes) must be the same as ``write_part`` of the whole table.
    """
    import pyarrow.parquet as pq

    from filters.rules import SELECTED
    from manifests.io import PARQUET_KW, ROW_GROUP_ROWS, atomic_file

    reader = con.sql(selected_sql(con, cfg)).to_arrow_reader(batch_rows)
    rows, pending = 0, []
    with atomic_file(path) as f, pq.ParquetWriter(f, SELECTED, **PARQUET_KW) as writer:
        for batch in reader:
            pending.append(pa.Table.from_batches([batch]).cast(SELECTED))
            held = sum(t.num_rows for t in pending)
            whole = held - held % ROW_GROUP_ROWS
            if whole:
                table = pa.concat_tables(pending)
                writer.write_table(table.slice(0, whole), row_group_size=ROW_GROUP_ROWS)
                pending, rows = [table.slice(whole)], rows + whole
        tail = pa.concat_tables(pending) if pending else SELECTED.empty_table()
        if tail.num_rows or not rows:
            writer.write_table(tail, row_group_size=ROW_GROUP_ROWS)
        rows += tail.num_rows
    return rows


def _bits(conds: list[str]) -> str:
    """One BIGINT whose bit i says conds[i] holds (a NULL condition does not)."""
    return " + ".join(f"(coalesce({c}, false)::BIGINT << {i})" for i, c in enumerate(conds)) or "0::BIGINT"


def explain_catalog(con, cfg) -> pa.Table:
    """``explain`` computed by DuckDB over a run's catalog (nothing per sample is loaded into Python).

    The filter input (``joined_sql``) is reduced to a few values per row: its dataset, the kind its
    samples columns imply, the judge's kind, whether its status is accepted, its probe error, its
    screen drop, and two integers with a bit per rule (the samples rules: error, category,
    instruction; the thresholds: whether the comparison fails, whatever the kind). One GROUP BY of
    those, a few hundred groups whatever N, and the rules are counted on the groups in Python,
    weighted by their rows. Counted with FILTER clauses instead, each rule's condition was
    evaluated twice more per row (its applies and its fails) after the CASE naming the first
    failing rule, so the cost grew with the rules as much as with N.

    The join stays: the rejection (the first failing rule) and a threshold's reach (the sample's
    kind, the scores row's first) need a sample's rows of several tables together. It is the join
    ``curate filter`` runs (``selected_sql``), so the counts are the filter's; DuckDB reads only the
    columns the rules name. Joining narrower projections of each table (the id and a few booleans)
    ran out of memory at 5M under the 1 GB cap: DuckDB then builds its hash tables on the samples
    side and holds two of them at once. A test checks the counts against ``explain``."""
    sql, columns = _catalog_joined(con, cfg)
    cols = set(columns)
    rules = rules_for(cfg, columns)
    names = list(dict.fromkeys(r.name for r in rules))
    field = cfg.score_field
    on_samples = [r for r in rules if r.what in ("sample_error", "category", "instruction")]
    thresholds = [r for r in rules if r.what == "threshold"]
    if max(len(on_samples), len(thresholds)) > 62:  # more bits than a signed BIGINT holds
        return _explain_joined(con, cfg)
    status = next((r for r in rules if r.what == "judge_status"), None)
    accepted = (", ".join(_lit(a) for a in status.allowed) if status else "") or "NULL"
    sb = _bits(["sample_error IS NOT NULL" if r.what == "sample_error" else fails_sql(r, field, cols) for r in on_samples])
    tb = _bits([below_sql(r, field, cols) for r in thresholds])
    perr = "probe_error_kind IS NOT NULL" if "probe_error_kind" in cols else "NULL::BOOLEAN"
    drop = "screen_drop" if "screen_drop" in cols else "NULL::VARCHAR"
    groups = con.execute(
        f"SELECT dataset, {DERIVED_KIND_SQL}, {sb}, {perr}, {drop}, judge_kind, "
        f"coalesce(judge_status IN ({accepted}), false), {tb}, count(*) FROM ({sql}) GROUP BY ALL").fetchall()
    s_bit = {id(r): i for i, r in enumerate(on_samples)}
    t_bit = {id(r): i for i, r in enumerate(thresholds)}
    per_rule: dict[str, dict[str, list[int]]] = {name: {} for name in names}
    for dataset, dkind, sb, perr, drop, jkind, sok, tb, n in groups:
        kind = dkind if jkind is None else jkind
        first, applies, fails = None, dict.fromkeys(names, False), dict.fromkeys(names, False)
        for r in rules:
            if r.what in ("category", "instruction"):
                a, f = dataset == r.dataset, bool(sb >> s_bit[id(r)] & 1)
            elif r.what == "sample_error":
                a, f = True, bool(sb >> s_bit[id(r)] & 1)
            elif r.what == "probe_error":
                a, f = True, bool(perr)
            elif r.what == "screen":
                a, f = True, drop == r.name
            elif r.what == "judge_status":
                a, f = True, not sok
            else:  # a threshold: its comparison's bit (a missing score does not pass)
                a = kind == r.kind
                f = a and bool(tb >> t_bit[id(r)] & 1)
            applies[r.name] |= a
            fails[r.name] |= f
            if f and first is None:
                first = r.name
        c = {name: per_rule[name].setdefault(dataset if dataset is not None else "", [0, 0, 0, 0]) for name in names}
        for name in names:
            c[name][0] += n
            c[name][1] += n * applies[name]
            c[name][2] += n * fails[name]
            c[name][3] += n * (first == name)
    return _grouped_rows(per_rule, names)


def _explain_joined(con, cfg) -> pa.Table:
    """``explain_catalog`` with one FILTER count per rule: for rule lists with more rules than a
    bit mask holds (63)."""
    sql, columns = _catalog_joined(con, cfg)
    cols = set(columns)
    rules = rules_for(cfg, columns)
    names = list(dict.fromkeys(r.name for r in rules))
    aggs = []
    for k, name in enumerate(names):
        group = [r for r in rules if r.name == name]
        applies = " OR ".join(f"({applies_sql(r)})" for r in group)
        fails = " OR ".join(f"({fails_sql(r, cfg.score_field, cols)})" for r in group)
        aggs += [f"count(*) FILTER (WHERE {applies}) AS c{k}", f"count(*) FILTER (WHERE {fails}) AS f{k}",
                 f"count(*) FILTER (WHERE rejected_by = {_lit(name)}) AS r{k}"]
    query = (f"SELECT coalesce(dataset, '') AS dataset, count(*) AS n, {', '.join(aggs)} FROM "
             f"(SELECT *, {rejected_by_sql(cfg, columns)} AS rejected_by FROM ({sql})) GROUP BY 1 ORDER BY 1")
    per_rule: dict[str, dict[str, list[int]]] = {name: {} for name in names}
    for row in con.execute(query).fetchall():
        dataset, n = row[0], row[1]
        for k, name in enumerate(names):
            per_rule[name][dataset] = [n, *row[2 + 3 * k: 5 + 3 * k]]
    return _grouped_rows(per_rule, names)


# The columns of format_explain's rows: the yield table `curate filter` prints and the report shows.
FORMAT_COLUMNS = ["dataset", "rule", "checked", "failed", "rejected", "remaining", "yield %"]


def format_explain(table: pa.Table) -> list[list]:
    """Rows for a printed table, in FORMAT_COLUMNS order."""
    return [[r["dataset"], r["rule"], r["checked"], r["failed"], r["rejected"], r["remaining"],
             None if r["yield"] is None else round(100 * r["yield"], 1)] for r in table.to_pylist()]


__all__ = ["explain", "explain_catalog", "selected_catalog", "write_selected", "joined_sql", "rejected_by_sql", "format_explain",
           "FORMAT_COLUMNS", "SECTION_OF_KIND", "TOTAL"]


def no_scores_message(workdir) -> str | None:
    """Why the filter cannot run on ``workdir`` (no scores table yet), or None. ``curate filter`` and
    ``curate run --stage filter`` both say this instead of a table where every row is unscored."""
    if list_parts(workdir, "scores"):
        return None
    return f"{workdir}: no scores yet; run `curate run --stage vlm-filter` first"
