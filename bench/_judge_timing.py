"""CPU and latency measurements of bench_judge_vllm.py (apart so that it stays under 400 lines):
the client's own CPU, the server process group's, the time at least one request was in flight,
and latency percentiles."""
from __future__ import annotations

import os
import resource
from pathlib import Path

import numpy as np

from stages.judge.server import live_group_members


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_group(pgid: int) -> float:
    """CPU seconds used so far by the live processes of the server's process group."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for pid in live_group_members(pgid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Time covered by at least one interval (here: at least one request at the server)."""
    covered, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > end:
            covered += b - max(a, end)
            end = b
    return covered


def pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def latency_line(label: str, values: list[float]) -> str:
    ms = [1000 * v for v in values]
    return (f"  {label:<34} p50 {pct(ms, 50):7.1f}  p90 {pct(ms, 90):7.1f}  p99 {pct(ms, 99):7.1f}  "
            f"max {max(ms) if ms else float('nan'):7.1f} ms")
