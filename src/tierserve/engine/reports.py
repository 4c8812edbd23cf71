"""Reports: what the registry and the runners hold, read out for the routes that show it.

The repository index (every model on disk with the state of each version), Triton's statistics,
the service-time estimates per (version, pool), and the queues per tier. They read the registry's
tables and the runners' snapshots and change nothing. The model metadata and configuration
documents of the protocols are built from the same deployments in ``api/documents.py``; the state
metrics scraped by Prometheus in ``engine/health.py``.
"""

from __future__ import annotations

from tierserve.engine.registry import ModelRegistry, ModelState
from tierserve.errors import ModelNotFound
from tierserve.scheduler.tiers import TierTable

QueueRow = tuple[str, int, str, dict[str, int], float | None]


def index(registry: ModelRegistry) -> list[dict[str, str]]:
    """Every model in the repository, with the state of each version known to the engine."""
    states = registry.states()
    rows: list[dict[str, str]] = []
    for name in registry.repository.model_names():
        known = sorted(v for (n, v) in states if n == name)
        if not known:
            rows.append({"name": name, "version": "", "state": ModelState.UNAVAILABLE, "reason": ""})
        for version in known:
            entry = states[(name, version)]
            rows.append({"name": name, "version": str(version), "state": entry.state, "reason": entry.reason})
    for name, reason in registry.repository.unservable().items():  # e.g. a Triton repo's TensorRT models
        rows.append({"name": name, "version": "", "state": ModelState.UNAVAILABLE, "reason": reason})
    return sorted(rows, key=lambda row: row["name"])


def statistics(
    registry: ModelRegistry, name: str | None = None, version: str | None = None
) -> list[dict[str, object]]:
    """Triton's statistics extension: every loaded version, one model's, or one version's."""
    if name is None:
        chosen = registry.deployments()
    elif version:
        chosen = [registry.deployment(name, version)]
    else:
        model = registry.loaded(name)
        if model is None:
            raise ModelNotFound(name)
        chosen = list(model.deployments.values())
    return [d.stats.as_triton(d.name, d.version) for d in sorted(chosen, key=lambda d: (d.name, d.version))]


def profiles(registry: ModelRegistry) -> list[dict[str, object]]:
    """The service-time estimate of every (model version, pool) as it stands, and its seed."""
    return [
        {
            "model": d.name,
            "version": d.version,
            "pool": pool,
            "kind": runner.pool.kind,
            "seeded_from": d.estimate_sources.get(pool, "online only"),
            "batches": {
                str(rows): {"mean_ms": round(mean * 1000, 4), "dev_ms": round(dev * 1000, 4)}
                for rows, (mean, dev) in runner.estimator.snapshot().items()
            },
        }
        for d in sorted(registry.deployments(), key=lambda d: (d.name, d.version))
        for pool, runner in d.runners.items()
    ]


def queue_snapshots(registry: ModelRegistry, tiers: TierTable, honour_tiers: bool) -> list[QueueRow]:
    """Per model version and pool: queued requests per tier (all in one, "all", when tiers are not
    honoured) and the oldest one's age (seconds)."""
    names = {t.priority: t.name for t in tiers.tiers}
    rows = []
    for deployment in registry.deployments():
        for pool, runner in deployment.runners.items():
            depths, age = runner.queue_snapshot()
            per_tier = {names.get(p, str(p)) if honour_tiers else "all": n for p, n in depths.items()}
            rows.append((deployment.name, deployment.version, pool, per_tier, age))
    return rows
