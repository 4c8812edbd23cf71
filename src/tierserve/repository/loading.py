"""A model's settings as the repository holds them: ``config.pbtxt`` (Triton's), ``config.yaml``
(tierserve's, which wins key by key) and label files.

A load request may carry a Triton configuration of its own (Triton's ``config`` load parameter):
it takes the place of ``config.pbtxt`` and wins over ``config.yaml`` too. A ``config.pbtxt`` that
cannot be read or parsed fails the model's load with the reason (index, readiness); it is never
silently ignored. Fields tierserve cannot honour are logged once per model and field.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tierserve.errors import InvalidInput
from tierserve.repository.config import ModelConfig, read_settings
from tierserve.repository.pbtxt import parse_text_proto, triton_settings

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
PBTXT_FILE = "config.pbtxt"
MAX_PBTXT_BYTES = 1 << 20
MAX_LABEL_BYTES = 16 << 20


def with_labels(config: ModelConfig, model_dir: Path) -> ModelConfig:
    """``config`` with the class labels of its label files read (one label a line, as in Triton)."""
    labels: dict[str, tuple[str, ...]] = {}
    for output, file_name in config.label_files.items():
        path = model_dir / file_name
        if Path(file_name).is_absolute() or ".." in Path(file_name).parts:
            raise InvalidInput(
                f"label file '{file_name}' of output '{output}' must be inside the model directory"
            )
        text = _read_text(path, MAX_LABEL_BYTES, f"label file of output '{output}'")
        labels[output] = tuple(text.splitlines())
    return dataclasses.replace(config, labels=labels) if labels else config


_reported: set[tuple[str, str]] = set()  # (model, field) not honoured, already logged


def load_config(model_dir: Path, name: str, triton_config: Mapping[str, Any] | None = None) -> ModelConfig:
    from_request = triton_config is not None
    pbtxt = model_dir / PBTXT_FILE
    source = f"the load request's config for '{name}'" if from_request else str(pbtxt)
    if triton_config is None and pbtxt.is_file():
        triton_config = _read_pbtxt(pbtxt)
    mapped = triton_settings(triton_config, name, source=source) if triton_config is not None else None
    triton: dict[str, Any] = dict(mapped.settings) if mapped else {}
    if mapped is not None:
        enable_cache = triton.pop("response_cache", False)
        if "cache" in {f.name for f in dataclasses.fields(ModelConfig)}:
            triton["cache"] = enable_cache  # the result cache's own opt-in
        elif enable_cache:
            mapped.unhonoured.append("response_cache (no result cache in this build)")
        _report(name, source, mapped.unhonoured)
    yaml_path = model_dir / CONFIG_FILE
    native = read_settings(yaml_path)
    # config.yaml wins over config.pbtxt key by key; a load request's config wins over both.
    settings = {**native, **triton} if from_request else {**triton, **native}
    config = ModelConfig.from_mapping(settings, source=str(yaml_path) if native else source)
    if mapped is not None:
        config = dataclasses.replace(config, inputs=mapped.inputs, outputs=mapped.outputs)
    return with_labels(config, model_dir)


def _report(name: str, source: str, unhonoured: list[str]) -> None:
    for field_name in unhonoured:
        if (name, field_name) not in _reported:
            _reported.add((name, field_name))
            log.warning("model %s: %s: field %s is not honoured by tierserve", name, source, field_name)


def _read_text(path: Path, limit: int, what: str) -> str:
    try:
        if path.stat().st_size > limit:
            raise InvalidInput(f"{path} ({what}) is larger than {limit} bytes")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path} ({what}) cannot be read: {exc}") from None


def _read_pbtxt(path: Path) -> Mapping[str, Any]:
    text = _read_text(path, MAX_PBTXT_BYTES, "Triton model configuration")
    try:
        return parse_text_proto(text)
    except InvalidInput as exc:
        raise InvalidInput(f"{path}: not valid protobuf text format: {exc.message}") from None
