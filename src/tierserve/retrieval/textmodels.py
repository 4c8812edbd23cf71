"""The models that take text: embedders and cross-encoders the engine serves, with their tokenizers.

A model takes text when its ``config.yaml`` declares ``embedding:`` or ``reranker:`` (see
``tierserve.repository.textmodel``). Its inputs are found by name: ``input_ids`` and
``attention_mask`` (int64), and ``token_type_ids`` when the graph has it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from tierserve.datatypes import Datatype
from tierserve.engine.deployment import Deployment
from tierserve.engine.engine import Engine
from tierserve.errors import InvalidInput, ModelNotFound
from tierserve.repository.textmodel import TextModelConfig
from tierserve.retrieval.tokenizer import TextTokenizer

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
TOKEN_TYPE_IDS = "token_type_ids"


@dataclass(frozen=True)
class TextModel:
    name: str
    deployment: Deployment
    config: TextModelConfig
    tokenizer: TextTokenizer
    output: str
    width: int | None  # the output's last dimension (the embedding size), when the graph fixes it
    input_types: dict[str, Datatype]

    @property
    def max_rows(self) -> int:
        """Rows one engine request may carry (1 for a model that does not batch)."""
        return max(1, self.deployment.max_batch_size)


class TextModels:
    """Looks up text models by name; tokenizers are loaded once per model version."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._tokenizers: dict[tuple[str, int, str], TextTokenizer] = {}
        self._lock = threading.Lock()

    def embedder(self, name: str) -> TextModel:
        config = self._engine.config(name)  # unknown or unloaded: ModelNotFound
        if config.embedding is None:
            raise InvalidInput(
                f"model '{name}' does not embed text (its config.yaml declares no 'embedding' section)"
            )
        return self._text_model(name, config.embedding)

    def reranker(self, name: str) -> TextModel:
        config = self._engine.config(name)
        if config.reranker is None:
            raise InvalidInput(f"model '{name}' is not a re-ranker (its config.yaml declares no 'reranker')")
        return self._text_model(name, config.reranker)

    def embedder_names(self) -> list[str]:
        names = []
        for deployment in self._engine.deployments():
            try:
                if self._engine.config(deployment.name).embedding is not None:
                    names.append(deployment.name)
            except ModelNotFound:  # unloaded meanwhile
                continue
        return sorted(set(names))

    def _text_model(self, name: str, config: TextModelConfig) -> TextModel:
        deployment = self._engine.deployment(name)
        signature = deployment.signature
        types = {spec.name: spec.datatype for spec in signature.inputs}
        missing = [n for n in (INPUT_IDS, ATTENTION_MASK) if n not in types]
        extra = sorted(set(types) - {INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS})
        if missing or extra or any(t.kind not in ("int", "uint") for t in types.values()):
            raise InvalidInput(
                f"model '{name}' takes text but its inputs are {sorted(types)}; expected integer "
                f"{INPUT_IDS}, {ATTENTION_MASK} and optionally {TOKEN_TYPE_IDS}"
            )
        if config.output is not None:
            spec = signature.output(config.output)
            if spec is None:
                raise InvalidInput(f"model '{name}' has no output '{config.output}' (config.yaml)")
        elif len(signature.outputs) == 1:
            spec = signature.outputs[0]
        else:
            raise InvalidInput(f"model '{name}' has several outputs; name one as 'output' in its config.yaml")
        width = spec.shape[-1] if spec.shape and spec.shape[-1] > 0 else None
        return TextModel(
            name,
            deployment,
            config,
            self._tokenizer(name, deployment.version, config),
            spec.name,
            width,
            types,
        )

    def _tokenizer(self, name: str, version: int, config: TextModelConfig) -> TextTokenizer:
        key = (name, version, config.tokenizer)
        with self._lock:
            found = self._tokenizers.get(key)
            if found is None or found.max_length != config.max_length:
                found = TextTokenizer(
                    self._tokenizer_path(name, version, config.tokenizer), config.max_length
                )
                self._tokenizers[key] = found
            return found

    def _tokenizer_path(self, name: str, version: int, file: str) -> Path:
        version_dir = self._engine.repository.model_path(name, version).parent
        for candidate in (version_dir / file, version_dir.parent / file):
            if candidate.is_file():
                return candidate
        raise InvalidInput(f"model '{name}' declares the tokenizer '{file}', which is not in {version_dir}")
