"""Top-k classes as Triton writes them: ``score:index[:label]``."""

from __future__ import annotations

import numpy as np
import pytest

from tierserve.api.classification import classify
from tierserve.datatypes import BY_NAME
from tierserve.engine.request import OutputTensor
from tierserve.errors import InvalidInput


def _output(values: list[object], datatype: str = "FP32") -> OutputTensor:
    return OutputTensor("probs", BY_NAME[datatype], np.array(values, dtype=BY_NAME[datatype].numpy), True)


def test_the_docstring_example() -> None:
    result = classify(_output([[0.1, 0.7, 0.2]]), 2, batching=True, labels=("cat", "dog", "fox"))
    assert result.datatype.name == "BYTES" and result.binary
    assert result.array.tolist() == [[b"0.700000:1:dog", b"0.200000:2:fox"]]


def test_each_batch_row_is_ranked_on_its_own_and_k_is_capped() -> None:
    result = classify(_output([[1, 5, 3], [9, 0, 9]], "INT32"), 5, batching=True)
    assert result.array.shape == (2, 3)
    assert result.array.tolist() == [[b"5:1", b"3:2", b"1:0"], [b"9:0", b"9:2", b"0:1"]]  # ties: lower index


def test_without_batching_the_whole_tensor_is_one_row() -> None:
    result = classify(_output([[0.5, 0.25], [1.0, 0.0]]), 1, batching=False, labels=("a",))
    assert result.array.shape == (1,)
    assert result.array.tolist() == [b"1.000000:2"]  # index 2 has no label line


def test_unsigned_scores_rank_correctly() -> None:
    result = classify(_output([[0, 255, 7]], "UINT8"), 2, batching=True)
    assert result.array.tolist() == [[b"255:1", b"7:2"]]


@pytest.mark.parametrize("datatype, values", [("BYTES", [[b"a"]]), ("BOOL", [[True]])])
def test_unrankable_outputs_are_400(datatype: str, values: list[object]) -> None:
    with pytest.raises(InvalidInput, match="class result not available"):
        classify(_output(values, datatype), 1, batching=True)
