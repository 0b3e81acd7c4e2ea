"""Assemble the report page: query the run (``queries``), draw (``plots``, ``sheets``), price
(``cost``), and render ``template.html.j2`` with autoescaping (every text from the tables is
escaped; images are base64 PNG data URIs, so the page opens from disk with no network)."""
from __future__ import annotations

import base64
import json
import os
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

import pipeline.curate.registry  # noqa: F401  (registers every stage's tables: the catalog's views)
from manifests import catalog
from pipeline.curate.report import cost, plots, queries
from pipeline.curate.report.settings import CORPUS_SOURCES
from pipeline.curate.report.timings import load_runs

SECTIONS = [("funnel", "Funnel"), ("screen", "Screen"), ("scores", "Scores"), ("yields", "Yields"), ("thresholds", "Near the thresholds"),
            ("judge", "Judge health"), ("stages", "Stages"), ("pretext", "Pretext"), ("cost", "Cost model")]
STAGE_COLUMNS = ["stage", "runs", "wall s", "rows", "samples", "rows/s", "CPU core-s", "allocated core-s",
                 "core-s / 1k samples", "GPU-s / 1k samples", "device", "note"]
COST_COLUMNS = ["stage", "samples reaching it", "core-hours", "GPU-hours", "basis"]


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}g}" if abs(v) < 1000 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def load_run_config(workdir: Path):
    from pipeline.curate.config import Config
    from pipeline.config_base import ConfigError

    path = workdir / "config.json"
    if not path.exists():
        raise ConfigError(f"{workdir}: no config.json (not a run directory); pass --workdir of a run")
    try:
        return Config.model_validate_json(path.read_text())
    except Exception as e:
        raise ConfigError(f"{path}: cannot read the run's config ({str(e).splitlines()[0]}); "
                          "pass --config with the run's YAML") from None


def thresholds_of(filter_cfg, kind: str) -> dict[str, list[tuple[str, float]]]:
    """{metric: [(op, value)]} of ``kind``'s threshold rules, as the filter applies them."""
    from filters.rules import rules_for

    out: dict[str, list[tuple[str, float]]] = {}
    for rule in rules_for(filter_cfg):
        if rule.what == "threshold" and rule.kind == kind:
            out.setdefault(rule.metric, []).append((rule.op, rule.value))
    return out


def _histograms(con, cfg) -> list[dict]:
    out = []
    for kind, metric in queries.metric_kinds(con, cfg.judge):
        ints, expected = queries.score_values(con, metric, kind)
        ths = thresholds_of(cfg.filter, kind).get(metric, [])
        text = ", ".join(f"{op} {v:g}" for op, v in ths) or "none configured"
        out.append({"kind": kind, "metric": metric, "n": sum(ints), "threshold_text": text,
                    "thresholds_json": json.dumps([[op, v] for op, v in ths]),
                    "png": _b64(plots.score_histogram(f"{kind}: {metric}", ints, expected, ths,
                                                                  integer_cut=cfg.filter.score_field == "score"))})
    return out


def _threshold_sheets(con, cfg, workdir: Path) -> list[dict]:
    from pipeline.curate.report.sheets import strip
    from stages.shard.preview import _roots

    roots = _roots(workdir) or {}
    cols = ["sample_id", "dataset", "modality", "source_uri", "target_uri", "clip_start_s", "clip_end_s",
            "source_frames", "source_fps", "target_frames", "target_fps"]
    own = {r[0] for r in con.execute("DESCRIBE samples").fetchall()}
    probed = {r[0] for r in con.execute("DESCRIBE probes").fetchall()} - own if "probes" in catalog.views(con) else set()
    cols = [c for c in cols if c in own | probed]
    n = cfg.report.examples_per_side
    kinds = [r[0] for r in con.execute("SELECT DISTINCT kind FROM scores").fetchall()]
    rules = [(kind, metric, op, value) for kind in ("video_edit", "image_edit", "clip") if kind in kinds
             for metric, ths in thresholds_of(cfg.filter, kind).items() for op, value in ths]
    picked = [(*rule, sides) for rule, sides in zip(rules, queries.near_thresholds(con, rules, cfg.filter.score_field, n))]
    # One lookup for every example of every sheet, not one per side, with the ids filtering each
    # table before the join: through samples_full every table it joins would be hashed whole.
    ids = sorted({item[0] for *_, sides in picked for items in sides for item in items})
    where, params = queries.ids_where(ids)
    found = {}
    if ids:
        pcols = [c for c in cols if c in probed]
        scols = [c for c in cols if c in own]
        sql = (f"SELECT {', '.join(('s.' if c in own else 'p.') + c for c in cols)} FROM "
               f"(SELECT {', '.join(scols)} FROM samples WHERE {where}) s")
        if pcols:
            sql += f" LEFT JOIN (SELECT sample_id, {', '.join(pcols)} FROM probes WHERE {where}) p USING (sample_id)"
        found = {r[0]: r for r in con.execute(sql, params * (2 if pcols else 1)).fetchall()}
    sheets = []
    for kind, metric, op, value, (above, below) in picked:
        sides = []
        for items in (above, below):
            side = []
            for sid, ds, score, instruction, caption in items:
                sample = dict(zip(cols, found[sid]))
                side.append({"sample_id": sid, "dataset": ds, "score": f"{score:g}",
                             "text": instruction or caption or "",
                             "png": _b64(strip(sample, roots.get(ds) if roots else None))})
            sides.append(side)
        sheets.append({"kind": kind, "metric": metric, "op": op, "value": f"{value:g}",
                       "above": sides[0], "below": sides[1]})
    return sheets


