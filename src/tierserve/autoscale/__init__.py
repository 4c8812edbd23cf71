"""SLO-driven autoscaling: pure recommendations per pool, and the actuators that apply them."""

from tierserve.autoscale.policy import (
    Autoscaler,
    PoolObservation,
    Recommendation,
    ScalingLimits,
)

__all__ = ["Autoscaler", "PoolObservation", "Recommendation", "ScalingLimits"]
