from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tierserve.examples.variants import build_simple_variant


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(
    "variant", [{}, {"extra_rounds": 3}, {"fail_every": 5}, {"extra_rounds": 2, "fail_every": 3}]
)
def test_variants_answer_like_simple(tmp_path: Path, variant: dict[str, int]) -> None:
    path = tmp_path / "model.onnx"
    build_simple_variant(path, **variant)
    a = np.array([[0] * 16, [-30] * 16], dtype=np.int32)  # INPUT0[:, 0] mod 3 and 5 is 0: never failing
    b = np.arange(32, dtype=np.int32).reshape(2, 16)
    out0, out1 = _session(path).run(None, {"INPUT0": a, "INPUT1": b})
    assert (out0 == a + b).all() and (out1 == a - b).all()


def test_fail_every_fails_exactly_the_last_slot(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    build_simple_variant(path, fail_every=50)
    session = _session(path)
    ones = np.ones((1, 16), dtype=np.int32)
    failed = []
    for i in range(200):
        a = np.full((1, 16), i, dtype=np.int32)
        try:
            session.run(None, {"INPUT0": a, "INPUT1": ones})
        except Exception:  # ONNX Runtime's own error types
            failed.append(i)
    assert failed == [49, 99, 149, 199]
