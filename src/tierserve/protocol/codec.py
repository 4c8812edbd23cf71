"""The server's directions of the Open Inference Protocol codec: a request body to an
``InferRequest``, an ``InferResponse`` to a body. JSON tensors and Triton's binary tensor data
extension; the tensor entries themselves are read and written by ``tensors``, which the client's
directions (``client``) share.

Beyond the tensors: an output may ask for its top-k classes (``classification``) or to be written
to a registered shared-memory region; ``binary_data_output`` sets the default for outputs that say
nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from tierserve.engine.request import InferRequest, InferResponse, InputTensor, RequestedOutput
from tierserve.errors import InvalidInput
from tierserve.protocol.tensors import (
    BinaryReader,
    SharedMemoryReader,
    decode_tensor,
    dumps_with_tokens,
    encode_tensor,
    join_body,
    loads,
    mapping,
    region,
    split_body,
)


def decode_request(
    body: bytes, header_length: str | None, regions: SharedMemoryReader | None = None
) -> InferRequest:
    json_part, binary = split_body(body, header_length)
    doc = loads(json_part, "request")
    if not isinstance(doc, dict):
        raise InvalidInput("the request body must be a JSON object")
    parameters = mapping(doc.get("parameters"), "request parameters")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("request 'id' must be a string")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("request must have a non-empty 'inputs' array")
    reader = BinaryReader(binary)
    inputs = [InputTensor(*decode_tensor(raw, reader, regions, "input")) for raw in raw_inputs]
    reader.finish("input")
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise InvalidInput("parameter 'binary_data_output' must be a boolean")
    return InferRequest(
        inputs=inputs,
        id=request_id,
        outputs=_decode_outputs(doc.get("outputs")),
        parameters=parameters,
        binary_output=binary_output,
    )


def encode_response(
    response: InferResponse, placed: Mapping[str, Mapping[str, Any]] | None = None
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers (JSON, or JSON + binary when any output is binary).

    ``placed`` names the outputs already written to shared memory, with the parameters that say
    where: those carry no data."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for tensor in response.outputs:
        if placed and tensor.name in placed:
            entry: dict[str, Any] = {
                "name": tensor.name,
                "datatype": tensor.datatype.name,
                "shape": list(tensor.array.shape),
                "parameters": dict(placed[tensor.name]),
            }
        else:
            entry = encode_tensor(
                tensor.name, tensor.datatype, tensor.array, binary=tensor.binary, blobs=blobs
            )
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id is not None:
        doc["id"] = response.id
    doc["outputs"] = outputs
    return join_body(dumps_with_tokens(doc, "outputs"), blobs)


def _decode_outputs(raw: object) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidInput("'outputs' must be an array")
    outputs = []
    for entry in raw:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidInput("each requested output needs a string 'name'")
        name = entry["name"]
        parameters = mapping(entry.get("parameters"), f"parameters of output '{name}'")
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise InvalidInput(f"output '{name}': binary_data must be a boolean")
        classes = parameters.get("classification", 0)
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 0:
            raise InvalidInput(f"output '{name}': classification must be a non-negative integer")
        place = region(parameters, f"output '{name}'")
        if place is not None and classes:
            raise InvalidInput("Output can't set both 'shared_memory_region' and 'classification'")
        if place is not None and binary:
            raise InvalidInput("Output can't set both 'shared_memory_region' and 'binary_data'")
        outputs.append(RequestedOutput(name, binary, classes, place))
    return outputs


def parse_json_object(body: bytes, what: str) -> Mapping[str, Any]:
    """A small JSON object body (admin routes); empty means ``{}``."""
    if not body.strip():
        return {}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"failed to parse the {what} JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"the {what} body must be a JSON object")
    return doc
