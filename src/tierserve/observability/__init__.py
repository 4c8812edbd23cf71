"""Metrics (Prometheus) and per-model statistics (Triton's statistics extension)."""

from tierserve.observability.metrics import Metrics, ModelMetrics
from tierserve.observability.stats import ModelStats

__all__ = ["Metrics", "ModelMetrics", "ModelStats"]
