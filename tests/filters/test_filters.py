"""Threshold and category filters: paper defaults, boundaries at exactly 8 and 9, the expected
score, explain yields, and the DuckDB evaluation agreeing with the Arrow one."""
from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filters.selection import TOTAL, _explain_joined, explain, explain_catalog, joined_sql, selected_catalog, write_selected
from filters.rules import SELECTED, rule_names, select_table
from pipeline.curate.config import FilterConfig, load_config
from stages.judge.schema import ALL_METRICS

VIDEO = ["instruction_following", "visual_quality", "content_preservation", "motion_consistency"]
IMAGE = VIDEO[:3]
CLIP = ["caption_alignment", "visual_quality", "motion_consistency"]

JOINED = pa.schema([
    ("sample_id", pa.string()), ("dataset", pa.string()), ("modality", pa.string()), ("task", pa.string()),
    ("source_uri", pa.string()), ("category", pa.string()), ("instruction", pa.string()), ("sample_error", pa.string()),
    ("probe_error_kind", pa.string()), ("judge_status", pa.string()), ("judge_kind", pa.string()),
    *[f for m in ALL_METRICS for f in (pa.field(m, pa.int16()), pa.field(f"{m}_expected", pa.float64()))],
])


def row(sid, *, dataset="reco", kind="video_edit", category="replace", status="ok", scores=None, expected=None,
        **extra):
    modality, task, source = {"video_edit": ("video", "edit", "/s.mp4"), "image_edit": ("image", "edit", "/s.png"),
                              "clip": ("video", "t2v", None)}[kind]
    out = {f.name: None for f in JOINED}
    out.update(sample_id=sid, dataset=dataset, modality=modality, task=task, source_uri=source, category=category,
               judge_status=status, judge_kind=kind if status is not None else None)
    for m, v in (scores or {}).items():
        out[m] = v
    for m, v in (expected or {}).items():
        out[f"{m}_expected"] = v
    out.update(extra)
    return out


def video(sid, if_=9, vq=9, cp=9, mc=9, **kw):
    return row(sid, scores=dict(zip(VIDEO, (if_, vq, cp, mc))), **kw)


def image(sid, if_=10, vq=10, cp=10, **kw):
    return row(sid, kind="image_edit", dataset="nhr_edit", category="local_change",
               scores=dict(zip(IMAGE, (if_, vq, cp))), **kw)


def clip(sid, ca=9, vq=9, mc=9, **kw):
    return row(sid, kind="clip", dataset="koala", category="motion", scores=dict(zip(CLIP, (ca, vq, mc))), **kw)


def select(rows, cfg=None) -> dict[str, str | None]:
    out = select_table(pa.Table.from_pylist(rows, schema=JOINED), cfg or FilterConfig())
    assert out.schema.equals(SELECTED, check_metadata=False)
    for r in out.to_pylist():
        assert r["kept"] == (r["rejected_by"] is None)
    return {r["sample_id"]: r["rejected_by"] for r in out.to_pylist()}


# ------------------------------------------------------------------ boundaries (paper defaults)
def test_video_boundaries_at_8():
    got = select([
        video("all8_mc9", 8, 8, 8, 9),
        video("if7", 7, 8, 8, 9),
        video("vq7", 8, 7, 8, 9),
        video("cp7", 8, 8, 7, 9),
        video("mc8", 8, 8, 8, 8),  # motion consistency must be strictly above 8
        video("mc9", 10, 10, 10, 9),
    ])
    assert got == {"all8_mc9": None, "if7": "video.instruction_following>=8", "vq7": "video.visual_quality>=8",
                   "cp7": "video.content_preservation>=8", "mc8": "video.motion_consistency>8", "mc9": None}


def test_image_boundaries_at_9():
    got = select([image("all9", 9, 9, 9), image("if8", 8, 9, 9), image("vq8", 9, 8, 9), image("cp8", 9, 9, 8),
                  image("all10", 10, 10, 10)])
    assert got == {"all9": None, "if8": "image.instruction_following>=9", "vq8": "image.visual_quality>=9",
                   "cp8": "image.content_preservation>=9", "all10": None}


