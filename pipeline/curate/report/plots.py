"""The report's figures: matplotlib on the Agg backend (no display), each returned as PNG bytes."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, no GUI toolkit
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

KEEP, CUT, BAR, LINE = "#2a9d8f", "#e76f51", "#4c72b0", "#dd8452"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def score_histogram(title: str, counts: list[int], expected: list[int],
                    thresholds: list[tuple[str, float]], integer_cut: bool = True) -> bytes:
    """Integer scores as bars (``counts`` of 1..10), expected scores as a density on a second axis
    (``expected``: counts per bin of queries.EXPECTED_EDGES; the bins are counted in DuckDB, so no
    score list is held), and each configured threshold as a vertical line with the rejected side
    shaded (``integer_cut``: the filter compares the integer score, so the line sits between the
    kept and the cut bars)."""
    fig, ax = plt.subplots(figsize=(4.2, 2.6))
    values = np.arange(1, 11)
    ax.bar(values, counts, width=0.8, color=BAR, alpha=0.85, label="score (integer)")
    ax.set_xlim(0.4, 10.6)
    ax.set_xticks(values)
    ax.set_xlabel("score")
    ax.set_ylabel("samples")
    if sum(expected) >= 2:
        ax2 = ax.twinx()
        edges = np.linspace(0.5, 10.5, 41)
        dens = np.asarray(expected, dtype=float) / (sum(expected) * np.diff(edges))
        ax2.step(edges[:-1], dens, where="post", color=LINE, label="expected score (density)")
        ax2.set_ylabel("density", color=LINE)
        ax2.set_ylim(bottom=0)
    for op, value in thresholds:
        # Integer scores: the cut falls between bars (>= 8 keeps the 8 bar, > 8 cuts it);
        # expected scores are continuous and cut at the value itself.
        cut = value + (-0.5 if op == ">=" else 0.5) if integer_cut and float(value).is_integer() else value
        ax.axvline(cut, color=CUT, linewidth=2)
        ax.axvspan(0.4, cut, color=CUT, alpha=0.08)
        ax.text(cut, ax.get_ylim()[1] * 0.92, f" keep {op} {value:g}", color=CUT, fontsize=8)
    ax.set_title(title, fontsize=9)
    return _png(fig)


def bars(title: str, labels: list[str], values: list[float], xlabel: str = "", horizontal: bool = True) -> bytes:
    fig, ax = plt.subplots(figsize=(4.6, 0.35 * max(3, len(labels)) + 0.8))
    if horizontal:
        ax.barh(labels[::-1], values[::-1], color=BAR)
        ax.set_xlabel(xlabel)
        for y, v in enumerate(values[::-1]):
            ax.text(v, y, f" {v:g}", va="center", fontsize=8)
    else:
        ax.bar(labels, values, color=BAR)
        ax.set_ylabel(xlabel)
    ax.set_title(title, fontsize=9)
    return _png(fig)


def histogram(title: str, binned: tuple[list[int], list[float]], xlabel: str) -> bytes:
    """``binned``: (counts, edges), counted in DuckDB (queries.binned)."""
    counts, edges = binned
    fig, ax = plt.subplots(figsize=(4.2, 2.4))
    if counts:
        ax.stairs(counts, edges, fill=True, color=BAR)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("requests")
    ax.set_title(title, fontsize=9)
    return _png(fig)


def funnel(datasets: dict[str, list[tuple[str, int]]]) -> bytes:
    """One panel per dataset: the count at each step, log-scaled so small losses stay visible."""
    n = len(datasets)
    cols = 3
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(11, 2.3 * rows), squeeze=False)
    for ax, (name, steps) in zip(axes.flat, datasets.items()):
        labels = [s for s, _ in steps][::-1]
        values = [max(v, 0) for _, v in steps][::-1]
        ax.barh(labels, values, color=[KEEP if i else BAR for i in range(len(values))][::-1])
        for y, v in enumerate(values):
            ax.text(v, y, f" {v}", va="center", fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlim(0, max(values + [1]) * 1.25)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def variant_mix(drawn: dict[str, int], weights: dict[str, float]) -> bytes:
    """Share of keys per pretext variant, as drawn in this run beside the configured weights."""
    names = ["none", "cube", "speed", "tube"]
    total_d = sum(drawn.values()) or 1
    total_w = sum(weights.get(v, 0) for v in names) or 1
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(4.2, 2.4))
    ax.bar(x - 0.2, [drawn.get(v, 0) / total_d for v in names], 0.4, color=BAR, label=f"drawn ({total_d} keys)")
    ax.bar(x + 0.2, [weights.get(v, 0) / total_w for v in names], 0.4, color=LINE,
           label="configured " + ":".join(f"{weights.get(v, 0):g}" for v in names))
    ax.set_xticks(x, names)
    ax.set_ylabel("share of keys")
    ax.legend(fontsize=7)
    ax.set_title("pretext variant mix", fontsize=9)
    return _png(fig)
