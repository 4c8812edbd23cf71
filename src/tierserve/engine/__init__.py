"""Where queues, policy and replicas are wired together."""

from tierserve.engine.engine import Engine, ModelState
from tierserve.engine.request import InferRequest, InferResponse, InputTensor, OutputTensor, RequestedOutput

__all__ = [
    "Engine",
    "InferRequest",
    "InferResponse",
    "InputTensor",
    "ModelState",
    "OutputTensor",
    "RequestedOutput",
]
