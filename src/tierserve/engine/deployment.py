"""A model version deployed across pools: one runner (queue + replicas) per pool that serves it."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from tierserve.backends.base import Backend
from tierserve.backends.onnx import OnnxBackend, OnnxOptions
from tierserve.backends.quantize import compare, quantize_int8, sample_inputs
from tierserve.backends.wide import Widening, WideWhenAlone
from tierserve.engine.pools import PoolSpec
from tierserve.engine.runner import ModelRunner
from tierserve.errors import InvalidInput
from tierserve.observability.stats import ModelStats
from tierserve.repository.config import ModelConfig
from tierserve.repository.signature import Signature

log = logging.getLogger(__name__)


@dataclass
class Deployment:
    name: str
    version: int
    runners: dict[str, ModelRunner]  # by pool name, in the configured pool order
    stats: ModelStats
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # pool -> how its variant was made
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


@dataclass(frozen=True)
class LocalPlan:
    """How a local pool runs one model: replicas and threads per replica."""

    replicas: int
    threads: int


def local_plan(pool: PoolSpec, config: ModelConfig, cores: int) -> LocalPlan:
    """Replicas x threads for a local pool. By default one single-threaded replica per core: for
    models of this size, replicas beat threads (measured here on MiniLM: 2 x 1 thread serves about
    as many items/s as 1 x 2 threads, and a gold request finds a free replica sooner)."""
    threads = pool.threads or config.intra_op_threads
    replicas = pool.replicas or config.instances
    if replicas is None:
        replicas = max(1, cores // (threads or 1))
    return LocalPlan(replicas, threads or max(1, cores // replicas))


def onnx_backends(path: Path, plan: LocalPlan, config: ModelConfig) -> list[Backend]:
    options = OnnxOptions(intra_op_threads=plan.threads, inter_op_threads=config.inter_op_threads)
    own: list[Backend] = [OnnxBackend(path, options) for _ in range(plan.replicas)]
    if plan.replicas == 1:
        return own
    # A batch that runs alone gets every core of the pool (see backends/wide.py): one more session.
    wide = OnnxBackend(path, replace(options, intra_op_threads=plan.replicas * plan.threads))
    widening = Widening(wide)
    return [WideWhenAlone(backend, widening) for backend in own]


def int8_backends(
    source: Path, cache_dir: Path, plan: LocalPlan, config: ModelConfig, reference: Backend, threshold: float
) -> tuple[list[Backend], dict[str, Any]]:
    """The int8 variant's backends, or none when it fails the accuracy gate; and the gate's report."""
    try:
        variant = quantize_int8(source, cache_dir)
    except Exception as exc:  # ORT's quantizer raises many kinds; the fp32 pools still serve
        raise InvalidInput(f"int8 quantization failed: {exc}") from exc
    backends = onnx_backends(variant, plan, config)
    report = compare(reference, backends[0], sample_inputs(source.parent, reference.signature), threshold)
    info: dict[str, Any] = {"kind": "onnx-cpu-int8", "file": variant.name, **report.describe()}
    if not report.accepted:
        for backend in backends:
            backend.close()
        return [], info
    return backends, info
