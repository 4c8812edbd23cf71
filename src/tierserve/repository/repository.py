"""Discovery of models and versions in a Triton-style directory tree."""

from __future__ import annotations

import re
from pathlib import Path

from tierserve.errors import InvalidInput, ModelNotFound
from tierserve.repository.config import ModelConfig

MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.yaml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class ModelRepository:
    """Reads ``<root>/<model>/<version>/model.onnx``; holds no state beyond the root path."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InvalidInput(f"model repository {self.root} is not a directory")

    def model_names(self) -> list[str]:
        return sorted(
            entry.name
            for entry in self.root.iterdir()
            if entry.is_dir() and _NAME.match(entry.name) and self.versions(entry.name)
        )

    def versions(self, name: str) -> list[int]:
        model_dir = self._model_dir(name)
        if not model_dir.is_dir():
            return []
        return sorted(
            int(entry.name)
            for entry in model_dir.iterdir()
            if entry.name.isdigit() and int(entry.name) > 0 and (entry / MODEL_FILE).is_file()
        )

    def config(self, name: str) -> ModelConfig:
        return ModelConfig.load(self._model_dir(name) / CONFIG_FILE)

    def versions_to_serve(self, name: str, config: ModelConfig) -> list[int]:
        available = self.versions(name)
        if not available:
            raise ModelNotFound(name)
        return config.version_policy.select(available)

    def model_path(self, name: str, version: int) -> Path:
        return self._model_dir(name) / str(version) / MODEL_FILE

    def _model_dir(self, name: str) -> Path:
        if not _NAME.match(name):
            raise ModelNotFound(name)
        return self.root / name
