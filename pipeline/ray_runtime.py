"""Starting or joining Ray, and mapping a stage's units of work over it with Ray Data.

The same stage code runs on a new local cluster (this machine's cores) or on an existing cluster
(``--ray-address``, ``ray.address`` in the config, or RAY_ADDRESS). When joining a cluster our
packages travel with the job (``py_modules``) so the workers need only the dependencies.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterator

import ray

from pipeline.progress import Progress


def init_ray(address: str | None = None, num_cpus: int | None = None) -> str:
    """Connect to ``address`` (or RAY_ADDRESS) or start a local cluster; returns a description."""
    from ray.data import DataContext

    if ray.is_initialized():
        where = "existing Ray session"
    else:
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address:
            import filters
            import manifests
            import pipeline
            import stages

            ray.init(
                address=address,
                runtime_env={"py_modules": [pipeline, stages, manifests, filters]},
                log_to_driver=True,
            )
            where = f"Ray cluster at {address}"
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False)
            where = "local Ray"
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # we show our own, per unit of work
    ctx.execution_options.preserve_order = False
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = int(ray.cluster_resources().get("CPU", 0))
    return f"{where} ({len(nodes)} node{'s' if len(nodes) != 1 else ''}, {cpus} CPUs)"


def map_units(
    fn: Callable[[dict[str, Any]], dict[str, Any]],
    units: list[dict[str, Any]],
    progress: Progress,
    num_cpus: float = 1,
    max_concurrency: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Run ``fn`` once per unit as a Ray Data pipeline, yielding each unit's result as it finishes.

    One unit per block, so the cluster schedules units independently and a slow unit never holds
    back the others. ``fn`` writes its own output atomically and returns a small summary row.
    """
    if not units:
        return
    ds = ray.data.from_items(units, override_num_blocks=len(units))
    ds = ds.map(fn, num_cpus=num_cpus, concurrency=max_concurrency)
    for row in ds.iter_rows():
        progress.advance(row)
        yield row
