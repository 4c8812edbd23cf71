"""Circuit breaker per pool or endpoint: closed → open → half-open → closed.

Opens after ``failure_threshold`` consecutive failures, or when the error rate over the last
``window`` outcomes reaches ``error_rate`` (with at least ``min_samples`` of them). After
``cooldown_s`` it lets ``half_open_probes`` requests through; a success closes it, a failure opens
it again for another cool-down. The clock is passed in; nothing here sleeps.
"""

from __future__ import annotations

import enum
from collections import deque


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        error_rate: float = 0.5,
        window: int = 20,
        min_samples: int = 10,
        cooldown_s: float = 5.0,
        half_open_probes: int = 1,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.error_rate = error_rate
        self.min_samples = min_samples
        self.cooldown_s = cooldown_s
        self.half_open_probes = half_open_probes
        self.state = BreakerState.CLOSED
        self.opened_at = -float("inf")
        self.consecutive_failures = 0
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._probes_in_flight = 0

    def allows(self, now: float) -> bool:
        """Whether a request may go through now (does not reserve a probe; see ``acquire``)."""
        if self.state is BreakerState.OPEN:
            return now - self.opened_at >= self.cooldown_s
        if self.state is BreakerState.HALF_OPEN:
            return self._probes_in_flight < self.half_open_probes
        return True

    def acquire(self, now: float) -> bool:
        """Take permission to send one request; in half-open this reserves a probe."""
        if self.state is BreakerState.OPEN and now - self.opened_at >= self.cooldown_s:
            self.state = BreakerState.HALF_OPEN
            self._probes_in_flight = 0
        if not self.allows(now):
            return False
        if self.state is BreakerState.HALF_OPEN:
            self._probes_in_flight += 1
        return True

    def record_success(self, now: float) -> None:
        self._outcomes.append(True)
        self.consecutive_failures = 0
        if self.state is BreakerState.HALF_OPEN:
            self._close()

    def record_failure(self, now: float) -> None:
        self._outcomes.append(False)
        self.consecutive_failures += 1
        if self.state is BreakerState.HALF_OPEN or self._tripped():
            self._open(now)

    def _tripped(self) -> bool:
        if self.consecutive_failures >= self.failure_threshold:
            return True
        samples = len(self._outcomes)
        failures = samples - sum(self._outcomes)
        return samples >= self.min_samples and failures / samples >= self.error_rate

    def _open(self, now: float) -> None:
        self.state = BreakerState.OPEN
        self.opened_at = now
        self._probes_in_flight = 0

    def _close(self) -> None:
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self._outcomes.clear()
        self._probes_in_flight = 0
