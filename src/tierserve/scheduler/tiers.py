"""SLA tiers: a latency target, a priority, and what to do when the target cannot be met.

A request names its tier by name (V2 parameter ``tier`` or the ``X-Tier`` header), or by Triton's
``priority`` level (1 is the highest; level N maps to the N-th tier by priority, the last tier for
larger levels, the default tier for 0). Its deadline is its arrival plus the tier's target, or
its own Triton ``timeout`` (microseconds) when given; a ``timeout`` of 0 means none, as in Triton
(tritonclient sends 0 whenever its caller passes ``timeout=0``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tierserve.errors import InvalidInput

# Predictions must land this share of a request's budget before its deadline: admission routes with
# it, and the scheduler leaves it out of the slack a deadline tier may wait for a replica.
ROUTING_MARGIN = 0.1


class MissPolicy(enum.StrEnum):
    REJECT = "reject"  # answer 503 at once when the deadline is predicted to be missed
    BEST_EFFORT = "best_effort"  # queue (bounded) and serve late rather than not at all


@dataclass(frozen=True)
class Tier:
    name: str
    target_s: float  # p99 latency target; for best-effort tiers used only to report attainment
    priority: int  # lower runs first
    miss_policy: MissPolicy
    approximate: bool = False  # may be served by approximate variants (e.g. int8) when cheaper
    job_time_limit_s: float | None = None  # durable jobs of this tier: the default limit per attempt

    @property
    def rejects_late(self) -> bool:
        return self.miss_policy is MissPolicy.REJECT

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "target_ms": self.target_s * 1000,
            "priority": self.priority,
            "miss_policy": str(self.miss_policy),
            "approximate": self.approximate,
            "job_time_limit_ms": None if self.job_time_limit_s is None else self.job_time_limit_s * 1000,
        }


# Targets sized for the example models on a 2-core CPU: gold fits a small batch of MiniLM plus a
# batch already running ahead of it; bronze's target only measures attainment.
DEFAULT_TIERS = (
    Tier("gold", 0.050, 0, MissPolicy.REJECT),
    Tier("silver", 0.150, 1, MissPolicy.REJECT),
    Tier("bronze", 1.000, 2, MissPolicy.BEST_EFFORT, approximate=True),
)


@dataclass(frozen=True)
class TierChoice:
    tier: Tier
    budget_s: float  # time from arrival to deadline
    client_timeout: bool = False  # the budget is the request's own ``timeout``, not the tier's target


class TierTable:
    def __init__(self, tiers: Iterable[Tier] = DEFAULT_TIERS, default: str | None = None) -> None:
        self.tiers = sorted(tiers, key=lambda t: t.priority)
        if not self.tiers:
            raise InvalidInput("at least one tier must be configured")
        self.by_name = {t.name: t for t in self.tiers}
        if len(self.by_name) != len(self.tiers):
            raise InvalidInput("tier names must be unique")
        self.default = self.by_name[default] if default else self.tiers[-1]
        if default and default not in self.by_name:
            raise InvalidInput(f"default tier '{default}' is not configured")

    def get(self, name: str) -> Tier:
        try:
            return self.by_name[name]
        except KeyError:
            raise InvalidInput(
                f"unknown tier '{name}'; configured tiers: {', '.join(self.by_name)}"
            ) from None

    @property
    def lowest(self) -> Tier:
        """The least urgent tier: what durable jobs get when they name none (they are asynchronous)."""
        return self.tiers[-1]

    def for_request(
        self,
        parameters: Mapping[str, Any],
        *,
        header: str | None = None,
        key_tier: str | None = None,
        default_priority: int | None = None,
        default_timeout_us: int | None = None,
        model_default: str | None = None,
    ) -> TierChoice:
        """The one rule that names a request's tier, strongest first: the ``tier`` parameter; the
        ``X-Tier`` header (gRPC: ``x-tier`` metadata); Triton's ``priority`` parameter; the API key's
        tier; the model's default priority level (config.pbtxt); the model's default tier; the
        server's. The deadline budget is the ``timeout`` parameter, else the model's default queue
        timeout, else the tier's target. Every protocol (REST, gRPC, embeddings, jobs) and the cheap
        rejection before decoding call this."""
        name = parameters.get("tier", header)
        priority = parameters.get("priority")
        if name is None and not priority and key_tier is not None:
            name = key_tier
        return self.resolve(
            name=name,
            priority=priority or default_priority,
            timeout_us=parameters.get("timeout") or default_timeout_us,
            default=model_default,
        )

    def resolve(
        self,
        *,
        name: object = None,
        priority: object = None,
        timeout_us: object = None,
        default: str | None = None,
    ) -> TierChoice:
        """Pick a request's tier and deadline budget from what it says (see the module docstring)."""
        if name is not None:
            if not isinstance(name, str):
                raise InvalidInput("parameter 'tier' must be a string")
            tier = self.get(name)
        elif priority is not None and priority != 0:
            if isinstance(priority, bool) or not isinstance(priority, int) or priority < 0:
                raise InvalidInput("parameter 'priority' must be a non-negative integer")
            tier = self.tiers[min(priority, len(self.tiers)) - 1]
        else:
            tier = self.get(default) if default else self.default
        if timeout_us is None:
            return TierChoice(tier, tier.target_s)
        if isinstance(timeout_us, bool) or not isinstance(timeout_us, int) or timeout_us < 0:
            raise InvalidInput("parameter 'timeout' must be a non-negative integer of microseconds")
        if timeout_us == 0:  # no timeout of its own (Triton's meaning): the tier's target holds
            return TierChoice(tier, tier.target_s)
        return TierChoice(tier, timeout_us / 1e6, client_timeout=True)

    @classmethod
    def from_config(cls, raw: object) -> TierTable:
        """``tiers: [{name, target_ms, priority, miss_policy, approximate}]`` and ``default_tier``."""
        if not raw:
            return cls()
        if not isinstance(raw, Mapping):
            raise InvalidInput("the tier configuration must be a mapping")
        entries = raw.get("tiers", [t.describe() for t in DEFAULT_TIERS])
        if not isinstance(entries, list):
            raise InvalidInput("'tiers' must be a list")
        tiers = [_parse_tier(entry) for entry in entries]
        default = raw.get("default_tier")
        if default is not None and not isinstance(default, str):
            raise InvalidInput("'default_tier' must be a tier name")
        return cls(tiers, default)


def _parse_tier(entry: object) -> Tier:
    if not isinstance(entry, Mapping):
        raise InvalidInput("each tier must be a mapping with name, target_ms, priority, miss_policy")
    try:
        name = str(entry["name"])
        target_ms = float(entry["target_ms"])
        priority = int(entry["priority"])
        policy = MissPolicy(entry.get("miss_policy", "reject"))
        approximate = entry.get("approximate", False)
        if not isinstance(approximate, bool):
            raise ValueError("approximate must be true or false")
        limit_ms = entry.get("job_time_limit_ms")
        job_limit = None if limit_ms is None else float(limit_ms) / 1000
        if job_limit is not None and job_limit <= 0:
            raise ValueError("job_time_limit_ms must be positive")
    except (KeyError, ValueError, TypeError) as exc:
        raise InvalidInput(f"invalid tier {dict(entry)}: {exc}") from None
    if target_ms <= 0:
        raise InvalidInput(f"tier '{name}': target_ms must be positive")
    return Tier(name, target_ms / 1000, priority, policy, approximate, job_limit)
