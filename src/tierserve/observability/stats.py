"""Per-model counters in the shape of Triton's statistics extension (``/v2/models/<m>/stats``)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class _BatchStats:
    compute_input: _Duration = field(default_factory=_Duration)
    compute_infer: _Duration = field(default_factory=_Duration)
    compute_output: _Duration = field(default_factory=_Duration)


class ModelStats:
    """Thread-safe accumulators; written by replica threads and the event loop, read by the API."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.inference_count = 0  # rows inferred (Triton counts batch rows)
        self.execution_count = 0  # batches executed
        self.last_inference_ms = 0
        self.success = _Duration()
        self.fail = _Duration()
        self.queue = _Duration()
        self.compute_input = _Duration()
        self.compute_infer = _Duration()
        self.compute_output = _Duration()
        self.cache_hit = _Duration()  # Triton: lookups that found the answer (their time)
        self.cache_miss = _Duration()  # Triton: lookups that did not, plus the time to insert the answer
        self._batches: dict[int, _BatchStats] = {}
        self._tiers: dict[str, dict[str, _Duration]] = {}
        self._pools: dict[str, dict[str, float]] = {}

    def record_batch(self, rows: int, requests: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        with self._lock:
            self.inference_count += rows
            self.execution_count += 1
            self.last_inference_ms = int(time.time() * 1000)
            # Triton attributes a batch's compute time to each request in it.
            self.compute_input.add(input_ns * requests, requests)
            self.compute_infer.add(infer_ns * requests, requests)
            self.compute_output.add(output_ns * requests, requests)
            per_size = self._batches.setdefault(rows, _BatchStats())
            per_size.compute_input.add(input_ns)
            per_size.compute_infer.add(infer_ns)
            per_size.compute_output.add(output_ns)

    def record_queue(self, ns: int) -> None:
        with self._lock:
            self.queue.add(ns)

    def record_request(self, ok: bool, ns: int) -> None:
        with self._lock:
            (self.success if ok else self.fail).add(ns)

    def record_cache(self, hit: bool, ns: int, count: int = 1) -> None:
        """A result-cache lookup (``count`` 0: insertion time added to the misses)."""
        with self._lock:
            (self.cache_hit if hit else self.cache_miss).add(ns, count)

    def record_pool(self, pool: str, rows: int, cost: float) -> None:
        with self._lock:
            counts = self._pools.setdefault(pool, {"requests": 0, "rows": 0, "cost": 0.0})
            counts["requests"] += 1
            counts["rows"] += rows
            counts["cost"] += cost

    def record_tier(self, tier: str, outcome: str, ns: int) -> None:
        with self._lock:
            self._tiers.setdefault(tier, {}).setdefault(outcome, _Duration()).add(ns)

    def tier_counts(self) -> dict[str, int]:
        """Requests per tier since start, whatever their outcome (the planner's arrivals)."""
        with self._lock:
            return {tier: sum(d.count for d in outcomes.values()) for tier, outcomes in self._tiers.items()}

    def as_triton(self, name: str, version: int) -> dict[str, Any]:
        with self._lock:
            return {
                "name": name,
                "version": str(version),
                "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count,
                "execution_count": self.execution_count,
                "inference_stats": {
                    "success": self.success.as_dict(),
                    "fail": self.fail.as_dict(),
                    "queue": self.queue.as_dict(),
                    "compute_input": self.compute_input.as_dict(),
                    "compute_infer": self.compute_infer.as_dict(),
                    "compute_output": self.compute_output.as_dict(),
                    "cache_hit": self.cache_hit.as_dict(),
                    "cache_miss": self.cache_miss.as_dict(),
                },
                "batch_stats": [
                    {
                        "batch_size": size,
                        "compute_input": stats.compute_input.as_dict(),
                        "compute_infer": stats.compute_infer.as_dict(),
                        "compute_output": stats.compute_output.as_dict(),
                    }
                    for size, stats in sorted(self._batches.items())
                ],
                # tierserve's addition: outcome counts and total latency per SLA tier.
                "tier_stats": {
                    tier: {outcome: d.as_dict() for outcome, d in sorted(outcomes.items())}
                    for tier, outcomes in sorted(self._tiers.items())
                },
                # Where the router sent requests, and what they cost (configured prices).
                "pool_stats": {pool: dict(counts) for pool, counts in sorted(self._pools.items())},
            }
