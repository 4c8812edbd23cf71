"""A model's input/output signature and validation of request tensors against it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tierserve.datatypes import Datatype


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the model. ``shape`` is the full shape; -1 marks a dynamic dimension."""

    name: str
    datatype: Datatype
    shape: tuple[int, ...]

    def metadata(self) -> dict[str, object]:
        return {"name": self.name, "datatype": self.datatype.name, "shape": list(self.shape)}


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.outputs if spec.name == name), None)

    @property
    def batchable(self) -> bool:
        """A dynamic first dimension on every input and output means the model batches."""
        tensors = self.inputs + self.outputs
        return bool(tensors) and all(spec.shape and spec.shape[0] == -1 for spec in tensors)


def shape_matches(expected: Sequence[int], actual: Sequence[int]) -> bool:
    return len(expected) == len(actual) and all(e in (-1, a) for e, a in zip(expected, actual, strict=True))
