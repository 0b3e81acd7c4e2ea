"""Starting or joining Ray (a stage's units are mapped over it by ``pipeline.stage.run_phases``).

The same stage code runs on a new local cluster (this machine's cores) or on an existing cluster
(``--ray-address``, ``ray.address`` in the config, or RAY_ADDRESS). When joining a cluster our
packages travel with the job (``py_modules``) so the workers need only the dependencies.
"""
from __future__ import annotations

import os

import ray



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
