"""Pure scheduling policy: tiers, request ordering, batch formation, admission. No threads, no I/O."""

from tierserve.scheduler.batching import Batch, BatchQueue, Pending, QueueFull, Step
from tierserve.scheduler.service_time import ServiceTimeEstimator
from tierserve.scheduler.tiers import DEFAULT_TIERS, MissPolicy, Tier, TierChoice, TierTable

__all__ = [
    "DEFAULT_TIERS",
    "Batch",
    "BatchQueue",
    "MissPolicy",
    "Pending",
    "QueueFull",
    "ServiceTimeEstimator",
    "Step",
    "Tier",
    "TierChoice",
    "TierTable",
]
