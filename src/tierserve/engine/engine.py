"""The engine: the one object the application, the CLI commands and the services hold.

A thin facade over three parts, each in its own module:

- ``registry.ModelRegistry``: what is loaded, in which versions, on which pools; load, reload,
  unload, readiness. Backends are built per pool kind by ``kinds.BACKEND_KINDS``.
- ``dataplane.DataPlane``: one request from the door to its answer (tier, validation, admission,
  the pool's queue, retries), and what was decided for it (``InferResponse.decision``).
- ``reports``: the repository index, statistics, service-time estimates and queue snapshots.

Example::

    engine = Engine(ModelRepository(Path("models")), Metrics())
    engine.load_all()
    response = await engine.infer(engine.deployment("simple"), request)
    response.decision   # Decision(model='simple', version=1, tier='silver', pool='cpu', cost=...)
"""

from __future__ import annotations

import time
from collections.abc import Collection
from pathlib import Path

from tierserve.budgets.policy import BudgetBook
from tierserve.engine import reports
from tierserve.engine.budgeting import Budgeting
from tierserve.engine.dataplane import DataPlane
from tierserve.engine.hooks import ResultCache
from tierserve.engine.pools import PoolSpec, default_pools
from tierserve.engine.registry import DRAIN_TIMEOUT_S, ModelRegistry, ModelState, available_cores
from tierserve.engine.rollouts import RolloutTable
from tierserve.observability.metrics import Metrics
from tierserve.repository.repository import ModelRepository
from tierserve.scheduler.tiers import TierTable

__all__ = ["DRAIN_TIMEOUT_S", "Engine", "ModelState", "available_cores"]


class Engine:
    def __init__(
        self,
        repository: ModelRepository,
        metrics: Metrics,
        tiers: TierTable | None = None,
        *,
        pools: list[PoolSpec] | None = None,
        honour_tiers: bool = True,
        state_dir: Path = Path(".state"),
        profiles_dir: Path | None = None,
        budgets: BudgetBook | None = None,
    ) -> None:
        self.repository = repository
        self.budgeting = Budgeting(budgets or BudgetBook())
        self.metrics = metrics
        self.tiers = tiers or TierTable()
        self.pools = pools or default_pools()
        self.honour_tiers = honour_tiers
        self.state_dir = state_dir
        self.profiles_dir = profiles_dir if profiles_dir is not None else state_dir / "profiles"
        self.registry = ModelRegistry(
            repository,
            metrics,
            self.tiers,
            self.pools,
            state_dir=state_dir,
            profiles_dir=self.profiles_dir,
            versions_changed=self._versions_changed,
        )
        self.data = DataPlane(
            self.registry,
            metrics,
            self.tiers,
            self.budgeting,
            honour_tiers=honour_tiers,
            clock=time.monotonic,
        )
        # The parts' entry points are the engine's own (each documented where it is written).
        self.load_all = self.registry.load_all
        self.load = self.registry.load
        self.unload = self.registry.unload
        self.stop = self.registry.stop
        self.not_ready_reasons = self.registry.not_ready_reasons
        self.deployment = self.registry.deployment
        self.config = self.registry.config
        self.versions = self.registry.versions
        self.deployments = self.registry.deployments
        self.choose_tier = self.data.choose_tier
        self.infer = self.data.infer
        self.admit_early = self.data.admit_early
        self.record_cached = self.data.record_cached

    # -- hooks the application installs ----------------------------------------------------------

    @property
    def result_cache(self) -> ResultCache | None:
        return self.data.result_cache

    @result_cache.setter
    def result_cache(self, cache: ResultCache | None) -> None:
        self.data.result_cache = cache

    @property
    def rollouts(self) -> RolloutTable:
        return self.data.rollouts

    def _versions_changed(self, name: str, versions: Collection[int]) -> None:
        cache = self.data.result_cache
        if cache is not None:
            cache.versions_changed(name, versions)

    # -- state and reports ---------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self.registry.started

    @property
    def ready(self) -> bool:
        return not self.registry.not_ready_reasons()

    def index(self) -> list[dict[str, str]]:
        return reports.index(self.registry)

    def stats(self, name: str | None = None, version: str | None = None) -> list[dict[str, object]]:
        return reports.statistics(self.registry, name, version)

    def profiles(self) -> list[dict[str, object]]:
        return reports.profiles(self.registry)

    def queue_snapshots(self) -> list[reports.QueueRow]:
        return reports.queue_snapshots(self.registry, self.tiers, self.honour_tiers)

    def clock(self) -> float:
        """The engine's clock (monotonic seconds): what arrivals and deadlines are measured on."""
        return self.data.clock()
