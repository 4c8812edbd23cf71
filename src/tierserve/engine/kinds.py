"""The registry of backend kinds: for each ``PoolKind``, the factory that builds a pool's backends
for one model version, and the typed record of how that pool's variant was made.

This is the only place that goes from a kind to code (what a kind *is*, local or remote, exact or
approximate, is ``PoolKind.traits``). Adding a kind is one ``PoolKind`` member, its traits, and one
entry in ``BACKEND_KINDS``; ``tests/engine/test_kinds.py`` fails while a kind has no factory.

Every factory gets the model version as the repository describes it (``Target``: the file, its
configuration, and the graph's signature read from the file without a session) and returns the
backends of the pool, or none with a ``Variant`` that says why. The wrappers are applied here too:
``WideWhenAlone`` inside the ONNX Runtime kinds (one extra session with every core of the pool, for
a batch that runs alone), and the ``DeclaredView`` of a ``config.pbtxt`` around whatever a kind built.

Example::

    built = build_backends(PoolSpec("cpu", PoolKind.ONNX_CPU), target)
    built.backends          # one per replica
    built.variant           # None: the model file as it is
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tierserve.backends.base import Backend
from tierserve.backends.declared import DeclaredView
from tierserve.backends.onnx import OnnxBackend, OnnxOptions
from tierserve.backends.quantize import AccuracyReport, compare, quantize_int8, sample_inputs
from tierserve.backends.wide import Widening, WideWhenAlone
from tierserve.engine.pools import PoolKind, PoolSpec
from tierserve.repository.config import ModelConfig
from tierserve.repository.signature import Signature


@dataclass(frozen=True)
class Variant:
    """How one pool's form of a model version was made, when it is not simply the model file: a
    derived file (``onnx-cpu-int8``: the quantized model and its accuracy against fp32), or the
    reason the pool cannot run it. The model metadata route shows ``describe()``."""

    kind: PoolKind
    file: str | None = None  # the derived model file, in the engine's state directory
    accuracy: AccuracyReport | None = None  # the gate's verdict for an approximate variant
    error: str | None = None  # why this pool does not serve the version

    @property
    def accepted(self) -> bool:
        if self.error is not None:
            return False
        return self.accuracy.accepted if self.accuracy is not None else True

    def describe(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": self.kind}
        if self.file is not None:
            doc["file"] = self.file
        if self.accuracy is not None:
            doc.update(self.accuracy.describe())
        else:
            doc["accepted"] = self.accepted
        if self.error is not None:
            doc["error"] = self.error
        return doc


@dataclass(frozen=True)
class Target:
    """The model version a factory builds for, as the repository describes it."""

    name: str
    version: int
    path: Path  # the ONNX file
    config: ModelConfig
    signature: Signature  # the graph's (``ModelRepository.signature``), before any declared view
    cores: int  # this host's cores, shared by the local pools
    variants_dir: Path  # where derived files (the int8 model) are kept between loads
    declared: DeclaredView | None = None  # config.pbtxt's inputs/outputs: what clients see


@dataclass
class Built:
    backends: list[Backend] = field(default_factory=list)  # one per replica; empty: not served here
    variant: Variant | None = None  # None: the model file as it is


Factory = Callable[[PoolSpec, Target], Built]


def build_backends(pool: PoolSpec, target: Target) -> Built:
    """The backends of ``pool`` for ``target`` (seen through the declared view, if any). Raises
    what the kind's factory raises (a missing extra, an unreadable model, a bad endpoint)."""
    built = BACKEND_KINDS[pool.kind](pool, target)
    if built.backends and target.declared is not None:
        built.backends = target.declared.wrap(built.backends)
    return built


# -- local ONNX Runtime pools --------------------------------------------------------------------


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


def _onnx_cpu(pool: PoolSpec, target: Target) -> Built:
    return Built(onnx_backends(target.path, local_plan(pool, target.config, target.cores), target.config))


def _onnx_cpu_int8(pool: PoolSpec, target: Target) -> Built:
    """The int8 variant's backends, or none when quantization fails or the variant fails the
    accuracy gate. The gate's reference is an fp32 session built here, so only models that have an
    int8 pool pay for it, and it is closed as soon as the gate has judged."""
    try:
        variant = quantize_int8(target.path, target.variants_dir)
    except Exception as exc:  # ORT's quantizer raises many kinds; the fp32 pools still serve
        return Built(variant=Variant(pool.kind, error=f"int8 quantization failed: {exc}"))
    backends = onnx_backends(variant, local_plan(pool, target.config, target.cores), target.config)
    reference = OnnxBackend(target.path, OnnxOptions(intra_op_threads=1))
    try:
        feeds = sample_inputs(target.path.parent, target.signature)
        report = compare(reference, backends[0], feeds, pool.accuracy_threshold)
    except BaseException:
        for backend in backends:
            backend.close()
        raise
    finally:
        reference.close()
    made = Variant(pool.kind, file=variant.name, accuracy=report)
    if not report.accepted:
        for backend in backends:
            backend.close()
        return Built(variant=made)
    return Built(backends, made)


# -- other hosts and devices (their modules import their optional dependencies) --------------------


def _torch_cuda(pool: PoolSpec, target: Target) -> Built:
    from tierserve.backends.torch_cuda import TorchCudaBackend

    return Built([TorchCudaBackend(target.path, target.signature) for _ in range(pool.replicas or 1)])


def _remote(pool: PoolSpec, target: Target) -> Built:
    from tierserve.backends.remote import RemoteBackend

    remote = RemoteBackend(
        pool.endpoints, target.name, target.signature, concurrency=pool.concurrency,
        timeout_s=pool.timeout_ms / 1000,
    )  # fmt: skip
    return Built([remote] * pool.concurrency)  # one shared pooled client; a replica thread per request


BACKEND_KINDS: Mapping[PoolKind, Factory] = MappingProxyType(
    {
        PoolKind.ONNX_CPU: _onnx_cpu,
        PoolKind.ONNX_CPU_INT8: _onnx_cpu_int8,
        PoolKind.TORCH_CUDA: _torch_cuda,
        PoolKind.REMOTE: _remote,
    }
)
