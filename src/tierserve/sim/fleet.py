"""Simulated pools: replicas as counts and end times, the live BatchQueue and estimator per pool.

A pool of the simulator is described like a server pool plus what only a fleet has: a provisioning
delay, replica bounds, and a profile (service time per batch size with spread) from which service
times are drawn. Scenario files (YAML) list them::

    pools:
      - {name: cpu, cost_per_hour: 0.1785, profile: profiles/cpu-minilm.json, replicas: 4,
         min_replicas: 1, max_replicas: 400, provisioning_delay_s: 40}
      - {name: gpu, cost_per_hour: 0.526, profile: profiles/t4-minilm.json, provisioning_delay_s: 300}
      - {name: burst, cost_per_1k_requests: 0.02, rtt_ms: 20, profile: ..., replicas: 50, max_replicas: 50}
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tierserve.errors import InvalidInput
from tierserve.profiler.profile import BatchTiming, load_profile
from tierserve.router.policy import PoolOption
from tierserve.scheduler import admission
from tierserve.scheduler.admission import PoolPrice, Ticket
from tierserve.scheduler.batching import BatchQueue
from tierserve.scheduler.service_time import ServiceTimeEstimator


@dataclass(frozen=True)
class SimPoolSpec:
    name: str
    profile: dict[int, BatchTiming]
    cost_per_hour: float = 0.0
    cost_per_1k_requests: float = 0.0
    rtt_ms: float = 0.0
    provisioning_delay_s: float = 0.0
    replicas: int = 1
    min_replicas: int = 0
    max_replicas: int = 1000
    max_batch_size: int = 32
    approximate: bool = False
    queue_capacity: int = 100_000
    spot: bool = False
    interruptions_per_hour: float = 0.0  # per replica (spot)
    interruption_notice_s: float = 120.0  # warning before a spot replica is taken (AWS gives two minutes)
    source: str = ""  # where the profile and price come from, or the assumption made

    @property
    def per_request(self) -> bool:
        """A rented endpoint billed per request: always warm, ``replicas`` concurrent slots."""
        return self.cost_per_1k_requests > 0 and self.cost_per_hour == 0

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], base: Path) -> SimPoolSpec:
        known = {f for f in cls.__dataclass_fields__ if f != "profile"} | {"profile"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InvalidInput(f"pool {raw.get('name')!r}: unknown keys {unknown}")
        profile_file = Path(str(raw["profile"]))
        profile = load_profile(profile_file if profile_file.is_absolute() else base / profile_file).batches
        values = {k: v for k, v in raw.items() if k != "profile"}
        return cls(profile=profile, **values)


class ServiceSampler:
    """Service time for a batch of ``rows``: normal around the profile's mean with its spread."""

    def __init__(self, profile: dict[int, BatchTiming], rng: np.random.Generator) -> None:
        sizes = sorted(profile)
        self._rows = np.asarray(sizes, dtype=float)
        self._mean = np.asarray([profile[r].mean_ms / 1000 for r in sizes])
        self._std = np.asarray([profile[r].std_ms / 1000 for r in sizes])
        self._rng = rng
        self._cache: dict[int, tuple[float, float]] = {}

    def moments(self, rows: int) -> tuple[float, float]:
        found = self._cache.get(rows)
        if found is None:
            if rows > self._rows[-1]:  # beyond the profile: per-row cost of the largest batch
                scale = rows / self._rows[-1]
                found = (float(self._mean[-1] * scale), float(self._std[-1] * scale))
            else:
                found = (
                    float(np.interp(rows, self._rows, self._mean)),
                    float(np.interp(rows, self._rows, self._std)),
                )
            self._cache[rows] = found
        return found

    def sample(self, rows: int) -> float:
        mean, std = self.moments(rows)
        return max(0.2 * mean, mean + std * float(self._rng.standard_normal()))


