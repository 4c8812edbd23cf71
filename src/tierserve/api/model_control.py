"""Triton's model control with overrides: ``POST /v2/repository/models/<m>/load`` with parameters.

``{"parameters": {"config": "<model configuration as JSON>", "file:1/model.onnx": "<base64>"}}``:
the configuration takes the place of the model's ``config.pbtxt`` (and wins over ``config.yaml``);
files, which need a ``config`` beside them as in Triton, are written to the server's state directory
and the model is loaded from there (so a model need not be in the repository to be loaded this way).
The override holds until the model's next load; a load without parameters goes back to the
repository.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tierserve.engine.engine import Engine
from tierserve.errors import InvalidInput
from tierserve.protocol.codec import parse_json_object
from tierserve.repository.repository import LoadOverride, write_uploaded_files

_loading = threading.Lock()  # an override and the load it is for go together


def load_parameters(options: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, dict[str, object]]:
    """The override configuration (None: none) and the ``file:`` parameters of a load request body."""
    parameters = options.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        raise InvalidInput("load 'parameters' must be a JSON object")
    files = {key: value for key, value in parameters.items() if key.startswith("file:")}
    unknown = sorted(key for key in parameters if key != "config" and not key.startswith("file:"))
    if unknown:
        raise InvalidInput(f"unknown load parameters {unknown}; known: 'config' and 'file:<path>'")
    raw = parameters.get("config")
    if raw is None:
        if files:
            raise InvalidInput("a load with 'file:' parameters needs a 'config' parameter too (as in Triton)")
        return None, files
    if not isinstance(raw, str):
        raise InvalidInput("load parameter 'config' must be a string holding the model configuration as JSON")
    return parse_json_object(raw.encode(), "load parameter 'config'"), files


def load_model(
    engine: Engine,
    name: str,
    triton_config: Mapping[str, Any] | None,
    files: Mapping[str, object],
    uploads: Path,
) -> None:
    """Load ``name`` with the request's override (blocking: run it on a thread)."""
    with _loading:
        files_root = write_uploaded_files(uploads, name, files) if files else None
        override = None if triton_config is None else LoadOverride(triton_config, files_root)
        engine.repository.set_override(name, override)
        engine.load(name)
