"""``tierserve example-models DIR``: the example model repository, built deterministically offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tierserve.backends.quantize import SAMPLES_FILE
from tierserve.examples.basic import IDENTITY_DTYPES, build_identity, build_simple, build_simple_string
from tierserve.examples.crossencoder import build_cross_encoder
from tierserve.examples.minilm import build_minilm_onnx, load_tokenizer, minilm_assets_dir, tokenize
from tierserve.repository.repository import CONFIG_FILE, MODEL_FILE

MINILM = "all-minilm-l6-v2"
CROSS_ENCODER = "tiny-cross-encoder"

_CONFIGS = {
    "simple": "max_batch_size: 8\n",
    "simple_string": "max_batch_size: 8\n",
    MINILM: (
        "# 32 rows is where one core reaches its best items/s on this model.\n"
        "max_batch_size: 32\n"
        "# Sentences of 32 tokens seed the service-time estimate (it then learns from real traffic).\n"
        "warmup_shape: {input_ids: [32], attention_mask: [32]}\n"
        "# Text in (/v1/embeddings, collections): tokenized on the server, truncated like\n"
        "# sentence-transformers does (max_seq_length 256).\n"
        "embedding: {tokenizer: tokenizer.json, max_length: 256, output: sentence_embedding}\n"
    ),
    CROSS_ENCODER: (
        "# Scores (query, document) pairs: re-ranking in collection search (tierserve.retrieval).\n"
        "max_batch_size: 64\n"
        "warmup_shape: {input_ids: [32], attention_mask: [32], token_type_ids: [32]}\n"
        "reranker: {tokenizer: tokenizer.json, max_length: 256, output: score}\n"
    ),
}


SAMPLE_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Gold requests are served first and held to their latency target.",
    "A cheaper pool is chosen whenever it still meets the deadline.",
    "Quantized weights make inference faster at a small cost in accuracy.",
    "Where is the nearest train station?",
    "The model returns one 384-dimensional embedding per sentence.",
    "Heute regnet es in Berlin, morgen scheint die Sonne.",
    "Batches grow only while every deadline in them can still be met.",
]


def write_example_repository(dest: Path, *, include_minilm: bool = True) -> list[str]:
    """Write every example model under ``dest``; return their names."""
    dest.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    build_simple(dest / "simple" / "1" / MODEL_FILE)
    names.append("simple")
    build_simple_string(dest / "simple_string" / "1" / MODEL_FILE)
    names.append("simple_string")
    for suffix, elem_type in IDENTITY_DTYPES.items():
        name = f"identity_{suffix}"
        build_identity(dest / name / "1" / MODEL_FILE, elem_type)
        names.append(name)
    if include_minilm:
        target = dest / MINILM / "1" / MODEL_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        build_minilm_onnx(target)
        # The tokenizer travels with the model so that text endpoints can find it.
        (target.parent / "tokenizer.json").write_bytes((minilm_assets_dir() / "tokenizer.json").read_bytes())
        # Real sentences judge an int8 variant far better than random token ids.
        input_ids, attention_mask = tokenize(SAMPLE_SENTENCES)
        with (target.parent / SAMPLES_FILE).open("wb") as f:
            np.savez(f, input_ids=input_ids, attention_mask=attention_mask)
        names.append(MINILM)
        tokenizer = minilm_assets_dir() / "tokenizer.json"
        cross = dest / CROSS_ENCODER / "1"
        build_cross_encoder(cross / MODEL_FILE, load_tokenizer().get_vocab_size())
        (cross / "tokenizer.json").write_bytes(tokenizer.read_bytes())
        names.append(CROSS_ENCODER)
    for name, text in _CONFIGS.items():
        if name in names:
            (dest / name / CONFIG_FILE).write_text(text)
    return names
