"""Prometheus metrics; one registry per server so that several servers can live in one process."""

from __future__ import annotations

import contextlib
import logging
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from tierserve import __version__

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The *_created series double the page and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TIER_OUTCOMES = ("met", "missed", "rejected", "failed", "invalid", "timed_out")


@dataclass(frozen=True)
class TierMetrics:
    met: Counter
    missed: Counter
    rejected: Counter
    failed: Counter
    invalid: Counter
    timed_out: Counter  # a best-effort request's own timeout passed first (answered 504)
    latency: Histogram

    def outcome(self, name: str) -> Counter:
        counter: Counter = getattr(self, name)
        return counter


QueueSource = Callable[[], Iterable[tuple[str, int, str, dict[str, int], float | None]]]


MetricSource = Callable[[], Iterable[Metric]]


class _SourceCollector(Collector):
    """Metric families computed at scrape time by the parts that own the state (models' readiness,
    circuit breakers, jobs): nothing to keep in step between scrapes."""

    def __init__(self) -> None:
        self.sources: list[MetricSource] = []

    def collect(self) -> Iterable[Metric]:
        for source in list(self.sources):
            try:
                yield from source()
            except Exception:  # one broken source must not take /metrics down with it
                logging.getLogger(__name__).exception("a metric source failed")


