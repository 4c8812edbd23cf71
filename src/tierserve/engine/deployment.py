"""A model version deployed across pools: one runner (queue + replicas) per pool that serves it."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from functools import cached_property

from tierserve.engine.kinds import Variant
from tierserve.engine.runner import ModelRunner
from tierserve.observability.stats import ModelStats
from tierserve.repository.signature import Signature

log = logging.getLogger(__name__)


@dataclass
class Deployment:
    name: str
    version: int
    runners: dict[str, ModelRunner]  # by pool name, in the configured pool order
    stats: ModelStats
    variants: dict[str, Variant] = field(default_factory=dict)  # pool -> how its variant was made, if derived
    estimate_sources: dict[str, str] = field(default_factory=dict)  # pool -> profile file or warm-up sweep

    # Requests inside Engine.infer, and whether the deployment has closed to new ones (see ``drain``).
    _inflight: int = field(default=0, init=False, repr=False)
    _closed: bool = field(default=False, init=False, repr=False)
    _drained: threading.Condition = field(default_factory=threading.Condition, init=False, repr=False)

    def enter(self) -> bool:
        """Count a request in; False once the deployment has drained and closed (look it up again)."""
        with self._drained:
            if self._closed:
                return False
            self._inflight += 1
            return True

    def leave(self) -> None:
        with self._drained:
            self._inflight -= 1
            if self._inflight == 0:
                self._drained.notify_all()

    def drain(self, timeout_s: float) -> bool:
        """Wait until no request is inside (those already holding this deployment still enter and are
        served), then close it to new ones. False when ``timeout_s`` passed first (it closes anyway)."""
        with self._drained:
            drained = self._drained.wait_for(lambda: self._inflight == 0, timeout_s)
            self._closed = True
            return drained

    @cached_property
    def primary(self) -> ModelRunner:
        """The runner that describes the model (metadata, config): the first exact one."""
        exact = [r for r in self.runners.values() if not r.pool.approximate]
        return (exact or list(self.runners.values()))[0]

    @property
    def signature(self) -> Signature:
        return self.primary.signature

    @property
    def max_batch_size(self) -> int:
        return self.primary.max_batch_size

    def stop(self) -> None:
        for runner in self.runners.values():
            runner.stop()
