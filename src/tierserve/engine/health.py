"""State a Triton user alerts on, read from the engine at scrape time: whether each model version is
ready, the state of every circuit breaker (one per pool, one per remote endpoint), and, where a GPU
pool runs, each GPU's utilisation and memory (NVML, from the ``nvidia-ml-py`` package of the
``torch`` extra; like Triton's ``nv_gpu_utilization``)."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from tierserve.backends.remote import RemoteBackend
from tierserve.engine.engine import Engine, ModelState
from tierserve.router.breaker import BreakerState

log = logging.getLogger(__name__)

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


class GpuMetrics:
    """Per-GPU utilisation and memory through NVML, only when a GPU pool is configured and NVML
    answers; otherwise nothing (and never an import of NVML at all without a GPU pool)."""

    def __init__(self, engine: Engine) -> None:
        self._nvml: Any = None
        if not any(pool.gpu for pool in engine.pools):
            return
        try:
            nvml = importlib.import_module("pynvml")
            nvml.nvmlInit()
        except Exception as exc:  # no package, no driver: say so once, export nothing
            log.warning("GPU metrics are off: NVML is not available (%s)", exc)
            return
        self._nvml = nvml

    def collect(self) -> Iterable[Metric]:
        nvml = self._nvml
        if nvml is None:
            return []
        busy = GaugeMetricFamily(
            "tierserve_gpu_utilization_ratio", "Share of the last sample period a kernel ran.", labels=["gpu"]
        )
        used = GaugeMetricFamily("tierserve_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu"])
        total = GaugeMetricFamily("tierserve_gpu_memory_total_bytes", "GPU memory.", labels=["gpu"])
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            rates = nvml.nvmlDeviceGetUtilizationRates(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            busy.add_metric([str(index)], rates.gpu / 100.0)
            used.add_metric([str(index)], float(memory.used))
            total.add_metric([str(index)], float(memory.total))
        return [busy, used, total]
