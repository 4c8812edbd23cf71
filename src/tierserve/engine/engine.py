"""The engine: loads model versions from the repository, routes requests to their runners."""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from tierserve.backends.base import Backend
from tierserve.backends.onnx import OnnxBackend, OnnxOptions
from tierserve.engine.request import InferRequest, InferResponse, OutputTensor
from tierserve.engine.runner import ModelRunner
from tierserve.engine.validate import prepare
from tierserve.errors import InvalidInput, ModelNotFound, TierserveError, Unavailable
from tierserve.observability.metrics import Metrics
from tierserve.observability.stats import ModelStats
from tierserve.repository.config import DEFAULT_MAX_BATCH_SIZE, ModelConfig
from tierserve.repository.repository import ModelRepository
from tierserve.scheduler.service_time import ServiceTimeEstimator
from tierserve.scheduler.tiers import TierChoice, TierTable

log = logging.getLogger(__name__)


class ModelState(enum.StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass
class _Entry:
    state: ModelState
    reason: str = ""


@dataclass
class _Model:
    config: ModelConfig
    runners: dict[int, ModelRunner] = field(default_factory=dict)

    @property
    def default_version(self) -> int:
        return max(self.runners)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Engine:
    def __init__(
        self,
        repository: ModelRepository,
        metrics: Metrics,
        tiers: TierTable | None = None,
        *,
        honour_tiers: bool = True,
    ) -> None:
        self.repository = repository
        self.metrics = metrics
        self.tiers = tiers or TierTable()
        self.honour_tiers = honour_tiers
        self._models: dict[str, _Model] = {}
        self._states: dict[tuple[str, int], _Entry] = {}
        self._stats: dict[tuple[str, int], ModelStats] = {}
        # Load and unload are rare and slow; one at a time keeps the tables consistent.
        self._admin_lock = threading.Lock()
        self.started = False

    # -- lifecycle ---------------------------------------------------------------------------

    def load_all(self) -> None:
        for name in self.repository.model_names():
            try:
                self.load(name)
            except TierserveError as exc:
                log.error("model %s failed to load: %s", name, exc.message)
        self.started = True

    @property
    def ready(self) -> bool:
        """Triton's strict readiness: started, and no model the repository asked for failed to load."""
        return self.started and all(
            entry.state is not ModelState.UNAVAILABLE or entry.reason == "unloaded"
            for entry in self._states.values()
        )

    def load(self, name: str) -> None:
        """Load (or reload) the versions that the model's version policy selects."""
        with self._admin_lock:
            config = self.repository.config(name)
            wanted = self.repository.versions_to_serve(name, config)
            previous = self._models.get(name)
            model = _Model(config)
            failures: list[str] = []
            for version in wanted:
                self._states[(name, version)] = _Entry(ModelState.LOADING)
                try:
                    model.runners[version] = self._start_runner(name, version, config)
                    self._states[(name, version)] = _Entry(ModelState.READY)
                except TierserveError as exc:
                    self._states[(name, version)] = _Entry(ModelState.UNAVAILABLE, exc.message)
                    failures.append(f"version {version}: {exc.message}")
            if model.runners:
                self._models[name] = model
            else:
                self._models.pop(name, None)
            if previous is not None:
                self._stop_runners(name, previous, replaced=set(model.runners))
            if failures:
                raise InvalidInput(f"failed to load '{name}': " + "; ".join(failures))
            log.info("loaded %s versions %s", name, sorted(model.runners))

    def unload(self, name: str) -> None:
        with self._admin_lock:
            model = self._models.pop(name, None)
            if model is None:
                if name not in self.repository.model_names():
                    raise ModelNotFound(name)
                return
            self._stop_runners(name, model)

    def stop(self) -> None:
        with self._admin_lock:
            for name, model in list(self._models.items()):
                self._stop_runners(name, model)
            self._models.clear()

    def _start_runner(self, name: str, version: int, config: ModelConfig) -> ModelRunner:
        path = self.repository.model_path(name, version)
        threads = config.intra_op_threads or max(1, available_cores() // config.instances)
        options = OnnxOptions(intra_op_threads=threads, inter_op_threads=config.inter_op_threads)
        backends: list[Backend] = [OnnxBackend(path, options) for _ in range(config.instances)]
        signature = backends[0].signature
        max_batch_size = config.max_batch_size
        if max_batch_size is None:
            max_batch_size = DEFAULT_MAX_BATCH_SIZE if signature.batchable else 0
        elif max_batch_size > 0 and not signature.batchable:
            raise InvalidInput(
                f"max_batch_size {max_batch_size} needs a dynamic first dimension on every "
                f"input and output of '{name}'"
            )
        if config.default_tier is not None:
            self.tiers.get(config.default_tier)  # an unknown default tier fails the load, not each request
        estimator = ServiceTimeEstimator()
        _warm_up(backends, max_batch_size, config.warmup_shape, estimator)
        stats = self._stats.setdefault((name, version), ModelStats())
        return ModelRunner(
            name,
            version,
            backends,
            max_batch_size=max_batch_size,
            max_queue_delay_s=config.max_queue_delay_ms / 1000,
            max_queue_size=config.max_queue_size,
            stats=stats,
            metrics=self.metrics.for_model(name, version),
            estimator=estimator,
            honour_tiers=self.honour_tiers,
        )

    def _stop_runners(
        self, name: str, model: _Model, replaced: frozenset[int] | set[int] = frozenset()
    ) -> None:
        """Stop every runner of ``model``. Versions in ``replaced`` already run anew: their state and
        metric series belong to the new runner and stay."""
        for version, runner in model.runners.items():
            if version in replaced:
                runner.stop()
                continue
            self._states[(name, version)] = _Entry(ModelState.UNLOADING)
            runner.stop()
            self._states[(name, version)] = _Entry(ModelState.UNAVAILABLE, "unloaded")
            self.metrics.forget_model(name, version, [t.name for t in self.tiers.tiers])

    # -- lookups -----------------------------------------------------------------------------

    def runner(self, name: str, version: str | None = None) -> ModelRunner:
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(name, version)
        if version is None or version == "":
            return model.runners[model.default_version]
        if not version.isdigit() or int(version) not in model.runners:
            raise ModelNotFound(name, version)
        return model.runners[int(version)]

    def config(self, name: str) -> ModelConfig:
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(name)
        return model.config

    def versions(self, name: str) -> list[int]:
        model = self._models.get(name)
        return sorted(model.runners) if model else []

    def index(self) -> list[dict[str, str]]:
        """Every model in the repository, with the state of each version known to the engine."""
        rows: list[dict[str, str]] = []
        for name in self.repository.model_names():
            known = sorted(v for (n, v) in self._states if n == name)
            if not known:
                rows.append({"name": name, "version": "", "state": ModelState.UNAVAILABLE, "reason": ""})
            for version in known:
                entry = self._states[(name, version)]
                rows.append(
                    {"name": name, "version": str(version), "state": entry.state, "reason": entry.reason}
                )
        return rows

    def stats(self, name: str | None = None, version: str | None = None) -> list[dict[str, object]]:
        if name is None:
            runners = [r for m in self._models.values() for r in m.runners.values()]
        elif version:
            runners = [self.runner(name, version)]
        else:
            model = self._models.get(name)
            if model is None:
                raise ModelNotFound(name)
            runners = list(model.runners.values())
        return [
            r.stats.as_triton(r.name, r.version) for r in sorted(runners, key=lambda r: (r.name, r.version))
        ]

    # -- serving -----------------------------------------------------------------------------

    def choose_tier(self, model: str, request: InferRequest) -> TierChoice:
        params = request.parameters
        return self.tiers.resolve(
            name=params.get("tier", request.tier),
            priority=params.get("priority"),
            timeout_us=params.get("timeout"),
            default=self.config(model).default_tier,
        )

    async def infer(self, runner: ModelRunner, request: InferRequest) -> InferResponse:
        """Validate ``request`` against the runner's model, queue it by tier, and await its outputs."""
        name = runner.name
        started = time.perf_counter_ns()
        choice = self.choose_tier(name, request)
        outcome = "failed"
        try:
            prepared = prepare(runner.signature, runner.max_batch_size, request, name)
            outputs = await runner.submit(prepared.feeds, prepared.rows, prepared.batch_key, choice)
            response = InferResponse(
                model_name=name,
                model_version=str(runner.version),
                id=request.id,
                outputs=[
                    OutputTensor(spec.name, spec.datatype, np.asarray(outputs[spec.name]), binary)
                    for spec, binary in prepared.outputs
                ],
            )
            outcome = "met" if time.perf_counter_ns() - started <= choice.budget_s * 1e9 else "missed"
            return response
        except Unavailable:
            outcome = "rejected"
            raise
        except InvalidInput:
            outcome = "invalid"
            raise
        finally:
            self._record(runner, choice, outcome, time.perf_counter_ns() - started)

    def _record(self, runner: ModelRunner, choice: TierChoice, outcome: str, elapsed_ns: int) -> None:
        ok = outcome in ("met", "missed")
        runner.stats.record_request(ok, elapsed_ns)
        runner.stats.record_tier(choice.tier.name, outcome, elapsed_ns)
        tier_metrics = self.metrics.for_tier(runner.name, runner.version, choice.tier.name)
        tier_metrics.outcome(outcome).inc()
        if ok:
            runner.metrics.success.inc()
            runner.metrics.request_seconds.observe(elapsed_ns / 1e9)
            tier_metrics.latency.observe(elapsed_ns / 1e9)
        elif outcome == "rejected":
            runner.metrics.rejected.inc()
        else:
            runner.metrics.failure.inc()

    def queue_snapshots(self) -> list[tuple[str, int, dict[str, int], float | None]]:
        """Per loaded model version: queued requests per tier and the oldest one's age (seconds)."""
        names = {t.priority: t.name for t in self.tiers.tiers}
        rows = []
        for runner in [r for m in list(self._models.values()) for r in m.runners.values()]:
            depths, age = runner.queue_snapshot()
            per_tier = {names.get(p, str(p)) if self.honour_tiers else "all": n for p, n in depths.items()}
            rows.append((runner.name, runner.version, per_tier, age))
        return rows


def _warm_up(
    backends: list[Backend],
    max_batch_size: int,
    shapes: dict[str, tuple[int, ...]],
    estimator: ServiceTimeEstimator,
) -> None:
    """Run every backend once (lazy initialisation), then seed ``estimator`` with a sweep of batch
    sizes 1, 2, 4, ... max_batch_size on the first: the scheduler needs service times from the start."""
    sizes = [1]
    while sizes[-1] * 2 <= max_batch_size:
        sizes.append(sizes[-1] * 2)
    if max_batch_size > sizes[-1]:
        sizes.append(max_batch_size)
    try:
        for backend in backends:
            backend.run(_dummy_feeds(backend, 1, shapes, batching=max_batch_size > 0))
        for rows in sizes:
            feeds = _dummy_feeds(backends[0], rows, shapes, batching=max_batch_size > 0)
            backends[0].run(dict(feeds))  # first run of a shape allocates; do not time it
            for _ in range(2):
                start = time.perf_counter()
                backends[0].run(dict(feeds))
                estimator.observe(rows, time.perf_counter() - start)
    except Exception as exc:  # a model that cannot run on zeros still serves; it learns online instead
        log.warning("warm-up of %s failed (%s); service times will be learnt online", backends[0].kind, exc)


def _dummy_feeds(
    backend: Backend, rows: int, shapes: dict[str, tuple[int, ...]], *, batching: bool
) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    for spec in backend.signature.inputs:
        dims = spec.shape[1:] if batching else spec.shape
        given = iter(shapes.get(spec.name, ()))
        shape = tuple(next(given, 1) if dim == -1 else dim for dim in dims)
        if batching:
            shape = (rows, *shape)
        if spec.datatype.kind == "bytes":
            feeds[spec.name] = np.full(shape, b"", dtype=object)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=spec.datatype.numpy)
    return feeds