@dataclass
class SimPool:
    spec: SimPoolSpec
    rng: np.random.Generator
    queue: BatchQueue[int] = field(init=False)
    sampler: ServiceSampler = field(init=False)
    idle: int = 0
    busy: list[float] = field(default_factory=list)  # heap of batch end times
    starting: list[float] = field(default_factory=list)  # ready-at times of replicas booting
    retiring: int = 0  # busy replicas to remove when their batch ends
    # accounting
    alive_since: float = 0.0
    replica_seconds: float = 0.0  # paid time (booting included)
    busy_seconds: float = 0.0
    window_busy: float = 0.0  # capacity used: rows x (service time per row at the largest batch)
    requests: int = 0

    def __post_init__(self) -> None:
        estimator = ServiceTimeEstimator()
        for rows, t in self.spec.profile.items():
            estimator.seed(rows, t.mean_ms / 1000, max(t.std_ms, t.p95_ms - t.mean_ms) / 1000)
        self.queue = BatchQueue(self.spec.max_batch_size, 0.0, self.spec.queue_capacity, estimator=estimator)
        self.sampler = ServiceSampler(self.spec.profile, self.rng)
        self.idle = self.spec.replicas
        spec = self.spec
        self.price = PoolPrice(
            spec.cost_per_hour, spec.cost_per_1k_requests, spec.rtt_ms / 1000, spec.approximate
        )

    @property
    def ready(self) -> int:
        return self.idle + len(self.busy) - self.retiring

    @property
    def alive(self) -> int:
        return self.ready + len(self.starting) + self.retiring

    def cost_per_item(self) -> float:
        return admission.cost_per_item(self.queue, self.price)

    def free_at(self, now: float) -> list[float]:
        """When the replicas that free up first do: the idle ones now (at most 64 of them: a prediction
        only needs those that take the batches ahead), else the busy ones' batch ends."""
        return [now] * min(self.idle, 64) if self.idle else self.busy

    def others_free_at(self, now: float) -> list[float]:
        """For a batch about to start on an idle replica: when the soonest *other* replica frees up."""
        return [now] if self.idle > 1 else self.busy[:1]

    def option(self, t: Ticket, now: float) -> PoolOption | None:
        if self.ready <= 0:
            return None
        return admission.option(
            self.spec.name, self.queue, t, now, self.free_at(now), self.price, replicas=self.ready
        )

    def account(self, now: float) -> None:
        """Pay for the replicas alive since the last change."""
        self.replica_seconds += self.alive * (now - self.alive_since)
        self.alive_since = now

    def start_batch(self, now: float, rows: int) -> float:
        """Take an idle replica for a batch; return when it ends (service + network)."""
        self.idle -= 1
        service = self.sampler.sample(rows)
        end = now + service + self.spec.rtt_ms / 1000
        heapq.heappush(self.busy, end)
        self.busy_seconds += end - now
        self.window_busy += rows * self.row_cost_at_full_batch()
        self.queue.estimator.observe(rows, service)
        return end

    def row_cost_at_full_batch(self) -> float:
        """Replica-seconds one row costs at the largest batch: utilisation counts capacity used, since
        a batching replica that runs small batches while lightly loaded is busy, not full."""
        full = self.spec.max_batch_size or 1
        return self.sampler.moments(full)[0] / full

    def finish_batch(self) -> None:
        heapq.heappop(self.busy)
        if self.retiring:
            self.retiring -= 1
        else:
            self.idle += 1

    def scale_to(self, desired: int, now: float) -> list[float]:
        """Start or retire replicas; return the ready-at times of the ones started."""
        self.account(now)
        current = self.ready + len(self.starting)
        started: list[float] = []
        for _ in range(max(0, desired - current)):
            ready_at = now + self.spec.provisioning_delay_s
            self.starting.append(ready_at)
            started.append(ready_at)
        for _ in range(max(0, current - desired)):
            if self.starting:
                self.starting.pop()  # cancel the newest boot first
            elif self.idle:
                self.idle -= 1
            elif self.busy and self.retiring < len(self.busy):
                self.retiring += 1
        return started

    def replica_ready(self, ready_at: float, now: float) -> None:
        if ready_at in self.starting:  # a cancelled boot has left the list
            self.account(now)
            self.starting.remove(ready_at)
            self.idle += 1


def hourly_cost(pool: SimPool) -> float:
    return (
        pool.replica_seconds / 3600 * pool.spec.cost_per_hour
        + pool.requests / 1000 * pool.spec.cost_per_1k_requests
    )


def ceil_div(a: float, b: float) -> int:
    return math.ceil(a / b) if b else 0