def _judge(con) -> tuple[dict, list]:
    health = queries.judge_health(con)
    if not health:
        return {}, []
    pngs = [("statuses", plots.bars("judge status", [s for s, _ in health["status"]], [n for _, n in health["status"]], "samples")),
            ("attempts per sample", plots.bars("HTTP attempts", [str(a) for a, _ in health["attempts"]],
                                               [n for _, n in health["attempts"]], "samples")),
            ("latency (last attempt)", plots.histogram("latency of the last attempt", health["latency"], "seconds")),
            ("prompt tokens per request", plots.histogram("prompt tokens", health["prompt_tokens"], "tokens")),
            ("output tokens per request", plots.histogram("output tokens", health["output_tokens"], "tokens"))]
    return health, [(t, _b64(p)) for t, p in pngs]


def _preview(con, workdir: Path) -> tuple[str | None, str]:
    from stages.shard.preview import PreviewError, write_preview

    if "encoded" not in catalog.views(con):
        return None, "No encoded table yet: no contact sheet."
    picks = [r[0] for r in con.execute(
        "SELECT min(sample_id) FROM encoded WHERE error IS NULL AND variant IN ('cube', 'speed', 'tube') "
        "GROUP BY variant ORDER BY variant").fetchall()]
    if not picks:
        return None, "No raw clip with a cube, speed or tube variant was encoded in this run."
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = write_preview(workdir, picks, None, Path(tmp) / "preview.png", gif=False, columns=5)[0]
        except PreviewError as e:
            return None, f"No contact sheet: {e}"
        return _b64(path.read_bytes()), ""


def _stage_rows(costs: list) -> list[list[str]]:
    return [[c.stage, c.runs, _fmt(c.wall_s), _fmt(c.rows), _fmt(c.samples), _fmt(c.rows_per_s), _fmt(c.cpu_s),
             _fmt(c.alloc_core_s), _fmt(c.per_1000(c.cpu_s)), _fmt(c.per_1000(c.gpu_s)) if c.ran_on_gpu else "-",
             c.device, c.note] for c in costs]


def _cost_section(cfg, costs, funnel) -> dict:
    rc = cfg.report
    rows = cost.corpus_cost(costs, rc.corpus, funnel, rc.reach)
    cores, gpus = cost.cluster_needed(rows, rc.finish_in_hours, rc.utilisation)
    notes = []
    if costs and not any(c.ran_on_gpu for c in costs):
        notes.append("Rates measured on a CPU-only run: no stage computed on a GPU. The GPU stages (vlm-filter, "
                     "encode) are priced in core-hours at their CPU rate and get no GPU-hours; a GPU run is needed "
                     "to price them on GPUs.")
    notes.append(f"Samples reaching each stage: {'every corpus sample reaches every stage (an upper bound)' if rc.reach == 'all' else 'this run’s per-dataset share of records that reached the stage'} "
                 f"(report.reach: {rc.reach}). One rate per stage for all datasets; cost per sample scales with "
                 "this run's media size (see docs/scaling.md).")
    store = cost.storage_totals(rc.corpus)
    notes.append(f"Storage at the recipe's sizes (one key per sample, all kept: an upper bound): "
                 f"{store['table']:,.0f} TB of tensors in the encoded table and {store['shards']:,.0f} TB in the "
                 f"shards, {store['both']:,.0f} TB at rest; after `curate prune --sharded` (one copy, the shards'; "
                 f"the shard stage reads pruned tensors back when it rewrites a shard) {store['pruned']:,.0f} TB. "
                 f"Per key " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in cost.KEY_BYTES.items())
                 + " (docs/scaling.md, Storage).")
    defaults = {k: v[0] for k, v in CORPUS_SOURCES.items()}
    corpus = [(ds, _fmt(n), CORPUS_SOURCES[ds][1] if defaults.get(ds) == n else "report.corpus (config)")
              for ds, n in rc.corpus.items()]
    total_core = sum(r.core_hours for r in rows)
    gpu_vals = [r.gpu_hours for r in rows if r.gpu_hours is not None]
    table = [[r.stage, _fmt(round(r.samples)), _fmt(r.core_hours), _fmt(r.gpu_hours), r.flag] for r in rows]
    table.append(["total", _fmt(round(sum(rc.corpus.values()))), _fmt(total_core),
                  _fmt(sum(gpu_vals)) if gpu_vals else "-", ""])
    text = (f"To finish in {rc.finish_in_hours:g} hours (report.finish_in_hours) at {rc.utilisation:.0%} utilisation "
            f"(report.utilisation): about {cores:,.1f} CPU cores"
            + (f" and {gpus:,.1f} GPUs." if gpus is not None else "; GPUs: not measured in this run."))
    return {"cost_rows": table, "cluster_text": text, "cost_notes": notes, "corpus": corpus,
            "cost": {"rows": rows, "cores": cores, "gpus": gpus}}


