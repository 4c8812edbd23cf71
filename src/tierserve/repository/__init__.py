"""Model repository: Triton's layout, ``<root>/<model>/<version>/model.onnx`` + optional ``config.yaml``."""

from tierserve.repository.config import ModelConfig, VersionPolicy
from tierserve.repository.repository import ModelRepository
from tierserve.repository.signature import Signature, TensorSpec

__all__ = ["ModelConfig", "ModelRepository", "Signature", "TensorSpec", "VersionPolicy"]
