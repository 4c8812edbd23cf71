"""Triton's per-output extensions, applied to the engine's response before it is encoded:
classification (top-k classes instead of values) and shared memory (values written to a region).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tierserve.api.classification import classify
from tierserve.api.shared_memory import SystemSharedMemory
from tierserve.engine.request import InferRequest, InferResponse
from tierserve.errors import InvalidInput
from tierserve.wire import tensor_to_bytes


def finish_outputs(
    request: InferRequest,
    response: InferResponse,
    *,
    batching: bool,
    labels: Mapping[str, Sequence[str]],
    regions: SystemSharedMemory | None,
) -> dict[str, dict[str, Any]]:
    """Apply each requested output's extensions to ``response`` in place; return the parameters of
    the outputs now in shared memory (for ``encode_response``'s ``placed``)."""
    placed: dict[str, dict[str, Any]] = {}
    if not request.outputs:
        return placed
    wanted = {output.name: output for output in request.outputs}
    for index, tensor in enumerate(response.outputs):
        output = wanted.get(tensor.name)
        if output is None:
            continue
        if output.classification:
            response.outputs[index] = classify(
                tensor, output.classification, batching, labels.get(tensor.name, ())
            )
        if output.shared_memory is not None:
            if regions is None:
                raise InvalidInput("shared-memory outputs are not supported on this protocol")
            region, offset, byte_size = output.shared_memory
            blob = tensor_to_bytes(response.outputs[index].array, tensor.datatype)
            if len(blob) > byte_size:
                raise InvalidInput(
                    f"shared memory size specified with the request for output '{tensor.name}' "
                    f"({byte_size} bytes) should be at least {len(blob)} bytes to hold the results"
                )
            regions.write(region, offset, blob)
            placed[tensor.name] = {"shared_memory_region": region, "shared_memory_byte_size": len(blob)}
    return placed
