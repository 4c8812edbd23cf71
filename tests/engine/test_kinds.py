"""The registry of backend kinds: one factory per pool kind, typed variants, and sessions built only
where a kind needs them (no session just to read a signature; the int8 gate's fp32 reference only
for an int8 pool, closed once it has judged)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tierserve.backends.declared import DeclaredBackend, DeclaredView
from tierserve.backends.onnx import OnnxBackend, OnnxOptions
from tierserve.backends.quantize import AccuracyReport
from tierserve.backends.wide import WideWhenAlone
from tierserve.engine import kinds
from tierserve.engine.kinds import BACKEND_KINDS, Target, Variant, build_backends
from tierserve.engine.pools import PoolKind, PoolSpec
from tierserve.examples.basic import build_simple, save
from tierserve.repository.config import DeclaredTensor, ModelConfig
from tierserve.repository.graph import read_signature


class Sessions:
    """Every ONNX Runtime session the factories open, by file, and which were closed."""

    def __init__(self) -> None:
        self.opened: list[Path] = []
        self.closed: list[Path] = []


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sessions]:
    seen = Sessions()

    class Counted(OnnxBackend):
        def __init__(self, path: Path, options: OnnxOptions) -> None:
            super().__init__(path, options)
            seen.opened.append(Path(path))

        def close(self) -> None:
            seen.closed.append(self.path)
            super().close()

    monkeypatch.setattr(kinds, "OnnxBackend", Counted)
    yield seen


def _target(path: Path, tmp_path: Path, config: ModelConfig | None = None, **extra: object) -> Target:
    return Target(
        "m", 1, path, config or ModelConfig(), read_signature(path), 2, tmp_path / "variants", **extra
    )  # type: ignore[arg-type]


def _matmul(path: Path) -> None:
    """FP32 [batch, 8] x W[8, 4]: a model the int8 quantizer changes (its MatMul weights)."""
    weights = np.random.default_rng(7).standard_normal((8, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "matmul",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[numpy_helper.from_array(weights, "W")],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def test_every_pool_kind_has_a_factory_and_traits() -> None:
    assert set(BACKEND_KINDS) == set(PoolKind)
    for kind in PoolKind:
        traits = kind.traits
        assert not (traits.gpu and traits.host_cores)
        assert traits.local or not traits.host_cores
    assert [k for k in PoolKind if k.traits.approximate] == [PoolKind.ONNX_CPU_INT8]
    assert PoolSpec("x", "onnx-cpu").kind is PoolKind.ONNX_CPU  # type: ignore[arg-type]


def test_a_cpu_pool_opens_one_session_per_replica_and_the_wide_one_nothing_else(
    tmp_path: Path, sessions: Sessions
) -> None:
    build_simple(tmp_path / "model.onnx")
    built = build_backends(
        PoolSpec("cpu", PoolKind.ONNX_CPU, replicas=2), _target(tmp_path / "model.onnx", tmp_path)
    )
    assert built.variant is None and len(built.backends) == 2
    assert all(isinstance(b, WideWhenAlone) for b in built.backends)
    assert len(sessions.opened) == 3 and not sessions.closed  # two replicas + the shared wide session
    for backend in built.backends:
        backend.close()


def test_the_int8_gate_builds_its_fp32_reference_and_closes_it(tmp_path: Path, sessions: Sessions) -> None:
    _matmul(tmp_path / "model.onnx")
    pool = PoolSpec("int8", PoolKind.ONNX_CPU_INT8, replicas=1, accuracy_threshold=0.9)
    built = build_backends(pool, _target(tmp_path / "model.onnx", tmp_path))
    variant = built.variant
    assert variant is not None and variant.accepted and variant.accuracy is not None
    assert variant.file is not None and (tmp_path / "variants" / variant.file).is_file()
    assert len(built.backends) == 1
    fp32 = tmp_path / "model.onnx"
    assert sessions.opened.count(fp32) == 1 and sessions.closed == [fp32]  # the reference, closed
    doc = variant.describe()
    assert doc["kind"] == "onnx-cpu-int8" and doc["accepted"] is True and doc["file"] == variant.file
    assert set(doc) >= {"cosine_min", "cosine_mean", "threshold", "samples"}
    for backend in built.backends:
        backend.close()


def test_a_refused_int8_variant_serves_nothing_and_says_why(tmp_path: Path, sessions: Sessions) -> None:
    _matmul(tmp_path / "model.onnx")
    pool = PoolSpec("int8", PoolKind.ONNX_CPU_INT8, replicas=1, accuracy_threshold=1.5)  # unreachable
    built = build_backends(pool, _target(tmp_path / "model.onnx", tmp_path))
    assert built.backends == []
    assert built.variant is not None and not built.variant.accepted
    assert built.variant.describe()["accepted"] is False
    assert sorted(sessions.opened) == sorted(sessions.closed)  # every session it opened is closed


def test_variants_describe_a_failure_as_the_metadata_route_shows_it() -> None:
    failed = Variant(PoolKind.TORCH_CUDA, error="no CUDA device")
    assert failed.describe() == {"kind": "torch-cuda", "accepted": False, "error": "no CUDA device"}
    judged = Variant(PoolKind.ONNX_CPU_INT8, file="f.onnx", accuracy=AccuracyReport(0.95, 0.97, 0.99, 8))
    assert not judged.accepted and judged.describe()["accepted"] is False


def test_a_declared_view_wraps_whatever_the_kind_built(tmp_path: Path) -> None:
    build_simple(tmp_path / "model.onnx")
    config = ModelConfig(inputs=(DeclaredTensor("INPUT0", "INT32", (16,)),))
    signature = read_signature(tmp_path / "model.onnx")
    view = DeclaredView(signature, config, True, "m")
    target = _target(tmp_path / "model.onnx", tmp_path, config, declared=view)
    built = build_backends(PoolSpec("cpu", PoolKind.ONNX_CPU, replicas=1), target)
    assert all(isinstance(b, DeclaredBackend) for b in built.backends)
    for backend in built.backends:
        backend.close()
