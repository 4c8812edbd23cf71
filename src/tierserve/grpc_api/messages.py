"""The protocol's message classes, built from ``inference.binpb`` in a descriptor pool of our own.

A private pool rather than generated ``_pb2`` modules: those register ``inference.*`` in protobuf's
default pool, where Triton's own client stubs (``tritonclient.grpc``) register the same names from a
different file, and the second import in one process fails ("duplicate symbol"). Here both live
side by side. Example::

    from tierserve.grpc_api import messages
    request = messages.ModelInferRequest.FromString(data)
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

DESCRIPTOR_SET = "inference.binpb"
PACKAGE = "inference"
SERVICE = f"{PACKAGE}.GRPCInferenceService"


def _load() -> descriptor_pool.DescriptorPool:
    files = descriptor_pb2.FileDescriptorSet.FromString(
        resources.files(__package__).joinpath(DESCRIPTOR_SET).read_bytes()
    )
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return pool


POOL = _load()


def message(name: str) -> Any:
    """The class of ``inference.<name>`` (nested names with dots)."""
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


# Typed Any: the classes are made at run time, so there are no stubs for mypy to read.
ServerLiveResponse = message("ServerLiveResponse")
ServerReadyResponse = message("ServerReadyResponse")
ModelReadyResponse = message("ModelReadyResponse")
ServerMetadataResponse = message("ServerMetadataResponse")
ModelMetadataResponse = message("ModelMetadataResponse")
InferParameter = message("InferParameter")
ModelInferRequest = message("ModelInferRequest")
ModelInferResponse = message("ModelInferResponse")
ModelStreamInferResponse = message("ModelStreamInferResponse")
ModelConfigResponse = message("ModelConfigResponse")
ModelStatisticsResponse = message("ModelStatisticsResponse")
RepositoryIndexResponse = message("RepositoryIndexResponse")
RepositoryModelLoadResponse = message("RepositoryModelLoadResponse")
RepositoryModelUnloadResponse = message("RepositoryModelUnloadResponse")


def request_class(method: str) -> Any:
    """The request message of one RPC of the service."""
    rpc = POOL.FindServiceByName(SERVICE).methods_by_name[method]
    return message_factory.GetMessageClass(rpc.input_type)


def methods() -> list[str]:
    return [m.name for m in POOL.FindServiceByName(SERVICE).methods]