def test_image_at_8_passes_video_rules_but_not_image_rules():
    # The same scores, 8 everywhere: a video would pass except motion; an image fails at once.
    got = select([image("img", 8, 8, 8), video("vid", 8, 8, 8, 9)])
    assert got == {"img": "image.instruction_following>=9", "vid": None}


def test_clip_boundaries():
    got = select([clip("ok", 8, 8, 9), clip("ca7", 7, 8, 9), clip("mc8", 8, 8, 8)])
    assert got == {"ok": None, "ca7": "clip.caption_alignment>=8", "mc8": "clip.motion_consistency>8"}


def test_first_failing_rule_is_named():
    assert select([video("v", 1, 1, 1, 1)]) == {"v": "video.instruction_following>=8"}


# ------------------------------------------------------------------ expected scores
def test_expected_score_field_with_boundaries():
    cfg = FilterConfig(score_field="expected")
    rows = [
        image("exp9", expected={"instruction_following": 9.0, "visual_quality": 9.0, "content_preservation": 9.0}),
        image("exp8.99", expected={"instruction_following": 8.99, "visual_quality": 9.5, "content_preservation": 9.5}),
        video("mc8.01", expected={"motion_consistency": 8.01}),
        video("mc8.0", expected={"motion_consistency": 8.0}),
        image("no_logprobs", 9, 9, 9),  # expected null: the integer is used
    ]
    assert select(rows, cfg) == {"exp9": None, "exp8.99": "image.instruction_following>=9", "mc8.01": None,
                                 "mc8.0": "video.motion_consistency>8", "no_logprobs": None}
    # With the integer field, the expected scores are ignored.
    assert set(select(rows).values()) == {None}


# ------------------------------------------------------------------ categories, status, errors
def test_category_subsets():
    rows = [
        video("ditto_style", dataset="ditto", category="style"),
        video("ditto_local", dataset="ditto", category="local_change"),
        video("ditto_none", dataset="ditto", category=None),
        *[video(f"openve_{c}", dataset="openve", category=c) for c in
          ("local_change", "background", "style", "subtitles", "add", "camera")],
        video("reco_add", dataset="reco", category="add"),
    ]
    got = select(rows)
    assert [k for k, v in got.items() if v is None] == [
        "ditto_style", "openve_local_change", "openve_background", "openve_style", "openve_subtitles", "reco_add"]
    assert got["ditto_local"] == got["ditto_none"] == got["openve_camera"] == "category"


def test_status_and_errors():
    rows = [
        video("unscored", status=None, if_=None, vq=None, cp=None, mc=None),
        video("malformed", status="malformed", if_=None, vq=None, cp=None, mc=None),
        video("repaired", status="repaired"),
        video("input_error", status="input_error"),
        video("ingest_failed", status=None, sample_error="bad record"),
        video("probe_failed", status="input_error", probe_error_kind="truncated"),
        video("wrong_cat_and_unscored", dataset="ditto", category="add", status=None),
    ]
    assert select(rows) == {"unscored": "judge_status", "malformed": "judge_status", "repaired": None,
                            "input_error": "judge_status", "ingest_failed": "sample_error",
                            "probe_failed": "probe_error", "wrong_cat_and_unscored": "category"}
    assert select([video("repaired", status="repaired")], FilterConfig(accept_status=["ok"])) == {"repaired": "judge_status"}


def test_missing_optional_columns_and_unscored_kind():
    t = pa.Table.from_pylist([video("v", status=None, judge_kind=None)], schema=JOINED)
    t = t.drop_columns(["sample_error", "probe_error_kind"])
    out = select_table(t, FilterConfig())
    assert out.column("rejected_by").to_pylist() == ["judge_status"]
    assert rule_names(FilterConfig(), t.column_names)[0] == "category"


def test_unknown_metric_in_a_rule_is_an_error():
    cfg = load_config(None, ["filter.video.at_least.sharpness=8"]).filter
    with pytest.raises(ValueError, match="sharpness"):
        select([video("v")], cfg)


def test_thresholds_are_config_values():
    cfg = load_config(None, ["filter.video.greater_than.motion_consistency=7", "filter.image.at_least.visual_quality=8",
                             "filter.keep_categories.ditto=[style, local_change]"]).filter
    got = select([video("mc8", 8, 8, 8, 8), image("vq8", 9, 8, 9), video("d", dataset="ditto", category="local_change")], cfg)
    assert got == {"mc8": None, "vq8": None, "d": None}


