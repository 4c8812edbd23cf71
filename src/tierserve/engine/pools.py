"""Pools: named sets of replicas of one backend kind on one kind of hardware, with a cost.

Declared under ``pools:`` in the server config (``tierserve serve --config``)::

    pools:
      - {name: cpu, kind: onnx-cpu, cost_per_hour: 0.1785}
      - {name: cpu-int8, kind: onnx-cpu-int8, cost_per_hour: 0.1785, accuracy_threshold: 0.99}
      - {name: burst, kind: remote, endpoints: ["http://10.0.0.7:8000"], cost_per_1k_requests: 0.05,
         rtt_ms: 2, concurrency: 8, timeout_ms: 5000}

With no ``pools:``, the server runs one ``onnx-cpu`` pool, plus a ``torch-cuda`` pool named
``cuda:0`` when PyTorch is installed and sees a CUDA device.
"""

from __future__ import annotations

import enum
import importlib.util
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tierserve.errors import InvalidInput

log = logging.getLogger(__name__)


class PoolKind(enum.StrEnum):
    """The backend a pool runs; its string value is what the server config names. What each kind
    is (``traits``) is written once, in ``_TRAITS``; the factory that builds its backends is in
    ``tierserve.engine.kinds``."""

    ONNX_CPU = "onnx-cpu"
    ONNX_CPU_INT8 = "onnx-cpu-int8"  # approximate: dynamic quantization, accepted by an accuracy gate
    TORCH_CUDA = "torch-cuda"
    REMOTE = "remote"  # another Open Inference Protocol server

    @property
    def traits(self) -> KindTraits:
        return _TRAITS[self]


@dataclass(frozen=True)
class KindTraits:
    host_cores: bool  # its replicas are threads on this host's cores (planned within them)
    local: bool  # runs on this host (not another server)
    gpu: bool
    approximate: bool  # its answers approximate the model's (only tiers that accept that use it)


_TRAITS = {
    PoolKind.ONNX_CPU: KindTraits(host_cores=True, local=True, gpu=False, approximate=False),
    PoolKind.ONNX_CPU_INT8: KindTraits(host_cores=True, local=True, gpu=False, approximate=True),
    PoolKind.TORCH_CUDA: KindTraits(host_cores=False, local=True, gpu=True, approximate=False),
    PoolKind.REMOTE: KindTraits(host_cores=False, local=False, gpu=False, approximate=False),
}

KINDS = tuple(PoolKind)


@dataclass(frozen=True)
class PoolSpec:
    name: str
    kind: PoolKind
    replicas: int | None = None  # local pools: default the model's ``instances``
    threads: int | None = None  # local CPU pools: intra-op threads per replica
    cost_per_hour: float = 0.0  # price of one replica (an instance, a GPU) per hour
    cost_per_1k_requests: float = 0.0  # price per request of a rented endpoint
    rtt_ms: float = 0.0  # expected network round trip, added to predictions
    concurrency: int = 4  # remote: requests in flight at once
    endpoints: tuple[str, ...] = ()
    timeout_ms: float = 10_000.0
    accuracy_threshold: float = 0.99  # approximate variants: minimum cosine similarity to fp32
    models: tuple[str, ...] | None = None  # only these models (default: all)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, PoolKind):  # the config's string, e.g. PoolSpec("cpu", "onnx-cpu")
            object.__setattr__(self, "kind", PoolKind(self.kind))

    @property
    def approximate(self) -> bool:
        return self.kind.traits.approximate

    @property
    def local(self) -> bool:
        return self.kind.traits.local

    @property
    def host_cores(self) -> bool:
        return self.kind.traits.host_cores

    @property
    def gpu(self) -> bool:
        return self.kind.traits.gpu

    def serves(self, model: str) -> bool:
        return self.models is None or model in self.models

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "cost_per_hour": self.cost_per_hour,
            "cost_per_1k_requests": self.cost_per_1k_requests,
            "rtt_ms": self.rtt_ms,
            "endpoints": list(self.endpoints),
        }


def cuda_available() -> bool:
    """True when PyTorch is installed and sees a CUDA device (imports torch only if installed)."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def default_pools() -> list[PoolSpec]:
    pools = [PoolSpec("cpu", PoolKind.ONNX_CPU)]
    if cuda_available():
        pools.append(PoolSpec("cuda:0", PoolKind.TORCH_CUDA))
    return pools


def parse_pools(raw: object) -> list[PoolSpec]:
    if raw is None:
        return default_pools()
    if not isinstance(raw, list) or not raw:
        raise InvalidInput("'pools' must be a non-empty list")
    pools = [_parse_pool(entry) for entry in raw]
    names = [p.name for p in pools]
    if len(set(names)) != len(names):
        raise InvalidInput(f"pool names must be unique: {names}")
    usable = [p for p in pools if not p.gpu or cuda_available()]
    for pool in set(pools) - set(usable):
        log.warning("pool %s (torch-cuda) is absent: PyTorch with a CUDA device is not available", pool.name)
    if not usable:
        raise InvalidInput("no configured pool can run on this machine")
    return usable


_FIELDS = {
    "name", "kind", "replicas", "threads", "cost_per_hour", "cost_per_1k_requests", "rtt_ms",
    "concurrency", "endpoints", "timeout_ms", "accuracy_threshold", "models",
}  # fmt: skip


def _parse_pool(entry: object) -> PoolSpec:
    if not isinstance(entry, Mapping):
        raise InvalidInput("each pool must be a mapping with at least name and kind")
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise InvalidInput(f"pool {entry.get('name')!r}: unknown keys {unknown}")
    kind = entry.get("kind")
    if kind not in KINDS:
        raise InvalidInput(f"pool {entry.get('name')!r}: kind must be one of {', '.join(KINDS)}")
    try:
        spec = PoolSpec(
            name=str(entry["name"]),
            kind=PoolKind(kind),
            replicas=None if entry.get("replicas") is None else int(entry["replicas"]),
            threads=None if entry.get("threads") is None else int(entry["threads"]),
            cost_per_hour=float(entry.get("cost_per_hour", 0.0)),
            cost_per_1k_requests=float(entry.get("cost_per_1k_requests", 0.0)),
            rtt_ms=float(entry.get("rtt_ms", 0.0)),
            concurrency=int(entry.get("concurrency", 4)),
            endpoints=tuple(str(e).rstrip("/") for e in entry.get("endpoints", ())),
            timeout_ms=float(entry.get("timeout_ms", 10_000.0)),
            accuracy_threshold=float(entry.get("accuracy_threshold", 0.99)),
            models=None if entry.get("models") is None else tuple(str(m) for m in entry["models"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"invalid pool {dict(entry)}: {exc}") from None
    if not spec.local and not spec.endpoints:
        raise InvalidInput(f"remote pool '{spec.name}' needs at least one endpoint")
    if min(spec.cost_per_hour, spec.cost_per_1k_requests, spec.rtt_ms) < 0 or spec.concurrency < 1:
        raise InvalidInput(f"pool '{spec.name}': costs and rtt must be >= 0 and concurrency >= 1")
    return spec
