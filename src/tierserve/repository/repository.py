"""Discovery of models and versions in a Triton-style directory tree."""

from __future__ import annotations

import base64
import binascii
import re
import shutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tierserve.errors import InvalidInput, ModelNotFound
from tierserve.repository.config import ModelConfig
from tierserve.repository.graph import read_signature
from tierserve.repository.loading import CONFIG_FILE, PBTXT_FILE, load_config
from tierserve.repository.signature import Signature

__all__ = ["CONFIG_FILE", "MODEL_FILE", "PBTXT_FILE", "ModelRepository"]

MODEL_FILE = "model.onnx"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


def parse_version(raw: str) -> int | None:
    """A version number from a directory or URL segment, or None. ASCII digits only: ``str.isdigit``
    is also true of "²" and other digits that ``int`` refuses."""
    if not raw.isascii() or not raw.isdigit():
        return None
    return int(raw)


@dataclass(frozen=True)
class LoadOverride:
    """What a load request brought (Triton's load parameters): a model configuration in Triton's
    JSON form, and/or a directory holding the model's files written from the request."""

    triton_config: Mapping[str, Any] | None = None
    files_root: Path | None = None  # holds <name>/<version>/model.onnx


class ModelRepository:
    """Reads ``<root>/<model>/<version>/model.onnx``. Its only state beyond the root path: the
    override of each model's latest load request, in force until that model's next load."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InvalidInput(f"model repository {self.root} is not a directory")
        self._overrides: dict[str, LoadOverride] = {}
        self._lock = threading.Lock()

    def set_override(self, name: str, override: LoadOverride | None) -> None:
        """The source of ``name``'s next loads: ``override``, or the repository itself (None)."""
        with self._lock:
            if override is None:
                self._overrides.pop(name, None)
            else:
                self._overrides[name] = override

    def model_names(self) -> list[str]:
        with self._lock:
            uploaded = {name for name, o in self._overrides.items() if o.files_root is not None}
        on_disk = {
            entry.name
            for entry in self.root.iterdir()
            if entry.is_dir() and _NAME.fullmatch(entry.name) and self.versions(entry.name)
        }
        return sorted(on_disk | uploaded)

    def unservable(self) -> dict[str, str]:
        """Model directories of a Triton repository that tierserve cannot serve (no
        ``<version>/model.onnx``: TensorRT, TensorFlow, Python models...), each with the reason."""
        found: dict[str, str] = {}
        try:
            entries = sorted(self.root.iterdir())
        except OSError:
            return found
        for entry in entries:
            if not entry.is_dir() or not _NAME.fullmatch(entry.name) or self.versions(entry.name):
                continue
            try:
                files = sorted(
                    f"{version.name}/{item.name}"
                    for version in entry.iterdir()
                    if version.name.isdigit() and version.is_dir()
                    for item in version.iterdir()
                )
            except OSError:
                continue
            if files or (entry / PBTXT_FILE).is_file():
                shown = ", ".join(files[:3]) or "no version directories"
                found[entry.name] = f"no <version>/{MODEL_FILE} (tierserve serves ONNX models): {shown}"
        return found

    def versions(self, name: str) -> list[int]:
        model_dir = self._model_dir(name)
        if not model_dir.is_dir():
            return []
        found = ((parse_version(entry.name), entry) for entry in model_dir.iterdir())
        return sorted(v for v, entry in found if v is not None and v > 0 and (entry / MODEL_FILE).is_file())

    def config(self, name: str, triton_config: Mapping[str, Any] | None = None) -> ModelConfig:
        """The model's settings: its ``config.pbtxt`` (or ``triton_config``, a load request's
        override, in its place) under its ``config.yaml`` (which wins key by key)."""
        override = self._overrides.get(name)
        if triton_config is None and override is not None:
            triton_config = override.triton_config
        return load_config(self._model_dir(name), name, triton_config)

    def versions_to_serve(self, name: str, config: ModelConfig) -> list[int]:
        available = self.versions(name)
        if not available:
            raise ModelNotFound(name)
        return config.version_policy.select(available)

    def model_path(self, name: str, version: int) -> Path:
        return self._model_dir(name) / str(version) / MODEL_FILE

    def signature(self, name: str, version: int) -> Signature:
        """The inputs and outputs of the version's ONNX graph (read from the file; no session)."""
        return read_signature(self.model_path(name, version))

    def _model_dir(self, name: str) -> Path:
        if not _NAME.fullmatch(name):
            raise ModelNotFound(name)
        override = self._overrides.get(name)
        if override is not None and override.files_root is not None:
            return override.files_root / name
        return self.root / name


def write_uploaded_files(dest: Path, name: str, files: Mapping[str, object]) -> Path:
    """Write a load request's ``file:<path>`` parameters (base64 text over REST, bytes over gRPC) under
    ``dest/<name>/`` (replacing what an earlier request wrote there); return ``dest``.

    Paths are relative to the model's directory, e.g. ``file:1/model.onnx``; none may leave it."""
    if not _NAME.fullmatch(name):
        raise ModelNotFound(name)
    decoded: dict[PurePosixPath, bytes] = {}
    for key, content in files.items():
        path = PurePosixPath(key.removeprefix("file:"))
        if path.is_absolute() or not path.parts or any(part in ("", ".", "..") for part in path.parts):
            raise InvalidInput(f"load parameter '{key}' must name a path inside the model's directory")
        if isinstance(content, bytes):  # gRPC's bytes_param: the contents themselves
            decoded[path] = content
            continue
        if not isinstance(content, str):
            raise InvalidInput(f"load parameter '{key}' must be the file's contents in base64")
        try:
            decoded[path] = base64.b64decode(content, validate=True)
        except binascii.Error:
            raise InvalidInput(f"load parameter '{key}' is not valid base64") from None
    model_dir = dest / name
    shutil.rmtree(model_dir, ignore_errors=True)
    for path, data in decoded.items():
        target = model_dir.joinpath(*path.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return dest