# ------------------------------------------------------------------ explain
def sample_rows():
    return [
        video("a", dataset="ditto", category="style"),
        video("b", dataset="ditto", category="add"),
        video("c", dataset="ditto", category="style", mc=8),
        video("d", dataset="ditto", category="style", status="timeout", if_=None, vq=None, cp=None, mc=None),
        image("e"), image("f", 9, 8, 9), image("g", 8, 8, 8),
        clip("h"), clip("i", ca=7),
    ]


def test_explain_yields_per_rule_and_dataset():
    t = explain(pa.Table.from_pylist(sample_rows(), schema=JOINED), FilterConfig())
    rows = {(r["dataset"], r["rule"]): r for r in t.to_pylist()}
    cat = rows[("ditto", "category")]
    assert (cat["rows"], cat["checked"], cat["failed"], cat["rejected"], cat["remaining"]) == (4, 4, 1, 1, 3)
    mc = rows[("ditto", "video.motion_consistency>8")]
    # c fails on its own, and so would d (no scores: timeout), which judge_status rejects first
    assert (mc["checked"], mc["failed"], mc["rejected"], mc["remaining"]) == (4, 2, 1, 1)
    assert mc["yield"] == pytest.approx(0.25)
    status = rows[("ditto", "judge_status")]
    assert (status["failed"], status["rejected"]) == (1, 1)
    img_if = rows[("nhr_edit", "image.instruction_following>=9")]
    assert (img_if["checked"], img_if["failed"], img_if["rejected"]) == (3, 1, 1)
    img_vq = rows[("nhr_edit", "image.visual_quality>=9")]
    assert (img_vq["failed"], img_vq["rejected"], img_vq["remaining"]) == (2, 1, 1)
    assert rows[("koala", "clip.caption_alignment>=8")]["rejected"] == 1
    total = [r for r in t.to_pylist() if r["dataset"] == TOTAL]
    assert total[-1]["remaining"] == 3 and total[0]["rows"] == 9  # a, e, h kept
    kept = {k for k, v in select(sample_rows()).items() if v is None}
    assert kept == {"a", "e", "h"}


# ------------------------------------------------------------------ DuckDB agrees with Arrow
def catalog_for(rows) -> duckdb.DuckDBPyConnection:
    """Views samples / probes / scores shaped like the run's catalog, from joined rows."""
    t = pa.Table.from_pylist(rows, schema=JOINED)
    con = duckdb.connect()
    con.register("j", t)
    con.execute("CREATE VIEW samples AS SELECT sample_id, dataset, modality, task, source_uri, category, "
                "instruction, sample_error AS error FROM j")
    con.execute("CREATE VIEW probes AS SELECT sample_id, probe_error_kind AS error_kind FROM j WHERE sample_error IS NULL")
    metric_cols = ", ".join(f'"{m}", "{m}_expected"' for m in ALL_METRICS)
    con.execute(f"CREATE VIEW scores AS SELECT sample_id, judge_status AS status, judge_kind AS kind, {metric_cols} "
                f"FROM j WHERE judge_status IS NOT NULL")
    return con


def _same(rows, cfg):
    con = catalog_for(rows)
    arrow = select_table(pa.Table.from_pylist(rows, schema=JOINED), cfg).sort_by("sample_id")
    sql = selected_catalog(con, cfg)
    assert sql.equals(arrow), (sql.to_pylist(), arrow.to_pylist())
    oracle = explain(pa.Table.from_pylist(rows, schema=JOINED), cfg)  # one evaluation per sample
    assert explain_catalog(con, cfg).equals(oracle)
    assert _explain_joined(con, cfg).equals(oracle)  # the count per rule, kept for long rule lists


def test_sql_matches_arrow_on_the_examples():
    _same(sample_rows(), FilterConfig())
    _same(sample_rows(), FilterConfig(score_field="expected"))


