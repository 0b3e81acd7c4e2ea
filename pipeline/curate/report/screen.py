"""The report's screen section: duplicate groups per dataset pair, every benchmark hit as a
side-by-side thumbnail (benchmark frame | sample frame), copy-score and motion histograms with
the thresholds and the samples nearest them, and the judge requests the screen saved."""
from __future__ import annotations

import base64
import io

import numpy as np
from jinja2 import Environment

from pipeline.curate.report import plots

MAX_HITS = 24  # thumbnails shown (the table lists them all)
NEAR = 3  # samples listed on each side of a threshold

TEMPLATE = """<section id="screen"><h2>Screen: duplicates, contamination, copies, motion</h2>
<p>judge requests saved: <b>{{ s.saved }}</b> of {{ s.screened }} screened samples
({% for rule, n in s.by_rule %}{{ rule }}: {{ n }}{% if not loop.last %}, {% endif %}{% endfor %})</p>
<h3>Duplicate groups per dataset pair</h3>
<table><tr><th class="l">dataset</th><th class="l">duplicate of (keeper's dataset)</th><th>samples</th><th>groups</th></tr>
{% for a, b, n, g in s.pairs %}<tr><td class="l">{{ a }}</td><td class="l">{{ b }}</td><td>{{ n }}</td><td>{{ g }}</td></tr>{% endfor %}</table>
<h3>Benchmark contamination ({{ s.hits|length }} samples)</h3>
<table><tr><th class="l">sample</th><th class="l">benchmark</th><th class="l">clip</th><th>frames</th></tr>
{% for h in s.hits %}<tr><td class="l">{{ h.sample_id }}</td><td class="l">{{ h.benchmark }}</td><td class="l">{{ h.clip }}</td><td>{{ h.frames }}</td></tr>{% endfor %}</table>
<div class="grid">{% for h in s.hits if h.png %}<figure><img alt="{{ h.sample_id }}" src="data:image/png;base64,{{ h.png }}">
<figcaption>{{ h.benchmark }} frame at {{ h.bt }} s | {{ h.sample_id }} ({{ h.side }}) at {{ h.t }} s</figcaption></figure>{% endfor %}</div>
<div class="grid">{% for title, png, near in s.histograms %}<figure><img alt="{{ title }}" src="data:image/png;base64,{{ png }}">
<figcaption>{{ title }}; nearest the threshold: {{ near|join(', ') }}</figcaption></figure>{% endfor %}</div>
</section>"""


def _hist(title: str, values: list[float], threshold: float, xlabel: str) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 2.4))
    if values:
        ax.hist(values, bins=30, color=plots.BAR)
    ax.axvline(threshold, color=plots.CUT, linewidth=2)
    ax.text(threshold, ax.get_ylim()[1] * 0.9, f" drop < {threshold:g}", color=plots.CUT, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("samples")
    ax.set_title(title, fontsize=9)
    return base64.b64encode(plots._png(fig)).decode("ascii")


def _frame(uri: str, at: float, start: float | None, roots) -> np.ndarray | None:
    from stages.screen.frames import read_media

    modality = "image" if uri.lower().endswith((".jpg", ".jpeg", ".png", ".webp", ".bmp")) else "video"
    try:
        frames = read_media(uri, modality, roots, 0.05, 10_000, (start or 0.0) + max(at - 0.025, 0.0),
                            (start or 0.0) + at + 0.05)
    except Exception:  # a thumbnail is a courtesy: a clip that cannot be read leaves the table row
        return None
    return frames.gray[0]


def _pair_png(left: np.ndarray | None, right: np.ndarray | None) -> str | None:
    from PIL import Image

    if left is None or right is None:
        return None
    both = np.concatenate([left, np.full((left.shape[0], 4), 255.0), right], axis=1)
    buf = io.BytesIO()
    Image.fromarray(both.clip(0, 255).astype(np.uint8)).resize((2 * 128 + 4, 128)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _near(con, column: str, kind_sql: str, threshold: float) -> list[str]:
    rows = con.execute(f"""SELECT sample_id, {column} FROM screens WHERE {kind_sql} AND {column} IS NOT NULL
                           ORDER BY abs({column} - {threshold!r}), sample_id LIMIT {2 * NEAR}""").fetchall()
    return [f"{s} ({v:.3f})" for s, v in rows]


def screen_section(con, present: set[str], cfg) -> str | None:
    """The section's HTML, or None when the run has no screen verdicts."""
    if "screen_verdicts" not in present:
        return None
    sc = cfg.screen
    s: dict = {}
    s["screened"], s["saved"] = con.execute(
        "SELECT count(*), count(*) FILTER (judge_skip) FROM screen_verdicts").fetchone()
    s["by_rule"] = con.execute("SELECT screen_drop, count(*) FROM screen_verdicts WHERE screen_drop IS NOT NULL "
                               "GROUP BY 1 ORDER BY 1").fetchall()
    s["pairs"] = con.execute("""SELECT v.dataset, k.dataset, count(*), count(DISTINCT v.duplicate_of)
        FROM screen_verdicts v JOIN screen_verdicts k ON k.sample_id = v.duplicate_of GROUP BY 1, 2 ORDER BY 1, 2""").fetchall()
    hits = con.execute("""SELECT v.sample_id, v.benchmark, v.benchmark_clip, v.benchmark_frames, v.benchmark_time_s,
        v.matched_side, v.matched_time_s, CASE WHEN v.matched_side = 'source' THEN s.source_uri ELSE s.target_uri END,
        s.clip_start_s FROM screen_verdicts v JOIN samples s USING (sample_id) WHERE v.benchmark IS NOT NULL
        ORDER BY v.benchmark, v.benchmark_clip, v.sample_id""").fetchall()
    s["hits"] = []
    for k, (sid, bench, clip, frames, bt, side, t, uri, start) in enumerate(hits):
        png = _pair_png(_frame(clip, bt, None, None), _frame(uri, t, start, None)) if k < MAX_HITS else None
        s["hits"].append({"sample_id": sid, "benchmark": bench, "clip": clip, "frames": frames, "png": png,
                          "bt": round(bt or 0, 2), "t": round(t or 0, 2), "side": side})
    edits = "kind IN ('video_edit', 'image_edit')"
    copies = [r[0] for r in con.execute(f"SELECT copy_score FROM screens WHERE {edits} AND copy_score IS NOT NULL").fetchall()]
    motion = [r[0] for r in con.execute("SELECT content_motion FROM screens WHERE kind = 'clip' AND content_motion IS NOT NULL").fetchall()]
    s["histograms"] = [
        (f"copy score of edit pairs ({len(copies)})", _hist("copy score", copies, sc.copy_max_diff, "largest local difference"),
         _near(con, "copy_score", edits, sc.copy_max_diff)),
        (f"content motion of raw clips ({len(motion)})", _hist("content motion", motion, sc.min_content_motion,
                                                               "% of the side per second"),
         _near(con, "content_motion", "kind = 'clip'", sc.min_content_motion)),
    ]
    return Environment(autoescape=True).from_string(TEMPLATE).render(s=s)
