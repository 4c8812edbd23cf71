"""Triton's classification extension: an output requested with ``"classification": k`` comes back as
its top-k classes instead of its values.

Rules (as Triton):

1. Each batch row (the whole tensor for a model that does not batch) is ranked by value, highest
   first; ties go to the lower index.
2. Each class is the string ``"<score>:<index>"``, plus ``":<label>"`` when the output has a label
   file with a line for that index. Floating-point scores print with six decimals (C's ``%f``),
   integer scores as integers.
3. The result is BYTES ``[batch, min(k, classes)]`` (``[min(k, classes)]`` without batching).
4. BYTES and BOOL outputs cannot be ranked (400), nor a row of more than ``MAX_CLASSES`` values.

Example: scores ``[0.1, 0.7, 0.2]`` with labels ``cat, dog, fox`` and k=2 give
``["0.700000:1:dog", "0.200000:2:fox"]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tierserve.datatypes import BYTES
from tierserve.engine.request import OutputTensor
from tierserve.errors import InvalidInput

MAX_CLASSES = 1_000_000  # Triton's bound on the values one classification ranks


def classify(tensor: OutputTensor, k: int, batching: bool, labels: Sequence[str] = ()) -> OutputTensor:
    if tensor.datatype.kind in ("bytes", "bool"):
        raise InvalidInput(
            f"class result not available for output '{tensor.name}' due to unsupported type "
            f"'{tensor.datatype.name}'"
        )
    array = tensor.array
    rows = array.reshape(array.shape[0], -1) if batching and array.ndim else array.reshape(1, -1)
    width = rows.shape[1]
    if width > MAX_CLASSES:
        raise InvalidInput(f"classification output tensor '{tensor.name}' too large ({width} values per row)")
    count = min(k, width)
    # Highest first, ties to the lower index: a stable ascending sort of the reversed row, reversed.
    order = width - 1 - np.argsort(rows[:, ::-1], axis=1, kind="stable")[:, ::-1][:, :count]
    is_float = tensor.datatype.kind == "float"
    classes = np.empty((rows.shape[0], count), dtype=object)
    for r, row in enumerate(rows):
        for c, index in enumerate(order[r]):
            value = row[index]
            score = f"{float(value):f}" if is_float else str(int(value))
            text = f"{score}:{index}"
            if index < len(labels):
                text += f":{labels[index]}"
            classes[r, c] = text.encode()
    result = classes if batching and array.ndim else classes.reshape(count)
    return OutputTensor(tensor.name, BYTES, result, tensor.binary)
