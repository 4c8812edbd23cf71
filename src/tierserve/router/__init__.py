"""Pure routing policy: choose the cheapest pool predicted to meet a deadline; circuit breakers."""

from tierserve.router.breaker import BreakerState, CircuitBreaker
from tierserve.router.policy import PoolOption, Route, choose_pool, retry_order

__all__ = ["BreakerState", "CircuitBreaker", "PoolOption", "Route", "choose_pool", "retry_order"]
