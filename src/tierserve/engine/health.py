"""State a Triton user alerts on, read from the engine at scrape time: whether each model version is
ready, and the state of every circuit breaker (one per pool, one per remote endpoint)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from tierserve.backends.remote import RemoteBackend
from tierserve.engine.engine import Engine, ModelState
from tierserve.router.breaker import BreakerState

# Numeric breaker states: alert on `tierserve_breaker_state == 2` (open).
BREAKER_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


def engine_state_metrics(engine: Engine) -> Iterable[Metric]:
    ready = GaugeMetricFamily(
        "tierserve_model_ready",
        "1 when the model version serves, 0 when it is loading, unloading or failed to load "
        "(the reason is in the repository index).",
        labels=["model", "version", "state"],
    )
    for row in engine.index():
        if row["state"] == ModelState.UNAVAILABLE and row.get("reason") == "unloaded":
            continue  # unloaded on purpose: nothing to alert on
        ready.add_metric(
            [row["name"], row["version"], str(row["state"])], 1.0 if row["state"] == ModelState.READY else 0.0
        )
    breakers = GaugeMetricFamily(
        "tierserve_breaker_state",
        "Circuit breaker per pool and remote endpoint: 0 closed, 1 half-open, 2 open.",
        labels=["model", "version", "pool", "endpoint"],
    )
    for deployment in engine.deployments():
        for pool, runner in list(deployment.runners.items()):
            labels = [deployment.name, str(deployment.version), pool]
            breakers.add_metric([*labels, ""], BREAKER_VALUES[runner.breaker.state])
            for backend in list(runner.backends):
                if isinstance(backend, RemoteBackend):
                    for endpoint, state in backend.endpoint_states():
                        breakers.add_metric([*labels, endpoint], BREAKER_VALUES[state])
    return [ready, breakers]