class _Parts:
    """Says each part of the report that took a second or more, as it finishes (stderr): at corpus
    scale the page takes tens of seconds, and the lines show where; ``times`` keeps every part's."""

    def __init__(self, quiet: bool = False):
        self.times: dict[str, float] = {}
        self.quiet = quiet

    @contextmanager
    def part(self, name: str):
        t0 = time.perf_counter()
        yield
        self.times[name] = time.perf_counter() - t0
        if not self.quiet and self.times[name] >= 1.0:
            from pipeline.progress import console

            console.print(f"report: {name} {self.times[name]:.1f} s")


def report_data(workdir: Path, cfg, parts: _Parts | None = None) -> dict:
    """Everything the page shows, as plain values (the tests read it too)."""
    from filters.selection import FORMAT_COLUMNS, explain_catalog, format_explain

    parts = parts or _Parts(quiet=True)
    with parts.part("catalog"):
        con = catalog.connect(workdir)
        present = set(catalog.views(con))
    with parts.part("funnel"):
        funnel = queries.funnel(con)
    notes = []
    data = {"workdir": str(workdir), "sections": SECTIONS, "funnel": funnel, "notes": notes,
            "written": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "score_field": cfg.filter.score_field,
            "stage_columns": STAGE_COLUMNS, "cost_columns": COST_COLUMNS, "yield_columns": FORMAT_COLUMNS}
    with parts.part("funnel plot"):
        data["funnel_png"] = _b64(plots.funnel({ds: [(s.name, s.count) for s in steps] for ds, steps in funnel.items()})) \
            if funnel else None
    from pipeline.curate.report.screen import screen_section

    with parts.part("screen"):
        data["screen_html"] = screen_section(con, present, cfg)  # None when the run was not screened
    scored = "scores" in present
    with parts.part("score histograms"):
        data["histograms"] = _histograms(con, cfg) if scored else []
    with parts.part("yields"):
        data["yields"] = format_explain(explain_catalog(con, cfg.filter)) if scored else []
    with parts.part("threshold sheets"):
        data["threshold_sheets"] = _threshold_sheets(con, cfg, workdir) if scored else []
    with parts.part("judge health"):
        data["judge"], data["judge_pngs"] = _judge(con) if scored else ({}, [])
    with parts.part("stage costs"):
        runs = load_runs(workdir)
        costs = cost.stage_costs(runs, queries.stage_rows(con), cfg.report.judge_server_gpus)
    data["stage_costs"], data["stage_rows"] = costs, _stage_rows(costs)
    with parts.part("pretext mix"):
        mix = dict(queries.variant_mix(con))
        weights = dict(cfg.pretext.weights)
        data["mix"] = mix
        data["mix_png"] = _b64(plots.variant_mix(mix, weights)) if mix else None
    data["mix_text"] = ", ".join(f"{v}: {mix.get(v, 0)} drawn / weight {weights.get(v, 0):g}"
                                 for v in ("none", "cube", "speed", "tube"))
    if cfg.pretext.mode == "all":
        notes.append("pretext.mode is all: every variant is made for every clip, so the drawn mix is not 1:2:3:4 by design.")
    with parts.part("contact sheet"):
        data["preview_png"], data["preview_note"] = _preview(con, workdir)
    with parts.part("cost model"):
        data.update(_cost_section(cfg, costs, funnel))
    return data


def render(data: dict) -> str:
    env = Environment(loader=FileSystemLoader(Path(__file__).parent), autoescape=select_autoescape(["html", "j2"]))
    env.filters["fmt"] = _fmt
    return env.get_template("template.html.j2").render(**data)


def build_report(workdir: Path, out: Path | None = None, cfg=None) -> Path:
    from pipeline.config_base import ConfigError

    if not (workdir / "tables").exists():
        raise ConfigError(f"{workdir} holds no run (no tables/); pass --workdir of a run")
    cfg = cfg or load_run_config(workdir)
    out = out or workdir / "report.html"
    parts = _Parts()
    data = report_data(workdir, cfg, parts)
    with parts.part("page"):
        html = render(data)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")  # a reader never sees half a page
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    return out
