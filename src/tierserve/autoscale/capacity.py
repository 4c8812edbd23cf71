"""What one replica sustains within a latency target, from its service time per batch size.

A request waits at most for the batch running ahead of it, then runs in its own: so a batch may take
at most ``budget_share`` of the target (the scheduler's rule while a deadline tier is active, 40%).
The capacity of a replica for that target is the best rows per second over the batch sizes whose
service time plus the network round trip fits that share. A target no batch size fits gets 0.

Example (a CPU replica serving gold, 50 ms)::

    replica_capacity({1: 0.0055, 4: 0.0172, 8: 0.0322}, target_s=0.050)  # 232.6: 4 rows / 17.2 ms
"""

from __future__ import annotations

from collections.abc import Mapping

BUDGET_SHARE = 0.4


def replica_capacity(
    service_s: Mapping[int, float], target_s: float, *, rtt_s: float = 0.0, budget_share: float = BUDGET_SHARE
) -> float:
    """Rows per second one replica sustains while every batch fits ``budget_share`` of ``target_s``."""
    fits = [rows / t for rows, t in service_s.items() if t > 0 and t + rtt_s <= budget_share * target_s]
    return max(fits, default=0.0)


def slot_capacity(service_s: Mapping[int, float], *, rtt_s: float = 0.0) -> float:
    """Requests per second one slot of a rented endpoint sustains: one request at a time."""
    one = service_s.get(1, min(service_s.values(), default=0.0))
    return 1.0 / (one + rtt_s) if one + rtt_s > 0 else 0.0
