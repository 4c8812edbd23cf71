"""Prometheus series of the result cache (on the server's registry).

Hit ratio of a layer: ``rate(tierserve_cache_lookups_total{result="hit"}[5m]) /
rate(tierserve_cache_lookups_total[5m])`` per model and layer; of the whole cache,
``tierserve_cache_requests_total`` by result (``deploy/prometheus/alerts.yml`` warns below 80 %).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LAYERS = ("local", "redis")
BYPASS_REASONS = ("redis_down", "too_large", "not_cacheable", "swapping")
# Fine at the low end: hits take tens to hundreds of microseconds.
_HIT_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 1.0)


@dataclass(frozen=True)
class ModelCacheMetrics:
    """Label-bound children for one model (binding once keeps the hot path cheap)."""

    answered: Counter  # requests answered from some layer
    missed: Counter  # requests that no layer could answer
    hits: dict[str, Counter]
    misses: dict[str, Counter]
    hit_seconds: dict[str, Histogram]
    coalesced: Counter
    bypassed: dict[str, Counter]
    stored_bytes: dict[str, Counter]


class CacheMetrics:
    def __init__(self, registry: CollectorRegistry, local_bytes: Callable[[], float]) -> None:
        self.requests = Counter(
            "tierserve_cache_requests",
            "Requests of cached models by result: hit (answered from some layer) or miss (from none).",
            ["model", "result"],
            registry=registry,
        )
        self.lookups = Counter(
            "tierserve_cache_lookups",
            "Result-cache lookups per model, layer (local: this process; redis: shared) and result.",
            ["model", "layer", "result"],
            registry=registry,
        )
        self.hit_seconds = Histogram(
            "tierserve_cache_hit_duration_seconds",
            "Server time of a request answered from the cache (arrival at the engine to response).",
            ["model", "layer"],
            buckets=_HIT_BUCKETS,
            registry=registry,
        )
        self.coalesced = Counter(
            "tierserve_cache_coalesced",
            "Misses answered by an identical request's inference already running (single flight).",
            ["model"],
            registry=registry,
        )
        self.bypassed = Counter(
            "tierserve_cache_bypassed",
            "Requests of cached models served without (part of) the cache: redis_down, too_large "
            "(answer over max_bytes: not stored; or inputs over 4 MiB: not looked up), not_cacheable "
            '(sequence or "cache": false), swapping (the request\'s model version was being reloaded).',
            ["model", "reason"],
            registry=registry,
        )
        self.stored_bytes = Counter(
            "tierserve_cache_stored_bytes",
            "Bytes of answers written to each layer.",
            ["model", "layer"],
            registry=registry,
        )
        self.evictions = Counter(
            "tierserve_cache_evictions",
            "Entries evicted from this process's layer to make room (least recently used first).",
            ["layer"],
            registry=registry,
        )
        self.bytes = Gauge(
            "tierserve_cache_bytes",
            "Bytes held by this process's layer.",
            ["layer"],
            registry=registry,
        )
        self.bytes.labels("local").set_function(local_bytes)
        self.generation = Gauge(
            "tierserve_cache_generation",
            "Generation of each model version's cache keys (changes on every load or unload, on any "
            "server sharing the Redis layer).",
            ["model", "version"],
            registry=registry,
        )
        self._models: dict[str, ModelCacheMetrics] = {}

    def model(self, name: str) -> ModelCacheMetrics:
        found = self._models.get(name)
        if found is None:
            found = self._models[name] = ModelCacheMetrics(
                answered=self.requests.labels(name, "hit"),
                missed=self.requests.labels(name, "miss"),
                hits={layer: self.lookups.labels(name, layer, "hit") for layer in LAYERS},
                misses={layer: self.lookups.labels(name, layer, "miss") for layer in LAYERS},
                hit_seconds={layer: self.hit_seconds.labels(name, layer) for layer in LAYERS},
                coalesced=self.coalesced.labels(name),
                bypassed={reason: self.bypassed.labels(name, reason) for reason in BYPASS_REASONS},
                stored_bytes={layer: self.stored_bytes.labels(name, layer) for layer in LAYERS},
            )
        return found
