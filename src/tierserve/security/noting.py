"""How the engine tells a request's audit record what it decided (model version, tier, pool, cost).

The engine reports its choices to ``Metrics``; ``NotingMetrics`` also writes them into the note of
the request being served, found through a context variable (the engine runs in the request's own
task, so the variable is the request's). Outside a noted request it costs one ``ContextVar.get``.
"""

from __future__ import annotations

import contextvars

from tierserve.observability.metrics import Metrics, TierMetrics
from tierserve.security.guard import RequestNote

current_note: contextvars.ContextVar[RequestNote | None] = contextvars.ContextVar(
    "tierserve_request_note", default=None
)


class NotingMetrics(Metrics):
    def for_tier(self, model: str, version: int, tier: str) -> TierMetrics:
        note = current_note.get()
        if note is not None:
            note.model, note.version, note.tier = model, str(version), tier
        return Metrics.for_tier(self, model, version, tier)

    def record_route(self, model: str, pool: str, tier: str, tenant: str | None, cost: float) -> None:
        note = current_note.get()
        if note is not None:
            note.pool, note.cost = pool, cost
        Metrics.record_route(self, model, pool, tier, tenant, cost)