class _QueueCollector(Collector):
    """Reads queue depth per tier and the oldest request's age from the engine at scrape time."""

    def __init__(self) -> None:
        self.source: QueueSource | None = None

    def collect(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily(
            "tierserve_tier_queue_depth",
            "Requests waiting, per tier.",
            labels=["model", "version", "pool", "tier"],
        )
        age = GaugeMetricFamily(
            "tierserve_queue_oldest_age_seconds",
            "Age of the oldest queued request (0 when the queue is empty).",
            labels=["model", "version", "pool"],
        )
        for model, version, pool, per_tier, oldest in self.source() if self.source else ():
            for tier, n in per_tier.items():
                depth.add_metric([model, str(version), pool, tier], n)
            age.add_metric([model, str(version), pool], oldest or 0.0)
        return [depth, age]


@dataclass(frozen=True)
class ModelMetrics:
    """Label-bound children for one model version: binding once keeps the hot path cheap."""

    success: Counter
    failure: Counter
    rejected: Counter
    request_seconds: Histogram
    queue_seconds: Histogram
    inference_seconds: Histogram
    batch_size: Histogram
    queue_depth: Gauge


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        labels = ["model", "version"]
        self.requests = Counter(
            "tierserve_requests",
            "Inference requests by outcome (success, failure, rejected).",
            [*labels, "outcome"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "tierserve_request_duration_seconds",
            "Time from a request's arrival to its response being ready.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        pool_labels = [*labels, "pool"]
        self.queue_seconds = Histogram(
            "tierserve_queue_duration_seconds",
            "Time a request waited in the queue before its batch started.",
            pool_labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference_seconds = Histogram(
            "tierserve_inference_duration_seconds",
            "Time the backend spent running one batch.",
            pool_labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "tierserve_batch_size",
            "Rows per executed batch.",
            pool_labels,
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "tierserve_queue_depth", "Requests waiting in the queue.", pool_labels, registry=self.registry
        )
        # Tenant: its API key's (anonymous while authentication is off); cost per tenant and per pool
        # are sums over the same two counters.
        self.pool_requests = Counter(
            "tierserve_pool_requests",
            "Requests served per pool, tier and tenant (where the router sent them).",
            ["model", "pool", "tier", "tenant"],
            registry=self.registry,
        )
        self.cost = Counter(
            "tierserve_cost_dollars",
            "Cost accrued in US dollars, from the pools' configured prices (per hour or per request).",
            ["model", "pool", "tier", "tenant"],
            registry=self.registry,
        )
        self.tier_requests = Counter(
            "tierserve_tier_requests",
            "Requests per SLA tier by outcome: met or missed its target, rejected (503/429), failed, "
            "invalid, timed_out (504). Goodput is the rate of met.",
            ["model", "tier", "outcome"],
            registry=self.registry,
        )
        self.tier_seconds = Histogram(
            "tierserve_tier_request_duration_seconds",
            "Latency of served requests per SLA tier.",
            ["model", "tier"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.desired_replicas = Gauge(
            "tierserve_desired_replicas",
            "Replicas the autoscaler recommends per pool (scale on this with KEDA or an HPA).",
            ["pool"],
            registry=self.registry,
        )
        self.pool_demand = Gauge(
            "tierserve_pool_demand_replicas",
            "Replicas this server's own load on the pool needs (planned arrivals over one replica's "
            "capacity within the tightest target), not capped by this host: sum it over pods and "
            "divide by the replicas one pod runs to get pods (deploy/kubernetes/keda-scaledobject.yaml).",
            ["pool"],
            registry=self.registry,
        )
        # What a Triton user alerts on besides requests: the process, the build, state at scrape time.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.build_info = Gauge(
            "tierserve_build_info",
            "Always 1; the labels say which tierserve and Python this server runs.",
            ["version", "python"],
            registry=self.registry,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self._sources = _SourceCollector()
        self.registry.register(self._sources)
        self._tiers: dict[tuple[str, str], TierMetrics] = {}
        self._routes: dict[tuple[str, str, str, str], tuple[Counter, Counter]] = {}
        self._queues = _QueueCollector()
        self.registry.register(self._queues)

    def add_source(self, source: MetricSource) -> None:
        """Add families computed at each scrape (``GaugeMetricFamily`` and the like)."""
        self._sources.sources.append(source)

    def set_queue_source(self, source: QueueSource) -> None:
        self._queues.source = source

    def for_tier(self, model: str, version: int, tier: str) -> TierMetrics:
        key = (model, tier)
        found = self._tiers.get(key)
        if found is None:
            outcomes = {o: self.tier_requests.labels(model, tier, o) for o in TIER_OUTCOMES}
            found = TierMetrics(**outcomes, latency=self.tier_seconds.labels(model, tier))
            self._tiers[key] = found
        return found

    def for_model(self, name: str, version: int, pool: str) -> ModelMetrics:
        v = str(version)
        return ModelMetrics(
            success=self.requests.labels(name, v, "success"),
            failure=self.requests.labels(name, v, "failure"),
            rejected=self.requests.labels(name, v, "rejected"),
            request_seconds=self.request_seconds.labels(name, v),
            queue_seconds=self.queue_seconds.labels(name, v, pool),
            inference_seconds=self.inference_seconds.labels(name, v, pool),
            batch_size=self.batch_size.labels(name, v, pool),
            queue_depth=self.queue_depth.labels(name, v, pool),
        )

    def record_route(self, model: str, pool: str, tier: str, tenant: str | None, cost: float) -> None:
        key = (model, pool, tier, tenant or "anonymous")
        children = self._routes.get(key)
        if children is None:  # label lookups take a lock: bind once per (model, pool, tier, tenant)
            children = self._routes[key] = (self.pool_requests.labels(*key), self.cost.labels(*key))
        children[0].inc()
        children[1].inc(cost)

    def forget_model(
        self, name: str, version: int, tiers: Iterable[str] = (), pools: Iterable[str] = ()
    ) -> None:
        """Drop an unloaded model's series so that /metrics does not report it forever."""
        v = str(version)
        families: list[tuple[MetricWrapperBase, tuple[str, ...]]] = [(self.request_seconds, (name, v))]
        for pool in pools:
            families += [
                (f, (name, v, pool))
                for f in (self.queue_seconds, self.inference_seconds, self.batch_size, self.queue_depth)
            ]
        families += [(self.requests, (name, v, status)) for status in ("success", "failure", "rejected")]
        for key in [k for k in self._routes if k[0] == name]:
            del self._routes[key]
            families += [(self.pool_requests, key), (self.cost, key)]
        for tier in tiers:
            self._tiers.pop((name, tier), None)
            families.append((self.tier_seconds, (name, tier)))
            families += [(self.tier_requests, (name, tier, outcome)) for outcome in TIER_OUTCOMES]
        for family, label_values in families:
            with contextlib.suppress(KeyError):  # never observed, so never created
                family.remove(*label_values)

    def render(self) -> bytes:
        return generate_latest(self.registry)
