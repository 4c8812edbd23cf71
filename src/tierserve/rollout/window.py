"""What one arm of a rollout (stable or candidate) served in the current window.

Bounded: each tier keeps a uniform sample of at most ``capacity`` latencies (reservoir sampling with
a seeded generator, so a replay gives the same sample), plus exact counts. Counts, not samples, feed
the error-rate and SLO tests; the latency tests use the sample. Example::

    window = ArmWindow()
    window.observe("gold", 0.004, "met")
    window.observe("gold", 0.0, "failed")
    window.requests, window.errors        # (2, 1)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# Outcomes as the engine names them (see Engine._record): met/missed were served; rejected means the
# tier refused it in time (an SLO miss, not an error); failed is an error; invalid is the client's.
SERVED = frozenset({"met", "missed"})
DEFAULT_CAPACITY = 4096


@dataclass
class TierWindow:
    capacity: int = DEFAULT_CAPACITY
    seed: int = 0
    served: int = 0  # requests answered with outputs (met + missed)
    met: int = 0
    total: int = 0  # requests counted against the SLO: served + rejected (failed ones are errors)
    latencies: list[float] = field(default_factory=list)
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def add_latency(self, seconds: float) -> None:
        self.served += 1
        if len(self.latencies) < self.capacity:
            self.latencies.append(seconds)
            return
        slot = self._rng.randrange(self.served)
        if slot < self.capacity:
            self.latencies[slot] = seconds


@dataclass
class ArmWindow:
    capacity: int = DEFAULT_CAPACITY
    requests: int = 0  # every request but the client's invalid ones
    errors: int = 0
    cost: float = 0.0
    tiers: dict[str, TierWindow] = field(default_factory=dict)

    def observe(self, tier: str, latency_s: float, outcome: str, cost: float = 0.0) -> None:
        if outcome == "invalid":
            return
        self.requests += 1
        self.cost += cost
        window = self.tiers.get(tier)
        if window is None:
            window = self.tiers[tier] = TierWindow(self.capacity, seed=len(self.tiers))
        if outcome == "failed":
            self.errors += 1
            return
        window.total += 1
        if outcome in SERVED:
            window.add_latency(latency_s)
            window.met += outcome == "met"

    def add_cost(self, cost: float) -> None:
        self.cost += cost

    @property
    def cost_per_request(self) -> float:
        return self.cost / self.requests if self.requests else 0.0

    def describe(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "cost_per_request": self.cost_per_request,
            "tiers": {
                name: {"total": t.total, "met": t.met, "served": t.served}
                for name, t in sorted(self.tiers.items())
            },
        }