def test_sql_matches_arrow_with_screen_verdicts():
    """The screen's drops are rules between the probe's and the judge's: the yields per sample
    (Arrow) and the catalog's agree with a screen_verdicts table, a drop of every kind among them."""
    rows = sample_rows()
    drops = {"a": "screen.duplicate", "b": "screen.static", "e": "screen.copy", "h": "screen.contaminated"}
    con = catalog_for(rows)
    con.register("sv", pa.table({"sample_id": list(drops), "screen_drop": list(drops.values())}))
    con.execute("CREATE VIEW screen_verdicts AS SELECT * FROM sv")
    joined = pa.Table.from_pylist(rows, schema=JOINED)
    joined = joined.append_column("screen_drop", pa.array([drops.get(r["sample_id"]) for r in rows], pa.string()))
    cfg = FilterConfig()
    oracle = explain(joined, cfg)
    assert {"screen.duplicate", "screen.copy"} <= set(oracle.column("rule").to_pylist())
    assert explain_catalog(con, cfg).equals(oracle)


score = st.one_of(st.none(), st.integers(1, 10))
expected_score = st.one_of(st.none(), st.floats(1, 10, allow_nan=False))


@st.composite
def joined_rows(draw):
    rows = []
    for i in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["video_edit", "image_edit", "clip"]))
        status = draw(st.sampled_from([None, "ok", "repaired", "malformed", "timeout"]))
        metrics = {"video_edit": VIDEO, "image_edit": IMAGE, "clip": CLIP}[kind] if status else []  # unscored: no scores row
        rows.append(row(
            f"s{i:03d}", kind=kind, status=status,
            dataset=draw(st.sampled_from(["ditto", "openve", "reco", "koala"])),
            category=draw(st.sampled_from([None, "style", "add", "subtitles", "background"])),
            scores={m: draw(score) for m in metrics}, expected={m: draw(expected_score) for m in metrics},
            sample_error=draw(st.sampled_from([None, None, None, "bad"])),
            instruction=draw(st.sampled_from([None, "Add a hat.", "None", "ERROR in caption", "nonexistent"])),
        ))
    return rows


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(joined_rows(), st.sampled_from(["score", "expected"]), st.sampled_from([7.5, 8, 9]))
def test_sql_matches_arrow_property(rows, field, mc):
    cfg = FilterConfig(score_field=field, video={"at_least": {"visual_quality": 8}, "greater_than": {"motion_consistency": mc}})
    _same(rows, cfg)


@pytest.mark.parametrize("n", [0, 2_500])
def test_streamed_selected_has_the_bytes_of_the_whole_table(tmp_path, n):
    """The filter stage streams `selected` batch by batch (memory of a batch, not of the table);
    odd batch sizes still give the row groups, so the bytes, of writing the whole table at once."""
    from manifests.io import write_part

    rows = [video(f"s{i:05d}", vq=7 + i % 4, dataset=["reco", "ditto"][i % 2], category="style") for i in range(n)]
    con = catalog_for(rows)
    whole, streamed = tmp_path / "whole.parquet", tmp_path / "streamed.parquet"
    write_part(whole, selected_catalog(con, FilterConfig()))
    assert write_selected(con, FilterConfig(), streamed, batch_rows=333) == n
    assert streamed.read_bytes() == whole.read_bytes()


def test_joined_sql_without_scores_rejects_everything_as_unscored():
    con = catalog_for([video("a"), image("b")])
    con.execute("DROP VIEW scores")
    assert "NULL::VARCHAR AS judge_status" in joined_sql(["samples", "probes"])
    got = selected_catalog(con, FilterConfig()).to_pylist()
    assert [r["rejected_by"] for r in got] == ["judge_status", "judge_status"]


def test_reco_loader_rejected_instructions_have_their_own_rule():
    rows = [video("ok", instruction="Add a hat."), video("err", instruction="Error: caption failed"),
            video("none", instruction="None"), video("other_ds", dataset="ditto", category="style", instruction="None"),
            video("bad_first", instruction="none", sample_error="missing")]
    got = select(rows)
    assert got == {"ok": None, "err": "rejected_instruction", "none": "rejected_instruction",
                   "other_ds": None, "bad_first": "sample_error"}
    assert "rejected_instruction" in rule_names(FilterConfig(), list(JOINED.names))
    # the words are config: none at all turns the rule off
    assert select(rows, FilterConfig(reject_instruction_words={}))["err"] is None
    _same(rows, FilterConfig())
