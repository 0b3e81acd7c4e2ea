"""The report funnel's definition, as a test oracle: every sample of a run's catalog joined with its
probe, score and selection (read whole into Python: test-sized runs only) and put at the first step
it did not pass, with the two smallest ids per reason; then the keys of the samples that passed
every step, and the samples in a shard. ``pipeline/curate/report/queries.funnel`` counts the same
from each table on its own and must agree on what a run writes."""
from __future__ import annotations

from pipeline.curate.report.queries import Step
from stages.judge.schema import SCORED_STATUSES


def _reason(error: str) -> str:
    return error.split(":", 1)[0].strip()[:60]


def classified(con, present: set[str], top: int = 3) -> dict[str, list[Step]]:
    """The definition: each sample joined with its rows, put at the first step it did not pass."""
    def rows(sql):
        return con.execute(sql).fetchall()

    probes = {s: (e, k) for s, e, k in rows("SELECT sample_id, error, error_kind FROM probes")} if "probes" in present else None
    scores = {s: st for s, st in rows("SELECT sample_id, status FROM scores")} if "scores" in present else None
    selected = {s: (k, r) for s, k, r in rows("SELECT sample_id, kept, rejected_by FROM selected")} \
        if "selected" in present else None
    chain = [("samples", lambda sid, e: (e is None, e is not None and _reason(e)))]
    if probes is not None:
        def probed(sid, _):
            p = probes.get(sid)
            if p is None:
                return False, "not probed yet"
            return p[0] is None, p[1] or "probe error"
        chain.append(("probed", probed))
        if scores is not None:
            chain.append(("judged", lambda sid, _: (scores.get(sid) in SCORED_STATUSES,
                                                    f"judge {scores[sid]}" if sid in scores else "not judged yet")))
            if selected is not None:
                chain.append(("kept", lambda sid, _: (bool(selected.get(sid, (False,))[0]),
                                                      f"rejected_by {selected[sid][1]}" if sid in selected
                                                      and selected[sid][1] else "not filtered yet")))
    groups: dict[str, dict] = {}
    kept = []
    for sid, ds, error in rows("SELECT sample_id, dataset, error FROM samples"):
        g = groups.setdefault(ds, {"n": 0, "lost": {}})
        g["n"] += 1
        for i, (name, test) in enumerate(chain):
            passed, reason = test(sid, error)
            if not passed:
                g["lost"].setdefault(i, {}).setdefault(reason, []).append(sid)
                break
        else:
            kept.append((sid, ds))

    def step(name, count, by_reason):
        reasons = sorted(((r, len(ids), sorted(ids)[:2]) for r, ids in by_reason.items()), key=lambda r: (-r[1], r[0]))
        return Step(name, count, sum(r[1] for r in reasons), reasons[:top])

    out = {}
    for ds, g in groups.items():
        steps, remaining = [Step("records", g["n"])], g["n"]
        for i, (name, _) in enumerate(chain):
            lost = g["lost"].get(i, {})
            remaining -= sum(len(v) for v in lost.values())
            steps.append(step(name, remaining, lost))
        out[ds] = steps
    if selected is None or len(chain) < 4 or "encoded" not in present:
        return dict(sorted(out.items()))
    enc = rows("SELECT key, sample_id, dataset, error FROM encoded")
    by_sample: dict[str, list] = {}
    for key, sid, ds, error in enc:
        by_sample.setdefault(sid, []).append((key, ds, error))
    made, lost = {}, {}
    for sid, ds in kept:
        keys = by_sample.get(sid)
        if not keys:
            lost.setdefault(ds, {}).setdefault("not encoded yet", []).append(sid)
        for _, _, error in keys or []:
            if error is None:
                made[ds] = made.get(ds, 0) + 1
            else:
                lost.setdefault(ds, {}).setdefault(_reason(error), []).append(sid)
    for ds, steps in out.items():
        steps.append(step("encoded keys", made.get(ds, 0), lost.get(ds, {})))
    if "shard_keys" in present:
        key_ds = {key: ds for key, _, ds, _ in enc}
        in_shards = rows("SELECT key, sample_id FROM shard_keys")
        sharded = {}
        for ds_sid in {(key_ds[k], s) for k, s in in_shards if k in key_ds}:
            sharded[ds_sid[0]] = sharded.get(ds_sid[0], 0) + 1
        shard_ids = {s for _, s in in_shards}
        lost = {}
        for sid, ds in kept:
            if any(e is None for _, _, e in by_sample.get(sid, [])) and sid not in shard_ids:
                lost.setdefault(ds, {}).setdefault("not sharded yet", []).append(sid)
        for ds, steps in out.items():
            steps.append(step("sharded samples", sharded.get(ds, 0), lost.get(ds, {})))
    return dict(sorted(out.items()))
