"""What one stage run cost: a small JSON per stage run under ``state/_timings/``, written by the
runner (``StageClock``), read back by `curate report` (``load_runs``).

Recorded per run: wall seconds, the units of work run, the cluster's CPUs and GPUs, the device the
stage computed on, and the CPU seconds the run's process tree used (the driver, the local Ray
cluster it started, its workers and any judge server it launched). That tree is what a local run
pays for; on a remote cluster (``ray.address``) only the driver is visible, which the record says.
"""
from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

from manifests.io import atomic_write_json
from pipeline.curate.report.stages import gpu_stages

TIMINGS = "_timings"


class _TreeCpu:
    """CPU seconds used by this process and its descendants between start() and stop().

    A thread samples the tree every ``every_s``: Ray actors and tasks run in worker processes that
    may exit before the stage ends, taking their CPU times with them, so each process's last
    sample is kept (what a process did after its last sample, at most ``every_s``, is missed)."""

    def __init__(self, every_s: float = 0.25):
        self.every_s, self.base, self.last = every_s, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="stage-cpu-sampler")

    def _sample(self) -> dict:
        seen = {}
        me = psutil.Process()
        try:
            procs = [me, *me.children(recursive=True)]
        except psutil.Error:
            procs = [me]
        for p in procs:
            try:
                t = p.cpu_times()
                seen[(p.pid, p.create_time())] = t.user + t.system
            except psutil.Error:  # exited while we looked
                continue
        return seen

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.last.update(self._sample())

    def start(self) -> "_TreeCpu":
        self.base = self._sample()
        self.last = dict(self.base)
        self._thread.start()
        return self

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.last.update(self._sample())
        return sum(v - self.base.get(k, 0.0) for k, v in self.last.items())


def _cluster() -> dict:
    import ray

    if not ray.is_initialized():
        return {"cpus": os.cpu_count() or 1, "gpus": 0, "nodes": 1}
    res = ray.cluster_resources()
    return {"cpus": int(res.get("CPU", 0)), "gpus": int(res.get("GPU", 0)),
            "nodes": len([n for n in ray.nodes() if n.get("Alive")])}


def stage_device(cfg, stage: str, gpus: int) -> tuple[str, int]:
    """(where the stage computed, the GPUs it held) from the settings the runner used."""
    if stage == "encode":
        device = cfg.encode.device
        if device == "auto":
            device = "cuda" if gpus > 0 else "cpu"
        return device, (gpus if device == "cuda" else 0)
    if stage == "vlm-filter":
        backend = cfg.judge.backend
        if backend == "openai":
            local = all(any(h in u for h in ("127.0.0.1", "localhost")) for u in cfg.judge.urls)
            # A server on this machine shares its hardware; a remote one is not ours to measure.
            return ("local judge server, " + ("cuda" if gpus else "cpu")) if local else "external judge server", \
                (gpus if local else 0)
        return f"judge backend {backend}, {'cuda' if gpus else 'cpu'}", gpus
    return "cpu", 0


class StageClock:
    """``with StageClock(workdir, name, cfg, overwrite) as clock: report = run_stage(...); clock.report = report``"""

    def __init__(self, workdir: Path, stage: str, cfg, overwrite: bool, remote: bool):
        self.workdir, self.stage, self.cfg, self.overwrite, self.remote = Path(workdir), stage, cfg, overwrite, remote
        self.report = None

    def __enter__(self) -> "StageClock":
        self.started = datetime.now(timezone.utc)
        self.t0, self.cpu = time.perf_counter(), _TreeCpu().start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        cpu_s = self.cpu.stop()
        if exc_type is not None or self.report is None:
            return  # a failed stage leaves no timing: its work is redone and timed by the next run
        wall = time.perf_counter() - self.t0
        cluster = _cluster()
        device, gpus_used = stage_device(self.cfg, self.stage, cluster["gpus"])
        record = {
            "stage": self.stage, "started": self.started.isoformat(timespec="milliseconds"),
            "wall_s": round(wall, 3), "work_s": round(self.report.seconds, 3),
            "units_total": self.report.units_total, "units_run": self.report.units_run,
            "overwrite": self.overwrite, "cpu_s": round(cpu_s, 3),
            "cpu_scope": "driver only (remote Ray cluster)" if self.remote else "process tree (local Ray cluster)",
            **cluster, "device": device, "gpus_used": gpus_used, "gpu_s": round(wall * gpus_used, 3),
            "gpu_stage": self.stage in gpu_stages(),
        }
        stamp = self.started.strftime("%Y%m%dT%H%M%S%fZ")
        atomic_write_json(self.workdir / "state" / TIMINGS / f"{stamp}-{self.stage}.json", record)


def load_runs(workdir: Path) -> dict[str, list[dict]]:
    """Per stage, its recorded runs since the last --overwrite of it (older output was discarded)."""
    runs: dict[str, list[dict]] = {}
    for path in sorted((Path(workdir) / "state" / TIMINGS).glob("*.json")):
        rec = json.loads(path.read_text())
        if rec.get("overwrite"):
            runs[rec["stage"]] = []
        if rec["stage"] == "filter":  # recomputed whole on every run: only the last one counts
            runs["filter"] = []
        runs.setdefault(rec["stage"], []).append(rec)
    return runs
